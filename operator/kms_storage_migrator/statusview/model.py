"""A StorageMigration object as the status view needs it (pure, no I/O).

The status is read, never trusted: the engine is being reworked and may add, rename or drop
fields, and an older or newer operator may have written it. Every field is optional; a value
of the wrong type counts as missing; fields this view does not know are kept as ``extra`` so
they can still be shown.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "COUNT_FIELDS",
    "Failure",
    "MigrationView",
    "ResourceRow",
    "exit_code",
    "migration_names",
    "newest",
    "read_migration",
]

FAILED = "Failed"
SUCCEEDED = "Succeeded"
# Final outcomes of one object, in the order the table shows them (retries are attempts).
COUNT_FIELDS = ("rewritten", "unchanged", "conflicts", "gone", "failed")
EXIT_FAILED = 1

# Top-level status fields read into named attributes; anything else is ``extra``.
_KNOWN_STATUS_FIELDS = frozenset(
    {
        "phase",
        "message",
        "progress",
        "mode",
        "observedGeneration",
        "startTime",
        "completionTime",
        "keyId",
        "totals",
        "resources",
        "dropped",
        "failures",
        "failuresTotal",
        "verification",
        "conditions",
        "suspendedPhase",
        "rate",
        "eta",
        "preflight",
    }
)


@dataclass(frozen=True)
class ResourceRow:
    name: str
    phase: str | None
    total: int | None
    counts: dict[str, int]
    retries: int | None
    write_format: str | None
    message: str | None

    @property
    def done(self) -> int:
        return sum(self.counts.get(name, 0) for name in COUNT_FIELDS)


@dataclass(frozen=True)
class Failure:
    resource: str
    object_name: str  # namespace/name, or name for cluster-scoped objects
    reason: str
    message: str


@dataclass(frozen=True)
class Verification:
    result: str | None
    scanned: int | None
    stale: int | None
    examples: list[str]
    message: str | None
    keys_in_use: list[tuple[str, int]] = field(default_factory=list)  # (KMS key id, objects)


@dataclass(frozen=True)
class PreflightFinding:
    check: str
    verdict: str  # ok, warn or fail
    message: str


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str | None
    message: str | None


@dataclass(frozen=True)
class MigrationView:
    name: str
    created: str | None
    spec_mode: str | None
    phase: str | None
    message: str | None
    progress: str | None
    mode: str | None
    key_id: str | None
    start_time: str | None
    completion_time: str | None
    totals: dict[str, int]
    resources: list[ResourceRow]
    dropped: list[tuple[str, str]]
    failures: list[Failure]
    failures_total: int | None
    verification: Verification | None
    conditions: list[Condition]
    suspended_phase: str | None = None  # while Suspended: the phase it resumes in
    rate: str | None = None  # objects/s over the last minute, as shown ("48.7/s")
    eta: str | None = None
    preflight: list[PreflightFinding] = field(default_factory=list)  # what the Preflight phase found
    # Status fields this view has no place for: shown as they are.
    extra: dict[str, Any] = field(default_factory=dict)


def read_migration(document: Mapping[str, Any]) -> MigrationView:
    """A StorageMigration object (as the API returns it) as a :class:`MigrationView`."""
    metadata = _mapping(document.get("metadata"))
    spec = _mapping(document.get("spec"))
    status = _mapping(document.get("status"))
    verification = status.get("verification")
    return MigrationView(
        name=_text(metadata.get("name")) or "?",
        created=_text(metadata.get("creationTimestamp")),
        spec_mode=_text(spec.get("mode")),
        phase=_text(status.get("phase")),
        message=_text(status.get("message")),
        progress=_text(status.get("progress")),
        mode=_text(status.get("mode")),
        key_id=_text(status.get("keyId")),
        start_time=_text(status.get("startTime")),
        completion_time=_text(status.get("completionTime")),
        totals=_counts(_mapping(status.get("totals"))),
        resources=[_resource(item) for item in _mappings(status.get("resources"))],
        dropped=[
            (_text(item.get("name")) or "?", _text(item.get("reason")) or "")
            for item in _mappings(status.get("dropped"))
        ],
        failures=[_failure(item) for item in _mappings(status.get("failures"))],
        failures_total=_count(status.get("failuresTotal")),
        verification=_verification(verification) if isinstance(verification, Mapping) else None,
        conditions=[
            Condition(
                type=_text(item.get("type")) or "?",
                status=_text(item.get("status")) or "Unknown",
                reason=_text(item.get("reason")),
                message=_text(item.get("message")),
            )
            for item in _mappings(status.get("conditions"))
        ],
        suspended_phase=_text(status.get("suspendedPhase")),
        rate=_rate(status.get("rate")),
        eta=_text(status.get("eta")),
        preflight=[
            PreflightFinding(
                _text(item.get("check")) or "?",
                _text(item.get("verdict")) or "?",
                _text(item.get("message")) or "",
            )
            for item in _mappings(status.get("preflight"))
        ],
        extra={
            key: value
            for key, value in status.items()
            if key not in _KNOWN_STATUS_FIELDS and value not in (None, [], {})
        },
    )


def exit_code(view: MigrationView) -> int:
    """What ``status`` exits with: 1 for a Failed migration, 0 otherwise (done or still going)."""
    return EXIT_FAILED if view.phase == FAILED else 0


def newest(items: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The most recently created migration (ties: the greater name, so the choice is stable)."""

    def created(item: Mapping[str, Any]) -> tuple[str, str]:
        metadata = _mapping(item.get("metadata"))
        # RFC 3339 in UTC with whole seconds, as the apiserver writes it: sorts as text.
        return (_text(metadata.get("creationTimestamp")) or "", _text(metadata.get("name")) or "")

    return max(items, key=created, default=None)


