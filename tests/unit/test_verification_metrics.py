"""The verification gauges: what a status document's read-back puts on /metrics."""

from __future__ import annotations

from prometheus_client import generate_latest

from kms_storage_migrator.migration.metrics import OperatorMetrics, VerificationFigures, verification_figures

STALE_FOUND = {
    "result": "StaleFound",
    "scanned": 120,
    "stale": 7,
    "keysInUse": [{"keyId": "key-2", "objects": 113}, {"keyId": "key-1", "objects": 5}],
}


def sample(metrics: OperatorMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(f"kms_storage_migrator_{name}", labels)


def test_figures_mark_the_key_the_migration_writes_with_as_current() -> None:
    assert verification_figures(STALE_FOUND, "key-2") == VerificationFigures(
        stale=7, keys=(("key-1", False, 5), ("key-2", True, 113))
    )


def test_no_read_back_gives_no_figures_rather_than_a_false_all_clear() -> None:
    assert verification_figures(None, "key-2") is None
    assert verification_figures({}, "key-2") is None
    assert verification_figures({"result": "Unverified", "scanned": 0, "stale": 0}, "key-2") is None


def test_malformed_counts_read_as_zero() -> None:
    figures = verification_figures({"result": "Verified", "stale": "x", "keysInUse": [{"keyId": "k"}]}, None)
    assert figures == VerificationFigures(stale=0, keys=(("k", False, 0),))


def test_a_published_verification_sets_the_stale_and_per_key_gauges() -> None:
    metrics = OperatorMetrics()
    observer = metrics.for_migration("check")
    observer.status("Migrating", 10)  # before the read-back: nothing to say yet
    assert sample(metrics, "verification_stale_objects", migration="check") is None
    observer.status("Succeeded", 0, STALE_FOUND, "key-2")
    assert sample(metrics, "verification_stale_objects", migration="check") == 7
    assert sample(metrics, "objects_by_key", migration="check", key_id="key-1", current="false") == 5
    assert sample(metrics, "objects_by_key", migration="check", key_id="key-2", current="true") == 113


def test_a_newer_verification_replaces_an_older_migrations_series() -> None:
    metrics = OperatorMetrics()
    metrics.for_migration("old").status("Succeeded", 0, STALE_FOUND, "key-2")
    clean = {
        "result": "Verified",
        "scanned": 118,
        "stale": 0,
        "keysInUse": [{"keyId": "key-3", "objects": 118}],
    }
    metrics.for_migration("new").status("Succeeded", 0, clean, "key-3")
    # The old migration's stale count and key-1's objects are history: alerting on them would
    # never stop once a later migration fixed them.
    assert sample(metrics, "verification_stale_objects", migration="old") is None
    assert sample(metrics, "objects_by_key", migration="old", key_id="key-1", current="false") is None
    exposition = generate_latest(metrics.registry).decode()
    assert sample(metrics, "verification_stale_objects", migration="new") == 0
    assert sample(metrics, "objects_by_key", migration="new", key_id="key-3", current="true") == 118
    assert "key-1" not in exposition


def test_a_migration_with_no_verification_yet_leaves_the_last_one_standing() -> None:
    metrics = OperatorMetrics()
    metrics.for_migration("old").status("Succeeded", 0, STALE_FOUND, "key-2")
    metrics.for_migration("next").status("Migrating", 50, None, "key-2")
    assert sample(metrics, "verification_stale_objects", migration="old") == 7
