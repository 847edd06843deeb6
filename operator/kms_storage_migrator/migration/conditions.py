"""The Ready, Progressing, Degraded and Suspended conditions of a migration, from its progress. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from kms_storage_migrator.migration.guidance import what_to_do
from kms_storage_migrator.migration.status_parts import (
    ACTIVE_PHASES,
    Failure,
    Phase,
    Verification,
    VerificationResult,
    clip,
)
from kms_storage_migrator.migration.suspension import RESUMED, SUSPENDED

__all__ = ["KMS_AVAILABLE", "derive_conditions", "set_condition"]

# False while the apiserver cannot encrypt (set by outage.py); Degraded follows it while active.
KMS_AVAILABLE = "KMSAvailable"


class ConditionSource(Protocol):
    """What the conditions are derived from: ``progress.MigrationProgress`` (which derives them
    as it writes its status document, so this module cannot import it)."""

    @property
    def phase(self) -> Phase: ...
    @property
    def conditions(self) -> list[dict[str, Any]]: ...
    @property
    def suspended(self) -> bool: ...
    @property
    def message(self) -> str: ...
    @property
    def verification(self) -> Verification | None: ...
    @property
    def failures(self) -> Sequence[Failure]: ...
    @property
    def failures_total(self) -> int: ...


def set_condition(
    conditions: list[dict[str, Any]], kind: str, *, status: bool, reason: str, message: str, now: str
) -> list[dict[str, Any]]:
    """Return conditions with ``kind`` set; lastTransitionTime moves only when status flips."""
    value = "True" if status else "False"
    previous = next((c for c in conditions if c.get("type") == kind), None)
    changed = previous is None or previous.get("status") != value
    transition = now if changed or previous is None else str(previous.get("lastTransitionTime") or now)
    entry = {
        "type": kind,
        "status": value,
        "reason": reason,
        "message": clip(message),
        "lastTransitionTime": transition,
    }
    return [c for c in conditions if c.get("type") != kind] + [entry]


def derive_conditions(progress: ConditionSource, now: str) -> list[dict[str, Any]]:
    """Ready, Progressing and Degraded from the phase, failures and verification; Suspended once used."""
    phase = progress.phase
    conditions = progress.conditions
    ready = phase is Phase.SUCCEEDED
    shown = SUSPENDED if progress.suspended else phase.value
    conditions = set_condition(
        conditions,
        "Ready",
        status=ready,
        reason=shown,
        message=progress.message or f"migration is {shown}",
        now=now,
    )
    progressing = phase in ACTIVE_PHASES and not progress.suspended
    conditions = set_condition(
        conditions,
        "Progressing",
        status=progressing,
        reason=shown if progressing or progress.suspended else _idle_reason(phase),
        message=progress.message or shown,
        now=now,
    )
    degraded, reason, message = _degradation(progress)
    conditions = set_condition(
        conditions, "Degraded", status=degraded, reason=reason, message=message, now=now
    )
    return _suspension(conditions, progress, now)


def _idle_reason(phase: Phase) -> str:
    return "Waiting" if phase is Phase.PENDING else "Finished"


def _suspension(
    conditions: list[dict[str, Any]], progress: ConditionSource, now: str
) -> list[dict[str, Any]]:
    """Suspended=True while suspended; once resumed it stays, False, so the history shows."""
    if progress.suspended:
        return set_condition(
            conditions, SUSPENDED, status=True, reason=SUSPENDED, message=progress.message, now=now
        )
    if any(c.get("type") == SUSPENDED for c in conditions):
        message = "resumed: spec.suspend is false"
        return set_condition(conditions, SUSPENDED, status=False, reason=RESUMED, message=message, now=now)
    return conditions


def _degradation(progress: ConditionSource) -> tuple[bool, str, str]:
    verification = progress.verification
    if verification is not None and verification.result is VerificationResult.STALE_FOUND:
        examples = ", ".join(verification.examples[:3])
        return True, "StaleObjectsRemain", f"{verification.stale} object(s) still stale, e.g. {examples}"
    if progress.phase is Phase.FAILED:
        return True, "MigrationFailed", progress.message or "the migration failed"
    kms = next((c for c in progress.conditions if c.get("type") == KMS_AVAILABLE), None)
    if kms is not None and kms.get("status") == "False" and progress.phase in ACTIVE_PHASES:
        return True, str(kms.get("reason") or "KMSUnavailable"), str(kms.get("message") or "")
    if progress.failures_total:
        first = progress.failures[0] if progress.failures else None
        example = f", e.g. {first.resource} {_object_name(first)}: {first.reason}" if first else ""
        advice = f"; what to do: {what_to_do(first.reason, first.message, first.resource)}" if first else ""
        return (
            True,
            "ObjectsNotRewritten",
            f"{progress.failures_total} object(s) could not be rewritten{example}{advice}",
        )
    return False, "AsExpected", "no failures"


def _object_name(failure: Failure) -> str:
    return f"{failure.namespace}/{failure.name}" if failure.namespace else failure.name
