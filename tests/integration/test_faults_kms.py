"""The KMS failing mid-migration: the primary key disabled, or the plugin stopped (issue 10, item 3).

Neither stops writes at once: the apiserver writes with its cached DEK seed for 3 minutes after
its plugin last answered Status, then refuses every write of an encrypted resource (500
InternalError, "encryptedDEKSource ... expired"), our own status updates included. So the test
waits until a write of its own really fails, keeps the KMS away a while longer, then brings it
back, and judges:

- while writes fail, the stored status says Degraded with the KMS reason (for a disabled key:
  re-enable it), set while writes still landed;
- nothing is counted done that etcd does not hold under the current key (etcdctl reads);
- the operator's requests during the outage stay few (the apiserver's apiserver_request_total);
- once the KMS is back the migration ends Succeeded and Verified with every object counted once.

CI runs the disabled key (one cluster, ~7 min); ``KSM_FAULT_SCALE=full`` both, at 20k objects.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fault_tools import (
    FULL_SCALE,
    FaultWorld,
    assert_migrated,
    content_hashes,
    done_count,
    fault_world,
    migration_spec,
    scaled,
)
from operator_harness import migration

from kms_storage_migrator.devcluster.cluster import DevCluster
from kms_storage_migrator.kms.keyring import set_key_state

pytestmark = pytest.mark.integration

OBJECTS = scaled(500, 20_000)
# Slow enough that the run outlasts the apiserver's 3-minute grace: writes fail mid-run.
QPS = scaled(2, 40)
PAGE_SIZE = 10  # a page every few seconds: the KMS check runs between pages
AWAY_AFTER_WRITES_FAIL = scaled(60, 180)  # seconds the KMS stays away once writes fail
CASES = ["disabled-key", "plugin-stopped"] if FULL_SCALE else ["disabled-key"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultWorld]:
    with fault_world(tmp_path_factory.mktemp("faults-kms"), objects=OBJECTS) as world:
        yield world


def condition(document: dict[str, Any], kind: str) -> dict[str, Any]:
    conditions = (document.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == kind), {})


def write_fails(cluster: DevCluster, name: str) -> str:
    """Create a ServiceAccount (a type the migration does not select): the error text, or ""."""
    try:
        cluster.kubectl("create", "serviceaccount", name, "-n", "default")
    except subprocess.CalledProcessError as error:
        return str(error.stderr)
    return ""


def wait_until_writes_fail(cluster: DevCluster, case: str, timeout: float = 420) -> str:
    deadline = time.monotonic() + timeout
    index = 0
    while time.monotonic() < deadline:
        index += 1
        failure = write_fails(cluster, f"kms-probe-{case}-{index}")
        if failure:
            return failure
        time.sleep(3)
    raise AssertionError(f"writes did not fail within {timeout}s of the KMS going away")


def requests_served(cluster: DevCluster) -> float:
    """The apiserver's own count of requests it answered (every client, every code)."""
    total = 0.0
    for line in cluster.apiserver_metrics().splitlines():
        if line.startswith("apiserver_request_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def current_objects(world: FaultWorld) -> int:
    current = world.etcd.current_form()
    return sum(1 for value in world.etcd.values().values() if value.form == current)


def counted_done(status: dict[str, Any]) -> int:
    totals = status.get("totals") or {}
    return sum(int(totals.get(k, 0)) for k in ("rewritten", "unchanged", "conflicts", "gone"))


@pytest.mark.parametrize("case", CASES)
def test_kms_outage_mid_migration_is_waited_out(world: FaultWorld, case: str) -> None:
    cluster = world.cluster
    world.make_all_stale()
    key = cluster.current_key_id()
    before = content_hashes(cluster)
    keys_before = len(world.etcd.values())
    world.start_operator()
    name = f"kms-{case}"
    world.apply(name, migration_spec("Targeted", qps=QPS, pageSize=PAGE_SIZE))
    at_fault = world.wait_until(
        name, lambda m: done_count(m.get("status") or {}) >= scaled(20, 1000), timeout=300
    )
    assert at_fault["phase"] == "Migrating", at_fault.get("message")

    started = time.monotonic()
    if case == "disabled-key":
        set_key_state(cluster.keyring, key, "disabled")
    else:
        cluster.stop_kms_plugin()
    expected_reason = "KMSKeyDisabled" if case == "disabled-key" else "KMSUnavailable"
    # The KMS check fails within seconds; writes (ours and the operator's) go on for minutes.
    world.wait_until(name, lambda m: condition(m, "Degraded").get("reason") == expected_reason, timeout=240)
    warned_after = time.monotonic() - started
    failure = wait_until_writes_fail(cluster, case)
    writes_failed_after = time.monotonic() - started
    assert "InternalError" in failure or "Internal error" in failure, failure

    # A quiet window (this test sends nothing) to count what the apiserver is asked meanwhile.
    served_before = requests_served(cluster)
    window_start = time.monotonic()
    time.sleep(AWAY_AFTER_WRITES_FAIL)
    served = requests_served(cluster) - served_before - 1  # minus this scrape's own request
    rate = served / (time.monotonic() - window_start)

    during = migration(cluster, name)
    degraded = condition(during, "Degraded")
    assert degraded.get("status") == "True", degraded
    assert degraded.get("reason") == expected_reason, degraded
    if case == "disabled-key":
        assert f"re-enable key {key}" in str(degraded.get("message")), degraded
    status_during = dict(during.get("status") or {})
    assert status_during.get("phase") == "Migrating", status_during.get("message")
    # Every object counted done must really be current in etcd (all were stale at the start).
    assert counted_done(status_during) <= current_objects(world), (status_during.get("totals"),)
    assert int((status_during.get("totals") or {}).get("failed", 0)) == 0, status_during.get("failures")

    recovered = time.monotonic()
    if case == "disabled-key":
        set_key_state(cluster.keyring, key, "enabled")
    else:
        cluster.start_kms_plugin()
    status = world.finished(name, timeout=scaled(900, 3600))
    finished_after = time.monotonic() - recovered
    print(
        f"{case}: {keys_before} objects, qps {QPS}; KMS away at {done_count(at_fault)} done; "
        f"Degraded after {warned_after:.0f}s; writes failed after {writes_failed_after:.0f}s; "
        f"{rate:.2f} requests/s to the apiserver (all clients) over {AWAY_AFTER_WRITES_FAIL}s of "
        f"failing writes; finished {finished_after:.0f}s after the KMS came back; "
        f"totals {status['totals']}; Degraded message while away: {degraded.get('message')!r}"
    )
    assert warned_after < writes_failed_after
    # No retry storm: the migration alone may send QPS writes/s; a storm would be far more.
    assert rate < QPS + 10, f"{rate:.1f} requests/s while the KMS was away"
    assert_migrated(world, status, before, keys_before)
    final_degraded = condition(migration(cluster, name), "Degraded")
    assert final_degraded.get("status") == "False", final_degraded
    assert condition(migration(cluster, name), "KMSAvailable").get("status") == "True"
    world.stop_operator()
