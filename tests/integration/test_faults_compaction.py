"""etcd compacted to its current revision, again and again, during a Full walk with small pages
and during a Targeted scan: every continue token and every pinned etcd revision expires.

The migration must complete with the four end checks holding, and the restarts it needed
show in its metrics: walk_restarts_total by cause (expired continue tokens in Full mode, a
compacted scan revision in Targeted mode), and in Full mode the 410 answers themselves.
"""

from __future__ import annotations

import threading
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

OBJECTS = scaled(900, 20_000)
PAGE_SIZE = 10
COMPACT_EVERY = 0.5  # seconds


class Compactor:
    """Compacts etcd to its current revision every ``COMPACT_EVERY`` seconds, in a thread."""

    def __init__(self, world: FaultWorld) -> None:
        self.world = world
        self.compactions = 0
        self.last_revision = 0
        self.error: Exception | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.wait(COMPACT_EVERY):
                revision = self.world.etcd.revision()
                if revision > self.last_revision:
                    self.world.etcd.compact(revision)
                    self.last_revision = revision
                    self.compactions += 1
        except Exception as error:  # a dead compactor must fail the test, not end it quietly
            self.error = error

    def __enter__(self) -> Compactor:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        if self.error is not None:
            raise AssertionError(f"the compactor failed: {self.error}") from self.error


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultWorld]:
    with fault_world(tmp_path_factory.mktemp("faults-compaction"), objects=OBJECTS) as world:
        yield world


def _expired_lists(metrics: str) -> float:
    """List or write answers with HTTP 410 the operator recorded (its latency histogram's count)."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("kms_storage_migrator_request_duration_seconds_count") and 'code="410"' in line
    )


def _walk_restarts(metrics: str, migration: str) -> dict[str, float]:
    """The operator's kms_storage_migrator_walk_restarts_total of one migration, by cause."""
    restarts: dict[str, float] = {}
    ours = f'migration="{migration}"'
    for line in metrics.splitlines():
        if line.startswith("kms_storage_migrator_walk_restarts_total{") and ours in line:
            cause = line.split('cause="', 1)[1].split('"', 1)[0]
            restarts[cause] = restarts.get(cause, 0.0) + float(line.rsplit(" ", 1)[1])
    return restarts


@pytest.mark.parametrize("mode", ["Full", "Targeted"])
def test_compaction_during_the_walk_expires_tokens_and_the_migration_completes(
    world: FaultWorld, mode: str
) -> None:
    world.make_all_stale()
    before = content_hashes(world.cluster)
    keys_before = len(world.etcd.values())
    operator = world.start_operator()
    name = f"compaction-{mode.lower()}"
    with Compactor(world) as compactor:
        world.apply(name, migration_spec(mode, qps=scaled(100, 300), pageSize=PAGE_SIZE))
        status = world.wait_until(name, is_terminal, timeout=scaled(300, 3600))
    metrics = operator.metrics()
    world.stop_operator()
    expired = _expired_lists(metrics)
    print(
        f"{mode}: {keys_before} objects, pageSize {PAGE_SIZE}, {compactor.compactions} compactions; "
        f"410 answers in metrics: {expired:.0f}; totals {status['totals']}"
    )
    assert compactor.compactions >= 5, "the migration ended before etcd was compacted a few times"
    assert_migrated(world, status, before, keys_before)
    restarts = _walk_restarts(metrics, name)
    print(f"walk restarts in metrics: {restarts}")
    if mode == "Full":
        # The expired continue tokens it met show as 410 answers in its metrics, and each one
        # as a walk restart (resumed from the 410's fresh token, or listed again).
        assert expired >= 1, "no 410 in the operator's metrics although tokens expired"
        assert set(restarts) <= {"continue-expired", "list-restarted"}, restarts
        assert sum(restarts.values()) >= 1, restarts
    else:
        # A Targeted scan whose etcd revision was compacted reads on at a newer one.
        assert set(restarts) == {"etcd-compacted"}, restarts
