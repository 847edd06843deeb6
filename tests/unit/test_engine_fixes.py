"""The engine's fixes of issue 8, each against the in-memory apiserver and etcd of test_rewrite_engine.

Each test here failed on the engine before the fix; the integration tests
(test_engine_mode_pinning.py, test_engine_etcd_outage.py) show the same on the real cluster.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from test_rewrite_engine import CURRENT, STALE, FakeCluster, MemorySink, _listed, _runner

from kms_storage_migrator.kube import api_error
from kms_storage_migrator.migration.progress import (
    Checkpoint,
    Counts,
    MigrationProgress,
    Phase,
    ResourcePhase,
    ResourceProgress,
)
from kms_storage_migrator.migration.service import cr_key
from kms_storage_migrator.storage.etcd import EtcdUnavailable, RawEntry
from kms_storage_migrator.storage.keys import EtcdRoot


class RecordingSink(MemorySink):
    """Keeps every published phase, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.phases: list[str] = []
        self.messages: list[str] = []

    async def publish(self, status: dict[str, Any]) -> None:
        self.phases.append(status["phase"])
        self.messages.append(status["message"])
        await super().publish(status)


def _resumed(phase: Phase, mode: str, entry: ResourceProgress) -> MigrationProgress:
    return MigrationProgress(phase=phase, mode=mode, start_time="2026-12-01T00:00:00Z", resources=[entry])


# ---- fix 1: the mode is pinned across a resume -----------------------------------------------------


async def test_a_full_migration_resumed_with_etcd_access_stays_full() -> None:
    """Started without etcd (Full), resumed with it: the list checkpoint is not read as an etcd key."""
    cluster = FakeCluster({"a": CURRENT, "b": CURRENT, "c": STALE})  # a and b rewritten before the stop
    cluster.lists = {"t1": [_listed("c")]}
    entry = ResourceProgress("", "v1", "secrets", ResourcePhase.MIGRATING, estimate=3)
    entry.counts = Counts(rewritten=2)
    entry.checkpoint = Checkpoint(continue_token="t1", last_key="ns/b", counts=Counts(rewritten=2))
    progress = await _runner(
        cluster, MemorySink(), {"mode": "Auto"}, progress=_resumed(Phase.MIGRATING, "Full", entry)
    ).run()
    assert progress.mode == "Full"
    assert cluster.patched == ["c"]
    assert progress.phase is Phase.SUCCEEDED, progress.message
    assert progress.totals().counts.rewritten == 3


async def test_a_targeted_migration_resumed_without_etcd_converts_its_checkpoint_to_full() -> None:
    cluster = FakeCluster({"a": STALE, "b": STALE, "c": STALE})
    cluster.lists = {None: [_listed("a", "b", "c")]}
    entry = ResourceProgress("", "v1", "secrets", ResourcePhase.MIGRATING, estimate=3)
    entry.counts = Counts(rewritten=2)
    entry.checkpoint = Checkpoint(last_key="/registry/secrets/ns/b", counts=Counts(rewritten=2))
    sink = MemorySink()
    progress = await _runner(
        cluster, sink, {"mode": "Auto"}, etcd=False, progress=_resumed(Phase.MIGRATING, "Targeted", entry)
    ).run()
    assert progress.mode == "Full"
    assert cluster.patched == ["c"]  # a and b were done under Targeted: never written or counted again
    assert progress.totals().counts.rewritten == 3
    assert any("Targeted" in message and "Full" in message for _, _, message in sink.events)


async def test_a_targeted_spec_resumed_without_etcd_is_refused_naming_the_mode() -> None:
    cluster = FakeCluster({"a": STALE})
    entry = ResourceProgress("", "v1", "secrets", ResourcePhase.MIGRATING)
    progress = await _runner(
        cluster,
        MemorySink(),
        {"mode": "Targeted"},
        etcd=False,
        progress=_resumed(Phase.MIGRATING, "Targeted", entry),
    ).run()
    assert progress.phase is Phase.FAILED
    assert "Targeted needs read access to etcd" in progress.message
    assert cluster.patched == []


# ---- fix 2: an outage is waited out, never terminal ---------------------------------------------


class FlakyEtcd(FakeCluster):
    """etcd that refuses connections for its first ``outage`` scans."""

    def __init__(self, secrets: dict[str, bytes], outage: int) -> None:
        super().__init__(secrets)
        self.outage = outage

    async def scan(
        self,
        prefix: bytes | str,
        page_size: int = 100,
        *,
        keys_only: bool = False,
        start_after: bytes | None = None,
        namespaces: Sequence[bytes] = (),  # a real etcd's cut points; one range here
    ) -> AsyncIterator[list[RawEntry]]:
        if str(prefix).startswith("/registry/secrets/") and self.outage:
            self.outage -= 1
            raise EtcdUnavailable("etcd at https://127.0.0.1:2379: connection refused")
        async for page in super().scan(
            prefix, page_size, keys_only=keys_only, start_after=start_after, namespaces=namespaces
        ):
            yield page


async def test_an_etcd_outage_while_migrating_is_waited_out_not_terminal() -> None:
    cluster = FlakyEtcd({"a": STALE, "b": STALE}, outage=3)
    sink = RecordingSink()
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    progress = await _runner(cluster, sink, {"mode": "Targeted"}, sleep=sleep).run()
    assert progress.phase is Phase.SUCCEEDED, progress.message
    assert "Failed" not in sink.phases
    waiting = [m for m in sink.messages if "etcd" in m and "unavailable" in m]
    assert waiting, sink.messages
    assert "connection refused" in waiting[0]
    assert waits == [2.0, 4.0, 8.0]  # backing off, not hammering
    assert "phase Scanning kept, retry 3 in 8s" in waiting[-1]
    reasons = [reason for _, reason, _ in sink.events]
    assert reasons.count("InfrastructureUnavailable") == 1
    assert reasons.count("InfrastructureAvailable") == 1


