"""One bad object must not block its resource (issue 10, item 8): a Full migration.

Garbage bytes are written with etcdctl under the keys of two ConfigMaps and one Secret: the
apiserver cannot decode them (its LIST of the whole resource answers 500 StorageReadError).
Wanted: each bad object named in the status, every other object migrated (an independent
etcd read finds nothing else stale), the migration ending Failed because of them.

Measured before the fix (issue 10, item 8): the apiserver's LIST of each resource fails, so a
Full migration marks core/configmaps and core/secrets failed and leaves 100 of their 150
objects stale; the final message names the three keys (from the etcd verification).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fault_tools import FaultWorld, fault_world, migrate_past_garbage

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultWorld]:
    with fault_world(tmp_path_factory.mktemp("faults-bad-object-full"), objects=300, namespaces=3) as world:
        yield world


def test_garbage_values_are_named_and_every_other_object_migrates_full(world: FaultWorld) -> None:
    migrate_past_garbage(world, "Full")
