"""The engine's pure decisions, as tables: the final verdict, the pinned mode, what an error means."""

from __future__ import annotations

from typing import Any

import pytest

from kms_storage_migrator.errors import UserError
from kms_storage_migrator.kube import ApiError, TransportError
from kms_storage_migrator.migration.boundary import (
    DiscoveryError,
    InfrastructureUnavailable,
    MigrationFailed,
    MigrationStopped,
    at_phase_level,
)
from kms_storage_migrator.migration.plan import Mode, PlanError, pin_mode
from kms_storage_migrator.migration.progress import (
    Counts,
    Failure,
    MigrationProgress,
    Phase,
    ResourcePhase,
    ResourceProgress,
)
from kms_storage_migrator.migration.ratelimit import RetryableFailure
from kms_storage_migrator.migration.staleness import StaleTally
from kms_storage_migrator.migration.verdict import decide
from kms_storage_migrator.migration.verify import VerificationReport
from kms_storage_migrator.storage.etcd import EtcdUnavailable


def _progress(counts: Counts, *, failed_resource: bool = False, failures: int = 0) -> MigrationProgress:
    entry = ResourceProgress("", "v1", "secrets", ResourcePhase.DONE, estimate=counts.done, counts=counts)
    progress = MigrationProgress(phase=Phase.VERIFYING, resources=[entry])
    if failed_resource:
        progress.resources.append(ResourceProgress("apps", "v1", "deployments", ResourcePhase.FAILED))
    for index in range(failures):
        progress.record_failure(Failure("core/secrets", "ns", f"s{index}", "Forbidden", "HTTP 403"))
    return progress


def _report(*, scanned: int = 10, stale: int = 0, **fields: Any) -> VerificationReport:
    return VerificationReport(tally=StaleTally(scanned, stale), **fields)


DONE = Counts(rewritten=7, unchanged=3)


@pytest.mark.parametrize(
    ("progress", "report", "mode", "phase", "reason", "message"),
    [
        (_progress(DONE), _report(), Mode.TARGETED, Phase.SUCCEEDED, "Verified", "verified: all 10 objects"),
        (
            _progress(DONE, failures=2),
            _report(),
            Mode.FULL,
            Phase.SUCCEEDED,
            "Verified",
            "verified: all 10 objects in the current format; 2 object(s) need attention (Forbidden: see",
        ),
        (
            _progress(DONE),
            _report(stale=2, examples=["core/secrets ns/a"]),
            Mode.FULL,
            Phase.FAILED,
            "StaleObjectsRemain",
            "2 object(s) still stale after rewriting",
        ),
        (
            _progress(DONE),
            _report(undecodable=1, undecodable_examples=["core/secrets ns/x"]),
            Mode.TARGETED,
            Phase.FAILED,
            "Unverified",
            "1 value(s) in no known format, not rewritten, e.g. core/secrets ns/x",
        ),
        (
            _progress(DONE),
            _report(unreferenced=["core/secrets"]),
            Mode.TARGETED,
            Phase.FAILED,
            "Unverified",
            "not checked (write format unknown): core/secrets",
        ),
        (
            _progress(DONE, failed_resource=True),
            _report(failed=["apps/deployments"]),
            Mode.FULL,
            Phase.FAILED,
            "Unverified",
            "not migrated (resource failed): apps/deployments",
        ),
        (
            _progress(Counts()),
            _report(stale=4),
            Mode.VERIFY_ONLY,
            Phase.SUCCEEDED,
            "VerifyOnly",
            "verification only: 4 of 10 objects stale",
        ),
        (
            _progress(Counts(unchanged=722)),
            None,
            Mode.FULL,
            Phase.SUCCEEDED,
            "Unverified",
            "0 of 722 objects rewritten, 722 already current (unverified: no etcd access)",
        ),
        (
            _progress(Counts(rewritten=5, conflicts=1, gone=2)),
            None,
            Mode.FULL,
            Phase.SUCCEEDED,
            "Unverified",
            "5 of 8 objects rewritten, 0 already current, 1 changed meanwhile",
        ),
        (
            _progress(Counts(rewritten=5, failed=2), failures=2),
            None,
            Mode.FULL,
            Phase.FAILED,
            "ObjectsNotRewritten",
            "2 object(s) could not be rewritten",
        ),
        (
            _progress(DONE, failed_resource=True),
            None,
            Mode.FULL,
            Phase.FAILED,
            "ObjectsNotRewritten",
            "resources not migrated: apps/deployments",
        ),
    ],
)
def test_the_verdict(
    progress: MigrationProgress,
    report: VerificationReport | None,
    mode: Mode,
    phase: Phase,
    reason: str,
    message: str,
) -> None:
    verdict = decide(progress, report, mode)
    assert (verdict.phase, verdict.reason) == (phase, reason)
    assert verdict.message.startswith(message), verdict.message
    if phase is Phase.FAILED:
        assert "0 object(s)" not in verdict.message  # only reasons that hold


