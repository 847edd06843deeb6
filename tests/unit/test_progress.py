"""The status document: counters, checkpoints, conditions, and the resume round trip."""

from __future__ import annotations

from kms_storage_migrator.migration.outcome import Outcome
from kms_storage_migrator.migration.progress import (
    MAX_FAILURES,
    Counts,
    Failure,
    MigrationProgress,
    Phase,
    ResourcePhase,
    ResourceProgress,
    Verification,
    VerificationResult,
    from_status,
    set_condition,
    to_status,
)
from kms_storage_migrator.migration.resource_choice import DroppedResource

NOW = "2026-11-30T02:00:00Z"
LATER = "2026-11-30T02:05:00Z"


def _condition(status: dict, kind: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == kind)


def test_counts_record_each_outcome_in_its_own_counter() -> None:
    counts = Counts()
    for outcome in Outcome:
        counts.record(outcome)
    assert counts == Counts(rewritten=1, unchanged=1, conflicts=1, gone=1, failed=2)
    assert counts.done == 6


def test_retries_are_attempts_not_objects() -> None:
    assert Counts(rewritten=2, retries=7).done == 2


def test_commit_and_rewind_drop_an_uncommitted_page() -> None:
    entry = ResourceProgress("", "v1", "secrets")
    entry.counts.record(Outcome.REWRITTEN)
    entry.commit(continue_token="page-2")
    entry.counts.record(Outcome.REWRITTEN)  # page 2 half done, then the operator dies
    entry.rewind()
    assert entry.counts.rewritten == 1
    assert entry.checkpoint.continue_token == "page-2"


def test_commit_copies_counts_so_later_records_do_not_leak_into_the_checkpoint() -> None:
    entry = ResourceProgress("", "v1", "secrets")
    entry.commit(continue_token="t")
    entry.counts.record(Outcome.GONE)
    assert entry.checkpoint.counts.gone == 0


def _sample() -> MigrationProgress:
    secrets = ResourceProgress(
        "", "v1", "secrets", ResourcePhase.DONE, estimate=10, write_format="kms-v2:p:k1"
    )
    secrets.counts = Counts(rewritten=8, unchanged=1, conflicts=1)
    secrets.commit()
    deployments = ResourceProgress("apps", "v1", "deployments", ResourcePhase.MIGRATING, estimate=30)
    deployments.counts = Counts(rewritten=5, failed=1, retries=3)
    deployments.commit(continue_token="abc")
    deployments.counts.record(Outcome.REWRITTEN)
    progress = MigrationProgress(
        phase=Phase.MIGRATING,
        mode="Full",
        message="rewriting",
        observed_generation=1,
        start_time=NOW,
        resources=[secrets, deployments],
        dropped=[DroppedResource("events.k8s.io/events", "second name")],
        key_id="k1",
    )
    progress.record_failure(Failure("apps/deployments", "team-a", "web", "Forbidden", "denied by webhook"))
    return progress


def test_totals_sum_resources_and_compute_remaining_and_percent() -> None:
    totals = _sample().totals()
    assert totals.objects_total == 40
    assert totals.counts.rewritten == 14
    assert totals.counts.done == 17
    assert totals.remaining == 23
    assert totals.percent == 42


def test_percent_is_100_only_when_succeeded() -> None:
    progress = _sample()
    for entry in progress.resources:
        entry.estimate = entry.counts.done
    assert progress.totals().percent == 99
    progress.phase = Phase.SUCCEEDED
    assert progress.totals().percent == 100


def test_an_estimate_below_what_is_done_never_gives_negative_remaining() -> None:
    progress = MigrationProgress(resources=[ResourceProgress("", "v1", "pods", estimate=1)])
    progress.resources[0].counts.rewritten = 5
    totals = progress.totals()
    assert totals.objects_total == 5
    assert totals.remaining == 0


def test_status_document_has_the_printer_column_fields() -> None:
    status = to_status(_sample(), NOW)
    assert status["phase"] == "Migrating"
    assert status["progress"] == "42%"
    assert status["totals"]["rewritten"] == 14
    assert status["totals"]["failed"] == 1
    assert status["keyId"] == "k1"
    assert status["resources"][1]["checkpoint"] == {
        "continue": "abc",
        "counts": {"rewritten": 5, "unchanged": 0, "conflicts": 0, "gone": 0, "failed": 1, "retries": 3},
    }


