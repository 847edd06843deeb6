"""The status view knows the newer phases and conditions, rate/ETA and what to do about failures."""

from __future__ import annotations

from typing import Any

from kms_storage_migrator.migration import progress
from kms_storage_migrator.migration.key_gate import KEY_CONVERGED, PREVIOUS_KEYS_IN_USE
from kms_storage_migrator.migration.suspension import suspended_message
from kms_storage_migrator.statusview.model import read_migration
from kms_storage_migrator.statusview.render import render_text, summary_line

NOW = "2026-12-01T13:00:00Z"


def _view_text(state: progress.MigrationProgress) -> tuple[str, str]:
    document = {"metadata": {"name": "night"}, "spec": {}, "status": progress.to_status(state, NOW)}
    view = read_migration(document)
    return render_text(view, width=160), summary_line(view)


def _migrating(**fields: Any) -> progress.MigrationProgress:
    entry = progress.ResourceProgress("", "v1", "secrets", progress.ResourcePhase.MIGRATING, estimate=100)
    entry.counts.rewritten = 40
    return progress.MigrationProgress(phase=progress.Phase.MIGRATING, resources=[entry], **fields)


def test_a_suspended_migration_shows_where_it_resumes_and_how() -> None:
    state = _migrating(suspended=True, message=suspended_message("night", "Migrating", 40, 100))
    text, line = _view_text(state)
    assert "Suspended" in line
    assert "resumes in  phase Migrating" in text
    assert "kubectl patch storagemigration night" in text
    assert "Suspended=True" in text
    assert "paused by spec.suspend" in text


def test_rate_and_eta_from_the_engine_are_shown() -> None:
    text, line = _view_text(_migrating(rate=48.7, eta="3m10s"))
    assert "48.7/s" in line
    assert "eta 3m10s" in line
    assert "48.7/s (objects, over the last minute)" in text


def test_waiting_for_key_and_the_key_conditions_are_explained() -> None:
    state = progress.MigrationProgress(phase=progress.Phase.WAITING_FOR_KEY, message="waiting")
    state.conditions = progress.set_condition(
        [], KEY_CONVERGED, status=False, reason="ApiserversLag", message="apiserver a: old key", now=NOW
    )
    state.conditions = progress.set_condition(
        state.conditions,
        PREVIOUS_KEYS_IN_USE,
        status=True,
        reason="OlderKeysHoldObjects",
        message="",
        now=NOW,
    )
    state.verification = progress.Verification(
        progress.VerificationResult.VERIFIED, scanned=10, stale=0, keys_in_use={"kek-1": 3, "kek-2": 7}
    )
    text, _ = _view_text(state)
    assert "WaitingForKey" in text
    assert "not every apiserver writes with the KMS's current key yet: apiserver a: old key" in text
    assert "objects are still stored under an older KMS key" in text
    assert "KMS keys holding selected objects: kek-1 (3 objects), kek-2 (7 objects)" in text


def test_failures_come_with_what_to_do_once_per_reason() -> None:
    state = _migrating()
    for name in ("a", "b"):
        state.record_failure(progress.Failure("core/secrets", "ns", name, "Forbidden", "forbidden"))
    state.record_failure(
        progress.Failure(
            "core/secrets", "ns", "c", "BadRequest", "denied by admission webhook deny.example.com"
        )
    )
    text, _ = _view_text(state)
    steps = text.split("What to do:", 1)[1].split("Conditions", 1)[0]
    assert steps.count("grant 'patch'") == 1  # two Forbidden failures, one step
    assert "admission webhook deny.example.com refuses the no-op write" in steps
    # The Degraded condition carries the first failure's step too (kubectl describe shows it).
    degraded = next(c for c in progress.to_status(state, NOW)["conditions"] if c["type"] == "Degraded")
    assert "what to do: the operator may not patch core/secrets" in degraded["message"]
