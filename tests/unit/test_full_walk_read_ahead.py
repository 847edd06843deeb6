"""The Full walk lists page n+1 while page n is written, and judges that list only afterwards.

An in-memory apiserver answers list pages by continue token; the test plays the driver (writes,
then commits each page) and records what happened in which order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from kms_storage_migrator.kube import ApiError
from kms_storage_migrator.migration.full_walk import FullWalk
from kms_storage_migrator.migration.progress import MigrationProgress, ResourceProgress
from kms_storage_migrator.migration.ratelimit import AdaptiveRateLimiter
from kms_storage_migrator.migration.resource_choice import ServedResource
from kms_storage_migrator.migration.rewrite import NoObserver

CONFIGMAPS = ServedResource("", "v1", "configmaps", "ConfigMap", namespaced=True)
NAMES = ["a", "b", "c", "d", "e", "f"]  # three pages of two


def _item(name: str) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": name, "resourceVersion": "7", "uid": f"uid-{name}"}}


class PagedApi:
    """Pages of two in key order; a token is the index of the page's first object."""

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.gone_once: set[str] = set()  # tokens answered 410 without a fresh token, once each

    async def list_metadata(self, path: str, *, limit: int, continue_token: str | None) -> dict[str, Any]:
        start = int(continue_token or 0)
        self.events.append(f"list {start}")
        await asyncio.sleep(0)
        if continue_token in self.gone_once:
            self.gone_once.discard(continue_token)
            raise ApiError(410, "Expired", "the resourceVersion is too old")
        chunk = NAMES[start : start + limit]
        following = start + limit
        more = following < len(NAMES)
        metadata = {"continue": str(following) if more else "", "remainingItemCount": len(NAMES) - following}
        return {"metadata": metadata, "items": [_item(n) for n in chunk]}

    async def get_json(self, path: str) -> dict[str, Any]:
        raise AssertionError("the walk reads no single objects")

    async def patch(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        content_type: str = "",
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        raise AssertionError("the walk writes nothing")


async def _drive(api: PagedApi, events: list[str], entry: ResourceProgress) -> list[list[str]]:
    """What the driver does: write a page (yielding to the loop meanwhile), then commit it."""
    walk = FullWalk(api, AdaptiveRateLimiter(10_000), NoObserver(), MigrationProgress(), page_size=2)
    written = []
    async for page in walk.pages(entry, CONFIGMAPS):
        names = [target.name for target in page.targets]
        events.append(f"write {names}")
        for _ in range(3):
            await asyncio.sleep(0)  # the page's writes are in flight
        events.append(f"commit {names}")
        entry.commit(continue_token=page.continue_token, last_key=page.last_key)
        written.append(names)
    return written


async def test_the_next_page_is_listed_while_this_one_is_written() -> None:
    events: list[str] = []
    entry = ResourceProgress("", "v1", "configmaps")

    written = await _drive(PagedApi(events), events, entry)

    assert written == [["a", "b"], ["c", "d"], ["e", "f"]]
    # The list of the next page goes out before the page in hand is committed ...
    assert events.index("list 2") < events.index("commit ['a', 'b']")
    assert events.index("list 4") < events.index("commit ['c', 'd']")
    # ... and each page is listed exactly once: nothing is read ahead past the last page.
    assert [e for e in events if e.startswith("list")] == ["list 0", "list 2", "list 4"]
    assert entry.checkpoint.last_key == "ns/f"


async def test_a_failed_read_ahead_is_listed_again_after_the_commit_not_judged() -> None:
    # The list read ahead meets a 410 (say, during a compaction that has passed by the time the
    # page before it is committed): the walk lists that page again rather than restart.
    events: list[str] = []
    api = PagedApi(events)
    api.gone_once.add("2")
    entry = ResourceProgress("", "v1", "configmaps")

    written = await _drive(api, events, entry)

    assert written == [["a", "b"], ["c", "d"], ["e", "f"]]
    lists = [i for i, e in enumerate(events) if e == "list 2"]
    assert len(lists) == 2  # the failed read-ahead, then the same page once more ...
    assert lists[1] > events.index("commit ['a', 'b']")  # ... after page 1 is committed
    assert "list 0" not in events[1:]  # no restart from the beginning


async def test_a_410_on_the_page_itself_restarts_after_the_commit_and_skips_what_it_counts() -> None:
    # Both the read-ahead and the list after the commit expire without a fresh token: the walk
    # lists from the start, after page 1 is committed, and skips what that checkpoint counts.
    events: list[str] = []
    api = PagedApi(events)
    entry = ResourceProgress("", "v1", "configmaps")
    original = api.list_metadata
    expired = {"2": 2}

    async def expiring(path: str, *, limit: int, continue_token: str | None) -> dict[str, Any]:
        if expired.get(continue_token or "", 0):
            expired[continue_token or ""] -= 1
            events.append(f"list {continue_token} (410)")
            raise ApiError(410, "Expired", "the resourceVersion is too old")
        return await original(path, limit=limit, continue_token=continue_token)

    api.list_metadata = expiring  # type: ignore[method-assign]

    written = await _drive(api, events, entry)

    # The page listed again from the start holds only objects the checkpoint counts: empty.
    assert written == [["a", "b"], [], ["c", "d"], ["e", "f"]]
    assert events.index("list 2 (410)") < events.index("commit ['a', 'b']")  # read ahead
    restart = events.index("list 0", 1)
    assert restart > events.index("commit ['a', 'b']")
