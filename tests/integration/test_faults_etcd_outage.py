"""etcd stopped for 10 s in the middle of a migration, in Full and in Targeted mode.

etcd is stopped and started again (``DevCluster.stop_etcd``/``start_etcd``): the apiserver's
requests to it and the operator's own etcd reads fail meanwhile. The migration must ride it
out and end Succeeded with every object counted once, nothing stale in etcd, no content
changed.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fault_tools import FULL_SCALE, FaultWorld, fault_world, migrate_through_etcd_outage, scaled

pytestmark = pytest.mark.integration

OBJECTS = scaled(900, 20_000)
# Both modes passed at small size too (2 min); CI runs Targeted, where the operator's own etcd
# reads fail as well, to keep the suite's time in bounds.
MODES = ["Full", "Targeted"] if FULL_SCALE else ["Targeted"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultWorld]:
    with fault_world(tmp_path_factory.mktemp("faults-etcd"), objects=OBJECTS) as world:
        yield world


@pytest.mark.parametrize("mode", MODES)
def test_etcd_away_10s_mid_migration_is_ridden_out(world: FaultWorld, mode: str) -> None:
    migrate_through_etcd_outage(world, mode, seconds=10)
