"""Which resource types a StorageMigration selects: ``group/resource`` patterns with ``*``.

The core group is written ``core`` (``core/secrets``); ``*`` matches any run of characters,
including none, so ``*/*`` is everything and ``*.k8s.io/*`` every group under k8s.io.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

CORE = "core"
# The same shape the CRD's CEL rule enforces: DNS-ish names in which any part may be '*'.
NAME_SYNTAX = r"(\*|[a-z0-9*]([-a-z0-9.*]*[a-z0-9*])?)"
PATTERN_SYNTAX = re.compile(f"^{NAME_SYNTAX}/{NAME_SYNTAX}$")
EVERYTHING = ("*/*",)


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
    def parse(cls, text: str, field: str) -> ResourcePattern:
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
    regex = "^" + ".*".join(re.escape(part) for part in pattern.split("*")) + "$"
    return re.match(regex, value) is not None


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


def parse_selection(include: Sequence[str] | None, exclude: Sequence[str] | None) -> Selection:
    """Build a selection from the spec; an empty or missing include list means everything."""
    include_patterns = _parse_all(include or EVERYTHING, "spec.resources.include")
    exclude_patterns = _parse_all(exclude or (), "spec.resources.exclude")
    return Selection(include_patterns, exclude_patterns)


def _parse_all(texts: Iterable[str], field: str) -> tuple[ResourcePattern, ...]:
    return tuple(ResourcePattern.parse(text, f"{field}[{index}]") for index, text in enumerate(texts))
