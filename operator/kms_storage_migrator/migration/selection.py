"""Which resource types a StorageMigration selects: ``group/resource`` patterns with ``*``.

The core group is written ``core`` (``core/secrets``); ``*`` matches any run of characters,
including none, so ``*/*`` is everything and ``*.k8s.io/*`` every group under k8s.io.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

CORE = "core"
# The same shape the CRD's CEL rule enforces: DNS-ish names in which any part may be '*'.
NAME_SYNTAX = r"(\*|[a-z0-9*]([-a-z0-9.*]*[a-z0-9*])?)"
PATTERN_SYNTAX = re.compile(f"^{NAME_SYNTAX}/{NAME_SYNTAX}$")
EVERYTHING = ("*/*",)
# The CRD's bounds (maxItems, maxLength), mirrored so the engine is safe without admission.
MAX_PATTERNS = 100
MAX_PATTERN_LENGTH = 253


class SelectionError(ValueError):
    """A malformed pattern; the message names the field and the pattern."""


def resource_name(group: str, resource: str) -> str:
    """The ``group/resource`` name used in patterns, status and events (core group as ``core``)."""
    return f"{group or CORE}/{resource}"


@dataclass(frozen=True)
class ResourcePattern:
    group: str
    resource: str

    @classmethod
    def parse(cls, text: object, field: str) -> ResourcePattern:
        if not isinstance(text, str):
            raise SelectionError(f"{field}: must be a string like 'apps/*', got {_shown(text)}")
        if len(text) > MAX_PATTERN_LENGTH:
            raise SelectionError(f"{field}: at most {MAX_PATTERN_LENGTH} characters, got {len(text)}")
        if not PATTERN_SYNTAX.match(text):
            raise SelectionError(
                f"{field}: {text!r} is not a group/resource pattern "
                "(lower-case names, '*' as wildcard, core group written 'core', e.g. 'apps/*')"
            )
        group, resource = text.split("/", 1)
        return cls(group, resource)

    def matches(self, group: str, resource: str) -> bool:
        return _glob(self.group, group or CORE) and _glob(self.resource, resource)

    def __str__(self) -> str:
        return f"{self.group}/{self.resource}"


def _glob(pattern: str, value: str) -> bool:
    """``*`` matches any run of characters. Linear in both lengths: a regex of ``.*`` runs
    backtracks exponentially on a near miss, and a spec may hold 126 stars in one pattern."""
    parts = pattern.split("*")
    if len(parts) == 1:
        return pattern == value
    first, *middle, last = parts
    if len(value) < len(first) + len(last) or not value.startswith(first) or not value.endswith(last):
        return False
    position, end = len(first), len(value) - len(last)
    for part in middle:
        # Leftmost match of each literal part: it leaves the most room for the parts after it.
        found = value.find(part, position, end)
        if found < 0:
            return False
        position = found + len(part)
    return True


def _shown(value: object) -> str:
    """A short picture of a wrong value for an error message (specs hold no secrets)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class Selection:
    include: tuple[ResourcePattern, ...]
    exclude: tuple[ResourcePattern, ...]

    def selects(self, group: str, resource: str) -> bool:
        included = any(p.matches(group, resource) for p in self.include)
        return included and not any(p.matches(group, resource) for p in self.exclude)

    def describe(self) -> str:
        text = "include " + ", ".join(str(p) for p in self.include)
        if self.exclude:
            text += "; exclude " + ", ".join(str(p) for p in self.exclude)
        return text


def parse_selection(include: object, exclude: object) -> Selection:
    """Build a selection from the spec; an empty or missing include list means everything."""
    include_patterns = _parse_all(
        _patterns(include, "spec.resources.include") or EVERYTHING, "spec.resources.include"
    )
    exclude_patterns = _parse_all(_patterns(exclude, "spec.resources.exclude"), "spec.resources.exclude")
    return Selection(include_patterns, exclude_patterns)


def _patterns(texts: object, field: str) -> list[object]:
    """The list a spec field holds (missing is empty); anything else is refused by name."""
    if texts is None:
        return []
    if not isinstance(texts, list | tuple):
        raise SelectionError(f"{field}: must be a list of patterns like ['apps/*'], got {_shown(texts)}")
    if len(texts) > MAX_PATTERNS:
        raise SelectionError(f"{field}: at most {MAX_PATTERNS} patterns, got {len(texts)}")
    return list(texts)


def _parse_all(texts: Iterable[object], field: str) -> tuple[ResourcePattern, ...]:
    return tuple(ResourcePattern.parse(text, f"{field}[{index}]") for index, text in enumerate(texts))