def test_status_round_trips_for_resume() -> None:
    original = _sample()
    status = to_status(original, NOW)
    restored = from_status(status)
    assert to_status(restored, NOW) == status
    deployments = restored.resource("apps/deployments")
    assert deployments is not None
    assert deployments.checkpoint.continue_token == "abc"
    deployments.rewind()
    assert deployments.counts.rewritten == 5


def test_from_status_of_a_new_object_is_pending() -> None:
    progress = from_status(None)
    assert progress.phase is Phase.PENDING
    assert progress.resources == []


def test_unknown_phase_in_status_reads_as_pending() -> None:
    assert from_status({"phase": "Exploded"}).phase is Phase.PENDING


def test_only_the_first_failures_are_kept_but_all_are_counted() -> None:
    progress = MigrationProgress()
    for index in range(MAX_FAILURES + 5):
        progress.record_failure(Failure("core/secrets", "ns", f"s{index}", "Invalid", "nope"))
    assert len(progress.failures) == MAX_FAILURES
    assert progress.failures_total == MAX_FAILURES + 5


def test_long_messages_are_clipped() -> None:
    failure = Failure("core/secrets", "", "x", "Invalid", "m" * 5000)
    assert len(failure.to_status()["message"]) <= 300


def test_conditions_while_migrating() -> None:
    status = to_status(_sample(), NOW)
    assert _condition(status, "Ready")["status"] == "False"
    assert _condition(status, "Progressing") == {
        "type": "Progressing",
        "status": "True",
        "reason": "Migrating",
        "message": "rewriting",
        "lastTransitionTime": NOW,
    }
    degraded = _condition(status, "Degraded")
    assert degraded["status"] == "True"
    assert degraded["reason"] == "ObjectsNotRewritten"
    assert "team-a/web" in degraded["message"]


def test_conditions_when_verified() -> None:
    progress = MigrationProgress(phase=Phase.SUCCEEDED, message="verified")
    progress.verification = Verification(VerificationResult.VERIFIED, scanned=10)
    status = to_status(progress, NOW)
    assert _condition(status, "Ready")["status"] == "True"
    assert _condition(status, "Progressing")["reason"] == "Finished"
    assert _condition(status, "Degraded")["status"] == "False"
    assert status["verification"] == {"result": "Verified", "scanned": 10, "stale": 0}


def test_stale_objects_after_verification_degrade_with_examples() -> None:
    progress = MigrationProgress(phase=Phase.FAILED, message="2 stale")
    progress.verification = Verification(
        VerificationResult.STALE_FOUND, scanned=10, stale=2, examples=["core/secrets a/b (plaintext)"]
    )
    degraded = _condition(to_status(progress, NOW), "Degraded")
    assert degraded["reason"] == "StaleObjectsRemain"
    assert "core/secrets a/b" in degraded["message"]


def test_transition_time_moves_only_when_the_status_flips() -> None:
    conditions = set_condition([], "Ready", status=False, reason="Migrating", message="m", now=NOW)
    conditions = set_condition(conditions, "Ready", status=False, reason="Verifying", message="v", now=LATER)
    assert conditions[0]["lastTransitionTime"] == NOW
    assert conditions[0]["reason"] == "Verifying"
    conditions = set_condition(conditions, "Ready", status=True, reason="Succeeded", message="s", now=LATER)
    assert conditions[0]["lastTransitionTime"] == LATER


def test_unset_fields_are_sent_as_null_so_a_merge_patch_clears_them() -> None:
    status = to_status(MigrationProgress(), NOW)
    assert status["verification"] is None
    assert status["completionTime"] is None


def test_rewind_drops_the_failures_of_the_redone_page() -> None:
    """A resumed run redoes the uncommitted page: its failures must not be counted twice."""
    secrets = ResourceProgress("", "v1", "secrets", ResourcePhase.MIGRATING)
    other = ResourceProgress("", "v1", "configmaps", ResourcePhase.DONE)
    progress = MigrationProgress(resources=[other, secrets])

    def fail(entry: ResourceProgress, name: str) -> None:
        entry.counts.record(Outcome.REFUSED)
        progress.record_failure(Failure(entry.name, "ns", name, "Forbidden", ""))

    fail(secrets, "committed")
    secrets.commit(continue_token="page-2")
    fail(other, "elsewhere")
    fail(secrets, "redone")  # page 2, then the operator dies
    resumed = from_status(to_status(progress, NOW))
    entry = resumed.resource("core/secrets")
    assert entry is not None
    resumed.rewind(entry)
    assert resumed.failures_total == 2
    assert [f.name for f in resumed.failures] == ["committed", "elsewhere"]
    assert entry.counts.failed == 1
