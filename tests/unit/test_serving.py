"""kopf restarted when it started without the StorageMigration resource (pure control flow)."""

from __future__ import annotations

import asyncio

import pytest
from kopf._cogs.structs.references import Insights, Resource

from kms_storage_migrator import serving

OURS = Resource(group="kms-storage-migrator.io", version="v1alpha1", plural="storagemigrations")


class FakeKopf:
    """kopf's observable part: the first runs resolve ``resolved[i]``, then wait for the stop flag."""

    def __init__(self, *resolved: bool) -> None:
        self.resolved = list(resolved)
        self.runs = 0

    async def __call__(self, insights: Insights, stop: asyncio.Event) -> None:
        served = self.resolved[self.runs]
        self.runs += 1
        if served:
            insights.watched_resources.add(OURS)
        insights.ready_resources.set()
        if served:
            return  # serves until a signal: here it returns at once
        await stop.wait()


async def test_kopf_that_resolved_the_resource_runs_once() -> None:
    kopf = FakeKopf(True)
    await serving.serve_until_stopped(kopf, _always(True), group=OURS.group, plural=OURS.plural)
    assert kopf.runs == 1


async def test_kopf_that_missed_the_resource_is_restarted_once_discovery_lists_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kopf = FakeKopf(False, True)
    polls: list[int] = []

    async def served() -> bool:
        polls.append(1)
        return len(polls) >= 2  # the apiserver lists the CRD group from its second poll on

    monkeypatch.setattr(serving, "DISCOVERY_POLL_SECONDS", 0.0)
    await serving.serve_until_stopped(kopf, served, group=OURS.group, plural=OURS.plural)
    assert kopf.runs == 2
    assert len(polls) == 2


async def test_kopf_stopping_before_its_first_scan_ends_the_operator() -> None:
    async def stopped_at_once(insights: Insights, stop: asyncio.Event) -> None:
        return None

    await asyncio.wait_for(
        serving.serve_until_stopped(stopped_at_once, _always(True), group=OURS.group, plural=OURS.plural), 5
    )


def _always(value: bool):  # type: ignore[no-untyped-def]
    async def answer() -> bool:
        return value

    return answer
