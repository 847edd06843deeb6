"""kube-apiserver restarted in the middle of a migration, in Full and in Targeted mode.

Every request of the operator fails while the apiserver is away (connection refused, then
503 while it starts): the migration must carry on once it is back, and end Succeeded with
every object counted once, nothing stale in etcd, no content changed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fault_tools import (
    FULL_SCALE,
    FaultWorld,
    assert_migrated,
    content_hashes,
    done_count,
    fault_point,
    fault_world,
    migration_spec,
    scaled,
)

pytestmark = pytest.mark.integration

OBJECTS = scaled(900, 20_000)
# Each run waits out the operator's slow rate recovery after the restart (80-150 s measured,
# issue 10 item 11), so CI runs Targeted only and the full suite both modes.
MODES = ["Full", "Targeted"] if FULL_SCALE else ["Targeted"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultWorld]:
    with fault_world(tmp_path_factory.mktemp("faults-restarts"), objects=OBJECTS) as world:
        yield world


@pytest.mark.parametrize("mode", MODES)
def test_apiserver_restart_mid_migration_is_ridden_out(world: FaultWorld, mode: str) -> None:
    world.make_all_stale()
    before = content_hashes(world.cluster)
    keys_before = len(world.etcd.values())
    world.start_operator()
    name = f"restart-{mode.lower()}"
    world.apply(name, migration_spec(mode, qps=scaled(60, 200), pageSize=scaled(25, 100)))
    at_fault = world.wait_until(
        name, lambda m: done_count(m.get("status") or {}) >= fault_point(keys_before), timeout=300
    )
    assert at_fault["phase"] == "Migrating", at_fault.get("message")
    fault_at = time.monotonic()
    world.cluster.restart_apiserver()
    away = time.monotonic() - fault_at
    status = world.finished(name, timeout=scaled(300, 3600))
    after = time.monotonic() - fault_at
    print(
        f"{mode}: {keys_before} objects, restart at {done_count(at_fault)} done, apiserver away "
        f"{away:.1f}s, finished {after:.1f}s after the restart, totals {status['totals']}"
    )
    assert_migrated(world, status, before, keys_before)
    world.stop_operator()
