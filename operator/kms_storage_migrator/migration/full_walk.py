"""The Full walk: every object of a resource, from metadata-only list pages, and its checkpoint.

The checkpoint is the list continue token of the next page and the last object done
(``namespace/name``: lists come in etcd key order). A 410 on an expired continue token resumes
from the fresh token in the 410 Status; a 410 without one lists again from the start, skipping
what the checkpoint already counts; after MAX_LIST_RESTARTS such restarts the resource is given up.
A page that fails on a value the apiserver cannot decode is narrowed, then stepped past
(``unreadable.py``): the object is reported, every other one is still written.

While the driver writes a page, the next one is already being listed (one page read ahead):
otherwise the slowest write of each page holds the next list back. Only the request goes out
early; its answer is taken, and any error handled, once the driver has committed the page, so
checkpoints, restarts and skips happen in the same order as without it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from kms_storage_migrator.admission.mutation import ListedMetadata
from kms_storage_migrator.kube import ApiError, TransportError
from kms_storage_migrator.migration.boundary import ResourceAbandoned, as_retryable
from kms_storage_migrator.migration.ports import ApiPort
from kms_storage_migrator.migration.progress import MigrationProgress, ResourcePhase, ResourceProgress
from kms_storage_migrator.migration.ratelimit import AdaptiveRateLimiter, RetryableFailure, transient_retrying
from kms_storage_migrator.migration.resource_choice import ServedResource
from kms_storage_migrator.migration.rewrite import RewriteObserver, RewriteTarget
from kms_storage_migrator.migration.unreadable import (
    Unreadable,
    token_after,
    token_revision,
    unreadable_object,
)
from kms_storage_migrator.migration.walk import Page

log = logging.getLogger(__name__)

LIST_ATTEMPTS = 5
# Causes of walk restarts, as the walk_restarts metric names them.
CONTINUE_EXPIRED = "continue-expired"  # 410 with a fresh token: resumed from it
LIST_RESTARTED = "list-restarted"  # 410 without one: listed again from the start
# More restarts than this mean the walk outlasts etcd compaction: the resource is given up.
MAX_LIST_RESTARTS = 3

Listing = asyncio.Task[dict[str, Any]]  # a list page requested ahead of its turn


class FullWalk:
    redo_writes = True  # a relisted page is written again, object by object

    def __init__(
        self,
        api: ApiPort,
        limiter: AdaptiveRateLimiter,
        observer: RewriteObserver,
        progress: MigrationProgress,
        *,
        page_size: int,
    ) -> None:
        self._api = api
        self._limiter = limiter
        self._observer = observer
        self._progress = progress
        self._page_size = page_size

    async def prepare(self, pending: list[tuple[ResourceProgress, ServedResource]]) -> None:
        """One-object list per resource: remainingItemCount gives the total before any write."""
        for entry, served in pending:
            if entry.estimate or entry.checkpoint.continue_token:
                continue
            try:
                page = await self._api.list_metadata(served.collection_path(), limit=1, continue_token=None)
            except (ApiError, TransportError) as error:
                log.info("%s: no estimate (%s)", entry.name, error)
                continue
            items = len(page.get("items") or [])
            entry.estimate = items + int((page.get("metadata") or {}).get("remainingItemCount") or 0)

    async def pages(self, entry: ResourceProgress, served: ServedResource) -> AsyncIterator[Page]:
        token = entry.checkpoint.continue_token
        restarts = 0
        limit = self._page_size
        passed: str | None = None  # the last undecodable object stepped past
        ahead: Listing | None = None  # the page at `token`, listed early
        try:
            while True:
                try:
                    early, ahead = ahead, None
                    listed = await self._take(early, served, token, limit)
                except ApiError as error:
                    if error.corrupt_keys:
                        if limit > 1:
                            # Narrow the pages until the undecodable object is one's first: every
                            # object before it is still listed and written. They stay narrow until
                            # the walk is past it.
                            limit = max(1, limit // 4)
                            continue
                        bad, token = await self._step_past(error, token, served, passed)
                        passed, limit = bad.list_key, self._page_size
                        yield Page([], bad.list_key, token, unreadable=(bad,))
                        continue
                    if error.status == 410:
                        fresh = str((error.body.get("metadata") or {}).get("continue") or "") or None
                        if fresh is None:
                            restarts += 1
                            self._observer.walk_restarted(entry.name, LIST_RESTARTED)
                            self._restart(entry, restarts)
                        else:
                            self._observer.walk_restarted(entry.name, CONTINUE_EXPIRED)
                            log.info("%s: continue token expired, resuming from the 410's", entry.name)
                        token = fresh
                        continue
                    if error.status == 404:
                        entry.phase = ResourcePhase.DONE
                        entry.message = "no longer served"
                        return
                    raise ResourceAbandoned(
                        f"cannot list: {error.status} {error.reason}: {error.message}"
                    ) from error
                metadata = listed.get("metadata") or {}
                # After a restart, skip what the checkpoint already counts (a list is in key order).
                done_until = entry.checkpoint.last_key
                items = [i for i in listed.get("items") or [] if _after(list_key(i), done_until)]
                remaining = int(metadata.get("remainingItemCount") or 0)
                entry.estimate = max(entry.estimate, entry.counts.done + len(items) + remaining)
                token = str(metadata.get("continue") or "") or None
                last = list_key(items[-1]) if items else entry.checkpoint.last_key
                page = Page([_target(served, item) for item in items], last, token, final=token is None)
                if token is not None:
                    ahead = _read_ahead(self._list_page(served, token, limit))
                yield page
                if token is None:
                    return
        finally:
            if ahead is not None:
                ahead.cancel()  # the driver left early (stop, suspend, a failure): drop the list

    async def _take(
        self, ahead: Listing | None, served: ServedResource, token: str | None, limit: int
    ) -> dict[str, Any]:
        """The page at ``token``: the one read ahead if it came back, else listed now.

        A read-ahead that failed is listed again rather than judged: it may have failed during
        an outage that has ended while the page before it was written, and an error judged
        now is judged exactly as without read-ahead.
        """
        if ahead is not None:
            try:
                return await ahead
            except (ApiError, TransportError, RetryableFailure) as error:
                log.debug("%s: the page read ahead failed (%s); listing it again", served.name, error)
        return await self._list_page(served, token, limit)

    async def _step_past(
        self, error: ApiError, token: str | None, served: ServedResource, passed: str | None
    ) -> tuple[Unreadable, str]:
        """The undecodable object a one-object page failed on, and a continue token after it."""
        bad = unreadable_object(error.corrupt_keys[0], namespaced=served.namespaced)
        revision = token_revision(token)
        if (token is not None and revision is None) or (passed is not None and bad.list_key <= passed):
            # A token of another format, or one the apiserver did not follow: no safe way on.
            raise ResourceAbandoned(f"cannot list past {bad.etcd_key}: {error.message}") from error
        log.warning("%s: %s cannot be decoded; listing on after it", served.name, bad.etcd_key)
        return bad, token_after(bad.list_key, revision or await self._revision_now())

    def _restart(self, entry: ResourceProgress, restarts: int) -> None:
        """A 410 without a fresh token: list again from the start, counting from the checkpoint."""
        if restarts > MAX_LIST_RESTARTS:
            raise ResourceAbandoned(
                f"the list expired (410 Gone) {restarts} times with no continue token to resume from: "
                "the walk outlasts etcd compaction; retry with a larger pageSize or qps"
            )
        log.warning("%s: list expired with no fresh continue token, restart %d", entry.name, restarts)
        self._progress.rewind(entry)  # drop the page that was cut short; keep committed counts

    async def _list_page(self, served: ServedResource, token: str | None, limit: int) -> dict[str, Any]:
        """One metadata-only page, under the same limiter and retry policy as the writes.

        Retries that run out raise RetryableFailure: the boundary reads that as an outage.
        """
        async for attempt in transient_retrying(LIST_ATTEMPTS):
            with attempt:
                return await self._list_once(served.name, served.collection_path(), token, limit)
        raise AssertionError("unreachable: tenacity either returns or re-raises")  # pragma: no cover

    async def _revision_now(self) -> int:
        """The store's current revision (a list's resourceVersion), for a walk with no token yet."""
        async for attempt in transient_retrying(LIST_ATTEMPTS):
            with attempt:
                listed = await self._list_once("core/namespaces", "/api/v1/namespaces", None, 1)
                return int((listed.get("metadata") or {}).get("resourceVersion") or 0)
        raise AssertionError("unreachable: tenacity either returns or re-raises")  # pragma: no cover

    async def _list_once(self, resource: str, path: str, token: str | None, limit: int) -> dict[str, Any]:
        await self._limiter.acquire()
        started = time.monotonic()
        code = "200"
        try:
            return await self._api.list_metadata(path, limit=limit, continue_token=token)
        except (ApiError, TransportError) as error:
            code = "transport" if isinstance(error, TransportError) else str(error.status)
            if isinstance(error, ApiError) and error.corrupt_keys:
                raise  # an answer about the data, not a transient failure: the walk steps past it
            retryable = as_retryable(error)
            if retryable is None:
                raise
            if isinstance(error, ApiError):
                self._limiter.overloaded()
            raise retryable from error
        finally:
            self._observer.request_done(resource, code, time.monotonic() - started)


def _read_ahead(listing: Coroutine[Any, Any, dict[str, Any]]) -> Listing:
    task = asyncio.ensure_future(listing)
    # Its error is dropped when the walk ends first; read it so asyncio does not log it as lost.
    task.add_done_callback(lambda done: done.cancelled() or done.exception())
    return task


def list_key(item: dict[str, Any]) -> str:
    """Where a listed object sorts: lists come in etcd key order, i.e. by namespace/name."""
    metadata = item.get("metadata") or {}
    namespace = str(metadata.get("namespace") or "")
    name = str(metadata.get("name") or "")
    return f"{namespace}/{name}" if namespace else name


def _after(key: str, checkpoint_key: str | None) -> bool:
    return checkpoint_key is None or key > checkpoint_key


def _target(served: ServedResource, item: dict[str, Any]) -> RewriteTarget:
    metadata = item.get("metadata") or {}
    return RewriteTarget(
        served,
        metadata.get("namespace") or None,
        str(metadata.get("name") or ""),
        str(metadata.get("resourceVersion") or ""),
        str(metadata.get("uid") or "") or None,
        # What admission could change on our write, as listed: the mutation guard compares it.
        ListedMetadata.of(metadata),
    )


def adopt_etcd_checkpoint(entry: ResourceProgress, prefix: str) -> None:
    """A Targeted checkpoint (the last etcd key done) as the Full list position it names.

    Keys are ``<prefix><namespace>/<name>``, in the order lists come in, so the walk lists from
    the start and skips what the checkpoint already counts; counts stay as they are.
    """
    last = entry.checkpoint.last_key
    entry.checkpoint.last_key = last[len(prefix) :] if last and last.startswith(prefix) else last
    entry.checkpoint.continue_token = None