def migration_names(items: Iterable[Mapping[str, Any]]) -> list[str]:
    return sorted(filter(None, (_text(_mapping(item.get("metadata")).get("name")) for item in items)))


def _resource(item: Mapping[str, Any]) -> ResourceRow:
    name = _text(item.get("name"))
    if name is None:
        group, resource = _text(item.get("group")), _text(item.get("resource"))
        name = f"{group or 'core'}/{resource}" if resource else "?"
    return ResourceRow(
        name=name,
        phase=_text(item.get("phase")),
        total=_count(item.get("objectsTotal")),
        counts=_counts(item),
        retries=_count(item.get("retries")),
        write_format=_text(item.get("writeFormat")),
        message=_text(item.get("message")),
    )


def _failure(item: Mapping[str, Any]) -> Failure:
    name = _text(item.get("name")) or "?"
    namespace = _text(item.get("namespace"))
    return Failure(
        resource=_text(item.get("resource")) or "?",
        object_name=f"{namespace}/{name}" if namespace else name,
        reason=_text(item.get("reason")) or "",
        message=_text(item.get("message")) or "",
    )


def _verification(item: Mapping[str, Any]) -> Verification:
    examples = item.get("examples")
    return Verification(
        result=_text(item.get("result")),
        scanned=_count(item.get("scanned")),
        stale=_count(item.get("stale")),
        examples=[text for text in map(_text, examples) if text] if isinstance(examples, list) else [],
        message=_text(item.get("message")),
        keys_in_use=[
            (_text(key.get("keyId")) or "?", _count(key.get("objects")) or 0)
            for key in _mappings(item.get("keysInUse"))
        ],
    )


def _rate(value: Any) -> str | None:
    """The engine writes a number of objects/s; text (another writer's unit) is shown as it is."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:g}/s" if value >= 0 else None
    return _text(value)


def _counts(document: Mapping[str, Any]) -> dict[str, int]:
    """The count fields present with a usable value (absent ones stay absent, not zero)."""
    names = (*COUNT_FIELDS, "retries", "objectsTotal", "remaining", "percent")
    counts = {name: _count(document.get(name)) for name in names}
    return {name: value for name, value in counts.items() if value is not None}


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _mappings(value: Any) -> list[Mapping[str, Any]]:
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, bool) or value is None or isinstance(value, Mapping | list):
        return None
    return str(value)


def _count(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return max(0, value)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None
