"""How a migration ends: phase, reason and message from its progress and the read-back. Pure.

``report`` is None when the operator has no etcd access (nothing could be read back). A run is
Succeeded only when everything selected was checked and nothing is stale, or, without etcd,
when nothing failed; the message then says what was done, never more.
"""

from __future__ import annotations

from dataclasses import dataclass

from kms_storage_migrator.migration.plan import Mode
from kms_storage_migrator.migration.progress import MigrationProgress, Phase, ResourcePhase
from kms_storage_migrator.migration.verify import VerificationReport

UNVERIFIED_NOTE = "unverified: no etcd access"


@dataclass(frozen=True)
class Verdict:
    phase: Phase
    reason: str  # one CamelCase word, for the final event
    message: str


def decide(progress: MigrationProgress, report: VerificationReport | None, mode: Mode) -> Verdict:
    if report is None:
        return _without_read_back(progress)
    verification = report.verification()
    if mode is Mode.VERIFY_ONLY:
        message = f"verification only: {verification.stale} of {verification.scanned} objects stale"
        return Verdict(Phase.SUCCEEDED, "VerifyOnly", "; ".join([message, *report.needs_attention]))
    if not report.tally.stale and not report.needs_attention:
        message = f"verified: all {verification.scanned} objects in the current format"
        # Written and re-encrypted, yet recorded as failures (e.g. changed by a mutating webhook
        # under spec.mutatingWebhooks Allow): the migration's job is done, but a person must look.
        return Verdict(Phase.SUCCEEDED, "Verified", "; ".join([message, *_attention(progress)]))
    # Only the reasons that hold: "0 objects stale" is no reason for a failure.
    problems = list(report.needs_attention)
    if report.tally.stale:
        problems.insert(0, f"{report.tally.stale} object(s) still stale after rewriting")
        return Verdict(Phase.FAILED, "StaleObjectsRemain", "; ".join(problems))
    return Verdict(Phase.FAILED, "Unverified", "; ".join(problems))


def _without_read_back(progress: MigrationProgress) -> Verdict:
    failed = failed_resources(progress)
    if progress.failures_total or failed:
        return Verdict(Phase.FAILED, "ObjectsNotRewritten", failure_summary(progress))
    counts = progress.totals().counts
    done = [f"{counts.rewritten} of {counts.done} objects rewritten", f"{counts.unchanged} already current"]
    if counts.conflicts:
        done.append(f"{counts.conflicts} changed meanwhile (re-encrypted by that write)")
    if counts.gone:
        done.append(f"{counts.gone} deleted meanwhile")
    return Verdict(Phase.SUCCEEDED, "Unverified", f"{', '.join(done)} ({UNVERIFIED_NOTE})")


def _attention(progress: MigrationProgress) -> list[str]:
    if not progress.failures_total:
        return []
    reasons = sorted({failure.reason for failure in progress.failures})
    return [f"{progress.failures_total} object(s) need attention ({', '.join(reasons)}: see status.failures)"]


def failed_resources(progress: MigrationProgress) -> list[str]:
    return [r.name for r in progress.resources if r.phase is ResourcePhase.FAILED]


def failure_summary(progress: MigrationProgress) -> str:
    parts = []
    if progress.failures_total:
        parts.append(f"{progress.failures_total} object(s) could not be rewritten")
    failed = failed_resources(progress)
    if failed:
        parts.append("resources not migrated: " + ", ".join(failed[:5]))
    return "; ".join(parts)
