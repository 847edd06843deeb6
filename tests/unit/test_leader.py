"""Leader election decisions: who may take the Lease, when, and what is written (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from kms_storage_migrator.errors import UserError
from kms_storage_migrator.leader import (
    LEASE_DURATION_SECONDS,
    LeaseRecord,
    LeaseSettings,
    Observation,
    default_identity,
    default_namespace,
    held_lease,
    lease_settings,
    may_take,
    observe,
    released_lease,
)

ME = "operator-a"
OTHER = "operator-b"
SETTINGS = LeaseSettings(namespace="kms", name="kms-storage-migrator", identity=ME)
NOON = datetime(2026, 12, 1, 12, 0, 0, 123456, tzinfo=UTC)


def record(holder: str, renew_time: str = "2026-12-01T11:59:58.000000Z", **changes: object) -> LeaseRecord:
    fields: dict[str, object] = {
        "holder": holder,
        "duration_seconds": 15,
        "renew_time": renew_time,
        "acquire_time": "2026-12-01T11:00:00.000000Z",
        "transitions": 4,
        "resource_version": "812",
    }
    fields.update(changes)
    return LeaseRecord(**fields)  # type: ignore[arg-type]


def test_a_lease_held_by_nobody_or_by_us_may_be_taken_at_once() -> None:
    for holder in ("", ME):
        assert may_take(Observation(record(holder), seen_at=100.0), ME, now=100.0)


def test_a_live_holder_keeps_the_lease_until_its_duration_has_passed_on_our_clock() -> None:
    seen = Observation(record(OTHER), seen_at=100.0)
    assert not may_take(seen, ME, now=100.0)
    assert not may_take(seen, ME, now=114.9)
    assert may_take(seen, ME, now=115.0)


def test_the_holders_own_duration_decides_not_ours() -> None:
    seen = Observation(record(OTHER, duration_seconds=60), seen_at=0.0)
    assert not may_take(seen, ME, now=59.0)
    assert may_take(seen, ME, now=60.0)


def test_a_renewal_restarts_the_clock() -> None:
    first = observe(None, record(OTHER, "2026-12-01T12:00:00.000000Z"), now=100.0)
    renewed = observe(first, record(OTHER, "2026-12-01T12:00:05.000000Z"), now=110.0)
    assert renewed.seen_at == 110.0
    assert not may_take(renewed, ME, now=120.0)


def test_a_new_holder_restarts_the_clock() -> None:
    first = observe(None, record(OTHER), now=100.0)
    taken = observe(first, record("operator-c"), now=112.0)
    assert taken.seen_at == 112.0


def test_an_unchanged_lease_keeps_the_first_sighting_even_if_other_fields_moved() -> None:
    first = observe(None, record(OTHER), now=100.0)
    # A label edit moves the resourceVersion, but the holder showed no sign of life.
    relabelled = observe(first, record(OTHER, resource_version="900"), now=110.0)
    assert relabelled.seen_at == 100.0
    assert relabelled.record.resource_version == "900"
    assert may_take(relabelled, ME, now=115.0)


def test_a_holder_gives_up_before_anyone_may_take_over() -> None:
    # The renew deadline is shorter than the lease: the old holder stops before a standby starts.
    assert SETTINGS.renew_deadline < SETTINGS.lease_duration_seconds
    assert SETTINGS.renew_interval < SETTINGS.renew_deadline


def test_a_new_lease_names_us_and_starts_counting_transitions_at_zero() -> None:
    lease = held_lease(SETTINGS, None, NOON)
    assert lease["metadata"] == {"name": "kms-storage-migrator", "namespace": "kms"}
    assert lease["spec"] == {
        "holderIdentity": ME,
        "leaseDurationSeconds": LEASE_DURATION_SECONDS,
        "acquireTime": "2026-12-01T12:00:00.123456Z",
        "renewTime": "2026-12-01T12:00:00.123456Z",
        "leaseTransitions": 0,
    }


def test_taking_over_counts_a_transition_and_is_guarded_by_the_version_read() -> None:
    lease = held_lease(SETTINGS, record(OTHER), NOON)
    assert lease["metadata"]["resourceVersion"] == "812"
    assert lease["spec"]["holderIdentity"] == ME
    assert lease["spec"]["leaseTransitions"] == 5
    assert lease["spec"]["acquireTime"] == "2026-12-01T12:00:00.123456Z"


def test_renewing_keeps_the_acquire_time_and_the_transition_count() -> None:
    lease = held_lease(SETTINGS, record(ME), NOON)
    assert lease["spec"]["leaseTransitions"] == 4
    assert lease["spec"]["acquireTime"] == "2026-12-01T11:00:00.000000Z"
    assert lease["spec"]["renewTime"] == "2026-12-01T12:00:00.123456Z"


def test_a_released_lease_has_no_holder_and_is_guarded_by_our_version() -> None:
    lease = released_lease(SETTINGS, record(ME), NOON)
    assert "holderIdentity" not in lease["spec"]
    assert lease["metadata"]["resourceVersion"] == "812"
    assert lease["spec"]["leaseTransitions"] == 4
    released = LeaseRecord.from_lease(lease)
    assert may_take(Observation(released, seen_at=0.0), OTHER, now=0.0)


def test_a_lease_as_the_apiserver_returns_it() -> None:
    parsed = LeaseRecord.from_lease(
        {
            "metadata": {"name": "kms-storage-migrator", "resourceVersion": "77"},
            "spec": {
                "holderIdentity": OTHER,
                "leaseDurationSeconds": 20,
                "renewTime": "2026-12-01T12:00:00.000000Z",
                "leaseTransitions": 2,
            },
        }
    )
    assert (parsed.holder, parsed.duration_seconds, parsed.transitions, parsed.resource_version) == (
        OTHER,
        20,
        2,
        "77",
    )
    # A Lease someone created by hand, with no spec: nobody holds it, default duration.
    empty = LeaseRecord.from_lease({"metadata": {"resourceVersion": "5"}})
    assert (empty.holder, empty.duration_seconds, empty.transitions) == ("", LEASE_DURATION_SECONDS, 0)


def test_identity_is_the_pod_name_else_host_and_process() -> None:
    assert default_identity({"POD_NAME": "kms-storage-migrator-7d9f-x2"}, "node-1", 7) == (
        "kms-storage-migrator-7d9f-x2"
    )
    assert default_identity({}, "laptop", 4242) == "laptop_4242"


def test_namespace_comes_from_the_environment_then_the_service_account(tmp_path: Path) -> None:
    assert default_namespace({"POD_NAMESPACE": "ops"}, tmp_path) == "ops"
    assert default_namespace({}, tmp_path) is None
    (tmp_path / "namespace").write_text("kms-storage-migrator\n")
    assert default_namespace({}, tmp_path) == "kms-storage-migrator"


def test_leader_election_without_a_namespace_is_refused_naming_the_flag(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--leader-elect-namespace"):
        lease_settings(None, "kms-storage-migrator", {}, service_account_dir=tmp_path)
    with pytest.raises(UserError, match="--leader-elect-name"):
        lease_settings("ops", "", {})
    settings = lease_settings(None, "custom", {"POD_NAMESPACE": "ops", "POD_NAME": "pod-1"})
    assert (settings.namespace, settings.name, settings.identity) == ("ops", "custom", "pod-1")
    assert settings.path == "/apis/coordination.k8s.io/v1/namespaces/ops/leases/custom"
