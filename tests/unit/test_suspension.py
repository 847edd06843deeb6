"""spec.suspend: the runner leaves at a page boundary, the status says so, resuming counts once."""

from __future__ import annotations

import asyncio

import pytest
from test_rewrite_engine import STALE, FakeCluster, MemorySink, _listed, _runner

from kms_storage_migrator.migration.progress import MigrationProgress, Phase, from_status, to_status
from kms_storage_migrator.migration.service import _hold, _resume
from kms_storage_migrator.migration.suspension import MigrationSuspended

NOW = "2026-12-01T13:00:00Z"


def _paged_cluster() -> FakeCluster:
    cluster = FakeCluster({name: STALE for name in "abcde"})
    cluster.lists = {
        None: [_listed("a", "b", token="t1")],
        "t1": [_listed("c", "d", token="t2")],
        "t2": [_listed("e")],
    }
    return cluster


def _condition(status: dict, kind: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == kind)


async def test_suspending_mid_page_finishes_and_commits_that_page_first() -> None:
    cluster = _paged_cluster()
    sink = MemorySink()
    runner = _runner(
        cluster, sink, {"mode": "Full"}, etcd=False, should_suspend=lambda: "a" in cluster.patched
    )
    with pytest.raises(MigrationSuspended):
        await runner.run()
    assert cluster.patched == ["a", "b"]  # the page in flight was written to its end
    entry = sink.status["resources"][0]
    assert entry["checkpoint"]["continue"] == "t1"
    assert entry["checkpoint"]["counts"]["rewritten"] == 2


async def test_a_resumed_migration_continues_from_the_checkpoint_counting_each_object_once() -> None:
    cluster = _paged_cluster()
    sink = MemorySink()
    first = _runner(
        cluster, sink, {"mode": "Full"}, etcd=False, should_suspend=lambda: "c" in cluster.patched
    )
    with pytest.raises(MigrationSuspended):
        await first.run()
    resumed = await _runner(
        cluster, MemorySink(), {"mode": "Full"}, etcd=False, progress=from_status(sink.status)
    ).run()
    assert resumed.phase is Phase.SUCCEEDED
    assert cluster.patched == ["a", "b", "c", "d", "e"]
    assert resumed.totals().counts.rewritten == 5


async def test_a_suspended_migration_shows_suspended_and_how_to_resume() -> None:
    sink = MemorySink()
    progress = MigrationProgress(phase=Phase.MIGRATING, start_time=NOW)
    stopped = False

    async def delete_soon() -> None:
        nonlocal stopped
        await asyncio.sleep(0.1)
        stopped = True

    deleting = asyncio.create_task(delete_soon())
    still_running = await _hold(sink, progress, "night", lambda: True, lambda: stopped)
    await deleting
    assert still_running is False  # deleted while suspended: nothing left to do
    assert sink.status["phase"] == "Suspended"
    assert sink.status["suspendedPhase"] == "Migrating"
    assert "kubectl patch storagemigration night" in sink.status["message"]
    assert '"suspend":false' in sink.status["message"]
    assert _condition(sink.status, "Suspended")["status"] == "True"
    assert _condition(sink.status, "Progressing")["status"] == "False"
    assert [reason for _, reason, _ in sink.events] == ["Suspended"]


async def test_the_phase_to_resume_in_survives_a_restart_and_resuming_clears_suspended() -> None:
    sink = MemorySink()
    progress = MigrationProgress(phase=Phase.MIGRATING, start_time=NOW, suspended=True)
    restored = from_status(to_status(progress, NOW))
    assert restored.phase is Phase.MIGRATING
    assert restored.suspended
    await _resume(sink, restored)
    assert sink.status["phase"] == "Migrating"
    assert sink.status["suspendedPhase"] is None
    assert _condition(sink.status, "Suspended")["status"] == "False"
    assert [reason for _, reason, _ in sink.events] == ["Resumed"]


def test_a_migration_never_suspended_has_no_suspended_condition() -> None:
    status = to_status(MigrationProgress(phase=Phase.MIGRATING), NOW)
    assert all(c["type"] != "Suspended" for c in status["conditions"])
    assert status["phase"] == "Migrating"
