"""Two kube-apiservers behind HAProxy, one of them down for the whole migration.

The operator talks to the load balancer (the cluster's kubeconfig); HAProxy's health checks
take the dead apiserver out of rotation. Full and Targeted migrations must end Succeeded
with the four end checks holding.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fault_tools import (
    FaultWorld,
    assert_migrated,
    content_hashes,
    fault_world,
    is_terminal,
    migration_spec,
    scaled,
)

pytestmark = pytest.mark.integration

OBJECTS = scaled(600, 20_000)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultWorld]:
    with fault_world(tmp_path_factory.mktemp("faults-ha"), objects=OBJECTS, apiservers=2) as world:
        yield world


@pytest.mark.parametrize("mode", ["Full", "Targeted"])
def test_one_apiserver_down_for_the_whole_run(world: FaultWorld, mode: str) -> None:
    world.make_all_stale()  # restarts both, one after the other
    world.cluster.stop_apiserver(2)
    try:
        before = content_hashes(world.cluster)
        keys_before = len(world.etcd.values())
        world.start_operator()
        name = f"ha-{mode.lower()}"
        world.apply(name, migration_spec(mode))
        status = world.wait_until(name, is_terminal, timeout=scaled(300, 3600))
        world.stop_operator()
        print(f"{mode}: {keys_before} objects, one of 2 apiservers down; totals {status['totals']}")
        assert_migrated(world, status, before, keys_before)
    finally:
        world.cluster.start_apiserver(2)
