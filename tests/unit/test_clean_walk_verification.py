"""Verification after a Targeted walk that found a resource entirely current.

It lists keys and revisions only, and reads back what changed since the walk (or what the walk
did not read); everything else is judged by its revision. These tests change etcd between the
walk and the verification, where a stale value, a new key or a deleted one must still be seen.
Against the real etcd: tests/integration/test_verify_clean_walk.py.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from test_rewrite_engine import CURRENT, STALE, FakeCluster, MemorySink, _runner

from kms_storage_migrator.migration import verify
from kms_storage_migrator.migration.progress import MigrationProgress, Phase, VerificationResult

SECRETS = "/registry/secrets/"
NAMES = [f"s{i:02}" for i in range(30)]


class BeforeVerifying(MemorySink):
    """Runs ``change`` on the cluster once the walk is over, just before verification reads."""

    def __init__(self, change: Callable[[], None]) -> None:
        super().__init__()
        self._change = change

    async def event(self, kind: str, reason: str, message: str) -> None:
        await super().event(kind, reason, message)
        if reason == "Verifying":
            self._change()


def _value_reads(cluster: FakeCluster) -> list[bool]:
    """Whether each scan of the Secrets read values (False) or keys only (True), in order."""
    return [keys_only for prefix, keys_only in cluster.scans if prefix == SECRETS]


async def _run(cluster: FakeCluster, change: Callable[[], None] = lambda: None) -> MigrationProgress:
    return await _runner(cluster, BeforeVerifying(change), {"mode": "Targeted", "pageSize": 10}).run()


async def test_an_all_current_resource_is_verified_from_keys_and_revisions() -> None:
    cluster = FakeCluster(dict.fromkeys(NAMES, CURRENT))
    progress = await _run(cluster)

    assert progress.phase is Phase.SUCCEEDED, progress.message
    verification = progress.verification
    assert verification is not None
    assert verification.result is VerificationResult.VERIFIED
    assert verification.scanned == len(NAMES)
    # The probe read, the walk's values, then keys only: the values are not read a second time.
    assert _value_reads(cluster) == [False, False, True]
    # The probe's key came before the walk: read back, not taken on trust.
    assert f"{len(NAMES) - 1} unchanged since the walk" in verification.message


async def test_a_value_made_stale_after_the_walk_is_read_back_and_found() -> None:
    cluster = FakeCluster(dict.fromkeys(NAMES, CURRENT))
    victim = f"{SECRETS}ns/s17"

    def stale_it() -> None:
        cluster.store[victim] = (STALE, cluster._next())

    progress = await _run(cluster, stale_it)

    verification = progress.verification
    assert verification is not None
    assert verification.result is VerificationResult.STALE_FOUND
    assert verification.stale == 1
    assert any("ns/s17" in example for example in verification.examples)
    assert progress.phase is Phase.FAILED


async def test_keys_created_and_deleted_after_the_walk_are_counted_as_they_are_now() -> None:
    cluster = FakeCluster(dict.fromkeys(NAMES, CURRENT))

    def churn() -> None:
        del cluster.store[f"{SECRETS}ns/s03"]
        cluster.store[f"{SECRETS}ns/zz-new"] = (STALE, cluster._next())  # written behind the API

    progress = await _run(cluster, churn)

    verification = progress.verification
    assert verification is not None
    assert verification.scanned == len(NAMES)  # one gone, one new
    assert verification.stale == 1
    assert any("ns/zz-new" in example for example in verification.examples)


async def test_a_resource_the_walk_wrote_to_is_read_again_in_full() -> None:
    """A written object may have come out unchanged (a no-op the apiserver skipped): only its
    value says, so a walk that had anything to write earns no shortcut."""
    cluster = FakeCluster({**dict.fromkeys(NAMES, CURRENT), "s20": STALE})
    progress = await _run(cluster)

    assert progress.phase is Phase.SUCCEEDED, progress.message
    assert _value_reads(cluster) == [False, False, False]
    assert progress.verification is not None
    assert "unchanged since the walk" not in progress.verification.message


async def test_when_much_changed_the_resource_is_read_in_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verify, "MAX_CHANGED_READS", 3)
    cluster = FakeCluster(dict.fromkeys(NAMES, CURRENT))

    def rewrite_many() -> None:
        for name in NAMES[10:20]:
            key = f"{SECRETS}ns/{name}"
            cluster.store[key] = (CURRENT, cluster._next())

    progress = await _run(cluster, rewrite_many)

    assert progress.phase is Phase.SUCCEEDED, progress.message
    assert _value_reads(cluster) == [False, False, True, False]  # gave up on keys only
    assert progress.verification is not None
    assert progress.verification.scanned == len(NAMES)