# ---- fix 3: one etcd root -----------------------------------------------------------------------


def test_the_etcd_root_slash_keeps_our_cr_at_the_top_of_the_keyspace() -> None:
    assert cr_key("sm", EtcdRoot.parse("/")) == "/kms-storage-migrator.io/storagemigrations/sm"
    assert cr_key("sm", EtcdRoot.parse("/registry/")) == (
        "/registry/kms-storage-migrator.io/storagemigrations/sm"
    )


# ---- fix 4: the failure message names the real reasons ------------------------------------------


async def test_a_failure_with_nothing_stale_does_not_claim_zero_stale_objects() -> None:
    cluster = FakeCluster({"a": STALE, "bad": b"\x00garbage"})
    progress = await _runner(cluster, MemorySink(), {"mode": "Targeted"}).run()
    assert progress.phase is Phase.FAILED
    assert "0 object(s) still stale" not in progress.message
    assert progress.message.startswith("1 value(s) in no known format")


# ---- fix 5: a resumed run keeps the phase it reached --------------------------------------------


async def test_a_resumed_migration_does_not_publish_an_earlier_phase() -> None:
    """Publishing Discovering would make a crash during rediscovery redo Scanning and the canaries."""
    cluster = FakeCluster({"a": STALE, "b": CURRENT})
    entry = ResourceProgress("", "v1", "secrets", ResourcePhase.MIGRATING, write_format="plaintext")
    sink = RecordingSink()
    await _runner(
        cluster, sink, {"mode": "Targeted"}, progress=_resumed(Phase.MIGRATING, "Targeted", entry)
    ).run()
    assert "Discovering" not in sink.phases
    assert "Scanning" not in sink.phases
    assert sink.phases[-1] == "Succeeded"


# ---- fix 7: a Full run without etcd says what it did --------------------------------------------


async def test_full_without_etcd_that_rewrote_nothing_does_not_say_all_rewritten() -> None:
    cluster = FakeCluster({"a": CURRENT, "b": CURRENT})
    listed = _listed("a", "b")
    for item in listed["items"]:  # listed at the stored revision: the no-op write stores nothing
        name = item["metadata"]["name"]
        item["metadata"]["resourceVersion"] = str(cluster.store[f"/registry/secrets/ns/{name}"][1])
    cluster.lists = {None: [listed]}
    progress = await _runner(cluster, MemorySink(), {"mode": "Full"}, etcd=False).run()
    assert progress.phase is Phase.SUCCEEDED
    assert "all selected objects rewritten" not in progress.message
    assert progress.message.startswith("0 of 2 objects rewritten, 2 already current")
    assert "unverified" in progress.message


class OutageEndingMidPage(FakeCluster):
    """An apiserver whose first write of ``name`` times out (504): etcd was away, and is back
    by the time the page's writes are done, so /readyz and etcd both answer at the check."""

    def __init__(self, secrets: dict[str, bytes], name: str) -> None:
        super().__init__(secrets)
        self.timeouts = {name}

    async def patch(self, path: str, body: Any, **options: Any) -> dict[str, Any]:
        name = path.rsplit("/", 1)[1]
        if name in self.timeouts:
            self.timeouts.discard(name)
            raise api_error(504, {"reason": "Timeout", "message": "etcd request timed out"})
        return await super().patch(path, body, **options)


async def test_writes_that_ran_out_of_retries_as_an_outage_ended_are_written_again() -> None:
    # Measured on the real cluster (test_engine_etcd_outage.py): a page whose writes timed out
    # while etcd was stopped was committed as failed when etcd was back by the check, leaving
    # 8 objects stale and the migration Failed.
    cluster = OutageEndingMidPage({"a": STALE, "b": STALE, "c": STALE}, name="b")
    progress = await _runner(cluster, MemorySink(), {"mode": "Targeted"}).run()
    assert progress.phase is Phase.SUCCEEDED, progress.message
    assert cluster.store["/registry/secrets/ns/b"][0] == CURRENT
    counts = progress.resources[0].counts
    assert counts.failed == 0
    assert counts.done == 3  # each object counted once, the redone page included
    assert progress.failures_total == 0


# ---- issue 10: a resumed Targeted walk counts what the killed process already rewrote -------------


async def test_a_resumed_targeted_walk_counts_objects_already_current_as_unchanged() -> None:
    # Measured on the real cluster (test_faults_kills.py[Targeted], test_faults_restarts.py): after a
    # kill or an apiserver restart, objects rewritten after the last checkpoint were current when the
    # resumed walk reached them, were skipped and counted nowhere: 1-26 of 916 objects missing.
    cluster = FakeCluster({"a": CURRENT, "b": CURRENT, "c": CURRENT, "d": STALE})  # b, c: uncommitted
    entry = ResourceProgress("", "v1", "secrets", ResourcePhase.MIGRATING, write_format="plaintext")
    entry.estimate = 4
    entry.counts = Counts(rewritten=1)
    entry.checkpoint = Checkpoint(last_key="/registry/secrets/ns/a", counts=Counts(rewritten=1))
    progress = await _runner(
        cluster, MemorySink(), {"mode": "Targeted"}, progress=_resumed(Phase.MIGRATING, "Targeted", entry)
    ).run()
    assert progress.phase is Phase.SUCCEEDED, progress.message
    assert cluster.patched == ["d"]  # b and c are current: never written again
    counts = progress.resources[0].counts
    assert (counts.rewritten, counts.unchanged, counts.done) == (2, 2, 4)
    assert progress.totals().objects_total == 4