@pytest.mark.parametrize(
    ("requested", "etcd", "pinned", "mode", "converted_from"),
    [
        (Mode.AUTO, True, None, Mode.TARGETED, None),
        (Mode.AUTO, False, None, Mode.FULL, None),
        (Mode.AUTO, True, "Full", Mode.FULL, None),  # etcd access added mid-run: still Full
        (Mode.AUTO, False, "Full", Mode.FULL, None),
        (Mode.AUTO, True, "Targeted", Mode.TARGETED, None),
        (Mode.AUTO, False, "Targeted", Mode.FULL, Mode.TARGETED),  # etcd access removed: converted
        (Mode.FULL, True, "Full", Mode.FULL, None),
        (Mode.VERIFY_ONLY, True, "VerifyOnly", Mode.VERIFY_ONLY, None),
    ],
)
def test_the_pinned_mode(
    requested: Mode, etcd: bool, pinned: str | None, mode: Mode, converted_from: Mode | None
) -> None:
    decision = pin_mode(requested, etcd, pinned)
    assert (decision.mode, decision.converted_from) == (mode, converted_from)


@pytest.mark.parametrize(
    ("requested", "pinned", "message"),
    [
        (Mode.TARGETED, "Targeted", "spec.mode: Targeted needs read access to etcd"),
        (Mode.VERIFY_ONLY, "VerifyOnly", "spec.mode: VerifyOnly needs read access to etcd"),
        (Mode.AUTO, "Sideways", "status.mode: 'Sideways' is not a mode this operator resumes"),
    ],
)
def test_a_pinned_mode_that_cannot_go_on_is_refused_naming_it(
    requested: Mode, pinned: str, message: str
) -> None:
    with pytest.raises(PlanError, match=message):
        pin_mode(requested, False, pinned)


@pytest.mark.parametrize(
    ("error", "meaning"),
    [
        (EtcdUnavailable("etcd at x: connection refused"), InfrastructureUnavailable),
        (RetryableFailure("ServiceUnavailable", "", None), InfrastructureUnavailable),
        (TransportError("GET /api: connection reset"), InfrastructureUnavailable),
        (ApiError(503, "ServiceUnavailable", ""), InfrastructureUnavailable),
        (ApiError(403, "Forbidden", "no"), MigrationFailed),
        (UserError("etcd at x: TLS handshake failed"), MigrationFailed),
        (PlanError("spec.qps: must be ..."), MigrationFailed),
        (DiscoveryError("discovery of x failed"), MigrationFailed),
        (MigrationStopped("deleted"), MigrationStopped),
    ],
)
def test_what_an_error_escaping_a_phase_means(error: Exception, meaning: type[Exception]) -> None:
    assert isinstance(at_phase_level(error), meaning)


def test_an_error_that_is_not_ours_is_left_alone() -> None:
    assert at_phase_level(KeyError("bug")) is None
