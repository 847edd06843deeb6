"""The operator started while kube-apiserver restarts (a pod rescheduled during a control-plane
upgrade): once the apiserver is back, the operator must serve StorageMigrations.

Seen in this suite: kopf resolves the StorageMigration resource once at start; started while
the apiserver restarted, it logged "Unresolved resources cannot be served (try creating their
CRDs)" and then ignored a StorageMigration for 4 minutes (until stopped).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fault_tools import FaultWorld, fault_world, is_terminal, migration_spec

pytestmark = pytest.mark.integration

SELECTION = ["core/configmaps"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultWorld]:
    with fault_world(tmp_path_factory.mktemp("faults-startup"), objects=100) as world:
        yield world


@pytest.mark.parametrize("delay", [0.5, 1.5, 3.0])
def test_an_operator_started_during_an_apiserver_restart_serves_migrations(
    world: FaultWorld, delay: float
) -> None:
    world.start_operator()
    time.sleep(delay)  # the operator is importing, logging in or resolving its resources
    world.cluster.restart_apiserver()
    name = f"startup-{int(delay * 10)}"
    world.apply(name, migration_spec("Full", resources={"include": SELECTION}))
    status = world.wait_until(name, is_terminal, timeout=120)
    world.stop_operator()
    assert status["phase"] == "Succeeded", status.get("message")
