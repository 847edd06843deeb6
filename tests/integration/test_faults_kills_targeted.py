"""The operator SIGKILLed at random moments of a Targeted migration.

Each kill lands in a phase chosen in turn (Discovering, Scanning, Migrating, Verifying, or
whatever the migration is in when that phase is already past), after a random delay; the
operator is started again at once. The run must still end Succeeded, every object counted
once, nothing stale in etcd, no content changed. KSM_FAULT_SEED replays a run's kill times.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from fault_tools import FaultWorld, fault_world, migrate_through_kills, scaled

pytestmark = pytest.mark.integration

OBJECTS = scaled(900, 20_000)
KILLS = scaled(3, 5)
SEED = int(os.environ.get("KSM_FAULT_SEED", str(int(time.time()))))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultWorld]:
    with fault_world(tmp_path_factory.mktemp("faults-kills-targeted"), objects=OBJECTS) as world:
        yield world


def test_sigkill_at_random_moments_of_a_targeted_migration_still_migrates_everything_once(
    world: FaultWorld,
) -> None:
    migrate_through_kills(world, "Targeted", kills=KILLS, seed=SEED)
