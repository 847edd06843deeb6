"""etcd stopped for 60 s (and 5 min at full size) in the middle of a Targeted migration.

Longer than the apiserver's and the operator's request timeouts: every request fails for a
minute or more. A migration must not end Failed because infrastructure was away for a while;
it must resume and end Succeeded with the four end checks holding.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fault_tools import FULL_SCALE, FaultWorld, fault_world, migrate_through_etcd_outage, scaled

pytestmark = pytest.mark.integration

OBJECTS = scaled(900, 20_000)
OUTAGES = [60, 300] if FULL_SCALE else [60]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultWorld]:
    with fault_world(tmp_path_factory.mktemp("faults-etcd-long"), objects=OBJECTS) as world:
        yield world


@pytest.mark.parametrize("seconds", OUTAGES)
def test_etcd_away_for_long_mid_migration_is_ridden_out(world: FaultWorld, seconds: int) -> None:
    migrate_through_etcd_outage(world, "Targeted", seconds=seconds)
