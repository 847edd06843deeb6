"""Run kopf so that it serves StorageMigrations, even when started during an apiserver restart.

kopf resolves the resources it serves once, from API discovery, when it starts; later it
rescans only when a CRD changes. An apiserver that is restarting lists no CRD groups for its
first seconds, so a kopf started (or scanning) then logs "Unresolved resources cannot be
served" and ignores every StorageMigration from then on (measured: 4 minutes, until stopped).
Here kopf is run with an ``Insights`` of our own: once its first scan is done, if our
resource is not among those it watches, kopf is stopped, discovery is polled until the
resource is served, and kopf is started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from kopf._cogs.structs.references import Insights  # kopf.operator(insights=...) takes this type

from kms_storage_migrator.kube import KubeApi

__all__ = ["Insights", "discovery_lists", "serve_until_stopped", "serves"]

log = logging.getLogger(__name__)

DISCOVERY_POLL_SECONDS = 2.0

RunKopf = Callable[[Insights, asyncio.Event], Awaitable[None]]


def serves(insights: Insights, group: str, plural: str) -> bool:
    return any(r.group == group and r.plural == plural for r in insights.watched_resources)


async def serve_until_stopped(
    run_kopf: RunKopf, resource_served: Callable[[], Awaitable[bool]], *, group: str, plural: str
) -> None:
    """Run kopf until it returns by itself; restart it whenever it starts without our resource."""
    while True:
        insights, stop = Insights(), asyncio.Event()
        kopf_task = asyncio.ensure_future(run_kopf(insights, stop))
        ready = asyncio.ensure_future(insights.ready_resources.wait())
        try:
            await asyncio.wait({kopf_task, ready}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if kopf_task.done():
            kopf_task.result()  # kopf stopped by itself (a signal): so do we; its error is ours
            return
        if serves(insights, group, plural):
            await kopf_task
            return
        log.warning(
            "kopf started without %s.%s in API discovery (was the apiserver restarting?): "
            "restarting it once the resource is served",
            plural,
            group,
        )
        stop.set()
        await kopf_task
        await _wait_until_served(resource_served)


async def _wait_until_served(resource_served: Callable[[], Awaitable[bool]]) -> None:
    while True:
        with contextlib.suppress(Exception):  # any failure here is "not yet": poll again
            if await resource_served():
                return
        await asyncio.sleep(DISCOVERY_POLL_SECONDS)


async def discovery_lists(api: KubeApi, group: str, version: str, plural: str) -> bool:
    """Whether API discovery lists the resource (what kopf's scan reads).

    kopf is stopped meanwhile, and its cleanup closed the client: it is opened for the poll.
    """
    async with api:
        document = await api.get_json(f"/apis/{group}/{version}")
    return any(r.get("name") == plural for r in document.get("resources") or [])
