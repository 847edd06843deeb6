"""One migration end to end: discover, (scan), rewrite, verify; progress out to a sink.

Usable without kopf: give it a :class:`KubeApi`, an optional :class:`EtcdReader`, the spec,
the progress to resume from, and a sink that stores the status document and records events.
Every page end is committed to the checkpoint and published, so a killed operator resumes
at most one page back and reaches the same end state.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any, Protocol

from kms_storage_migrator.errors import UserError
from kms_storage_migrator.kube import ApiError, KubeApi, TransportError
from kms_storage_migrator.migration.discovery import DiscoveryError, DiscoveryResult, ServedResource, discover
from kms_storage_migrator.migration.plan import (
    MigrationSpec,
    Mode,
    PlanError,
    StaleTally,
    is_rewritable,
    is_stale,
    resolve_mode,
    write_format_label,
)
from kms_storage_migrator.migration.progress import (
    FAILED_OUTCOMES,
    MAX_FAILURES,
    TERMINAL_PHASES,
    Failure,
    MigrationProgress,
    Outcome,
    Phase,
    ResourcePhase,
    ResourceProgress,
    Verification,
    VerificationResult,
    to_status,
)
from kms_storage_migrator.migration.ratelimit import (
    AdaptiveRateLimiter,
    RetryableFailure,
    is_retryable_status,
    transient_retrying,
)
from kms_storage_migrator.migration.rewrite import (
    NoObserver,
    RewriteMethod,
    RewriteObserver,
    Rewriter,
    RewriteResult,
    RewriteTarget,
)
from kms_storage_migrator.migration.verify import (
    StoredObject,
    object_key,
    read_format,
    resource_index,
    stored_objects,
    verify_resources,
)
from kms_storage_migrator.storage.etcd import EtcdReader
from kms_storage_migrator.storage.formats import FormatKind
from kms_storage_migrator.storage.keys import DEFAULT_ROOT, ResourceIndex

log = logging.getLogger(__name__)

STATUS_INTERVAL_SECONDS = 3.0
CANARY_CANDIDATES = 5  # objects tried per resource to learn its current write format
# A resource whose first writes are all forbidden is skipped instead of failing object by object.
FORBIDDEN_STREAK_LIMIT = 10
LIST_ATTEMPTS = 5
# A Full walk restarts from the beginning after a 410 with no fresh continue token; more
# restarts than this mean the walk outlasts etcd compaction, and the resource is given up.
MAX_LIST_RESTARTS = 3
# The final status carries the outcome: tried this often (transient policy) before kopf retries.
FINAL_PUBLISH_ATTEMPTS = 8


class MigrationSink(Protocol):
    """Where a running migration reports: the CR status and its events (or anything else)."""

    async def publish(self, status: dict[str, Any]) -> None: ...

    async def event(self, kind: str, reason: str, message: str) -> None: ...


class MigrationObserver(RewriteObserver, Protocol):
    def outcome(self, resource: str, outcome: Outcome) -> None: ...

    def status(self, phase: Phase, remaining: int) -> None: ...


class NullObserver(NoObserver):
    def outcome(self, resource: str, outcome: Outcome) -> None:
        return None

    def status(self, phase: Phase, remaining: int) -> None:
        return None


class MigrationStopped(Exception):
    """The migration was asked to stop (deleted, or the operator is exiting): leave status as is."""


class _ResourceAbandoned(Exception):
    """This resource cannot be migrated at all (e.g. every write forbidden): move on to the next."""


class FinalStatusNotPublished(Exception):
    """The terminal status could not be stored: the caller must run the migration again later."""


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class MigrationRunner:
    def __init__(
        self,
        api: KubeApi,
        spec: MigrationSpec,
        progress: MigrationProgress,
        sink: MigrationSink,
        *,
        etcd: EtcdReader | None = None,
        observer: MigrationObserver | None = None,
        canary_key: str | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        method: RewriteMethod = RewriteMethod.MERGE_PATCH,
        generation: int | None = None,
        status_interval: float = STATUS_INTERVAL_SECONDS,
        etcd_prefix: str = DEFAULT_ROOT,
    ) -> None:
        self.progress = progress
        self._api = api
        self._spec = spec
        self._sink = sink
        self._etcd = etcd
        self._observer: MigrationObserver = observer or NullObserver()
        self._canary_key = canary_key
        self._should_stop = should_stop
        self._generation = generation
        self._status_interval = status_interval
        self._limiter = AdaptiveRateLimiter(spec.qps)
        self._rewriter = Rewriter(
            api, self._limiter, max_attempts=spec.max_attempts, method=method, observer=observer
        )
        self._served: dict[str, ServedResource] = {}
        self._index: ResourceIndex = {}
        self._reference_label: str | None = None  # current write format of our own CR (a free canary)
        self._root = etcd_prefix.rstrip("/") or DEFAULT_ROOT  # the apiserver's --etcd-prefix
        self._learning: set[str] = set()
        self._forbidden_streak: dict[str, int] = {}
        self._published_at = 0.0
        self._publish_lock = asyncio.Lock()

    # ---- entry point -------------------------------------------------------------------------

    async def run(self) -> MigrationProgress:
        progress = self.progress
        if progress.phase in TERMINAL_PHASES:
            return progress
        progress.start_time = progress.start_time or utc_now()
        progress.observed_generation = self._generation
        ticker = asyncio.create_task(self._tick())
        try:
            await self._run_phases()
        except (PlanError, DiscoveryError) as error:
            await self._finish(Phase.FAILED, str(error))
        except ApiError as error:
            await self._finish(Phase.FAILED, f"the apiserver refused a request the migration needs: {error}")
        except UserError as error:
            # The etcd reader's own retries are exhausted: say which endpoint, rather than loop.
            await self._finish(Phase.FAILED, str(error))
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        return progress

    async def _run_phases(self) -> None:
        progress = self.progress
        mode = resolve_mode(self._spec.mode, self._etcd is not None)
        progress.mode = mode.value
        resumed_phase = progress.phase
        await self._enter(
            Phase.DISCOVERING, f"discovering resource types ({self._spec.selection.describe()})"
        )
        await self._learn_reference_format()
        await self._discover()
        if mode is Mode.VERIFY_ONLY:
            await self._verify(final_mode=mode)
            return
        if mode is Mode.TARGETED:
            if resumed_phase not in (Phase.MIGRATING, Phase.VERIFYING):
                await self._scan_targeted()
            await self._migrate(self._migrate_targeted)
        else:
            await self._estimate_full()
            await self._migrate(self._migrate_full)
        await self._verify(final_mode=mode)

    # ---- phases -------------------------------------------------------------------------------

    async def _discover(self) -> None:
        result: DiscoveryResult = await discover(self._api, self._spec.selection)
        if not result.chosen:
            raise PlanError(
                f"spec.resources: the selection matches no served resource that can be migrated "
                f"({self._spec.selection.describe()})"
            )
        self._served = {r.name: r for r in result.chosen}
        self._index = resource_index(result.chosen)
        progress = self.progress
        progress.dropped = list(result.dropped)
        known = {r.name for r in progress.resources}
        for served in result.chosen:
            if served.name not in known:
                progress.resources.append(ResourceProgress(served.group, served.version, served.resource))
        for entry in progress.resources:
            if entry.name not in self._served and entry.phase not in (
                ResourcePhase.DONE,
                ResourcePhase.FAILED,
            ):
                entry.phase = ResourcePhase.DONE
                entry.message = "no longer served"
        progress.resources.sort(key=lambda r: r.name)
        await self._publish(force=True)

    async def _scan_targeted(self) -> None:
        assert self._etcd is not None
        await self._enter(
            Phase.SCANNING, f"scanning etcd for stale objects in {len(self._served)} resource types"
        )
        for entry, served in self._pending_resources():
            await self._learn_by_canary(entry, served)
            label = entry.write_format or self._reference_label
            if label is None:
                entry.phase = ResourcePhase.FAILED
                entry.message = "cannot learn the current write format (no object could be rewritten)"
                continue
            tally = await self._count_stale(served, label, after_key=entry.checkpoint.last_key)
            entry.scanned = tally.scanned
            entry.estimate = entry.counts.done + tally.stale
            await self._publish()
        await self._publish(force=True)

    async def _count_stale(self, served: ServedResource, label: str, *, after_key: str | None) -> StaleTally:
        """Keys of one resource, and how many after ``after_key`` (past the canaries) are stale."""
        assert self._etcd is not None
        tally = StaleTally()
        async for page in self._stored(served, self._spec.page_size):
            self._check_stop()
            for item in page:
                tally.scanned += 1
                done = after_key is not None and item.key <= after_key
                if not done and _needs_rewrite(item, label):
                    tally.stale += 1
        return tally

    def _stored(
        self, served: ServedResource, page_size: int, *, after_key: str | None = None
    ) -> AsyncGenerator[list[StoredObject], None]:
        assert self._etcd is not None
        return stored_objects(
            self._etcd, served, self._index, page_size, after_key=after_key, root=self._root
        )

    async def _estimate_full(self) -> None:
        """One-object list per resource: remainingItemCount gives the total before any write."""
        for entry, served in self._pending_resources():
            if entry.estimate or entry.checkpoint.continue_token:
                continue
            try:
                page = await self._api.list_metadata(served.collection_path(), limit=1, continue_token=None)
            except (ApiError, TransportError) as error:
                log.info("%s: no estimate (%s)", entry.name, error)
                continue
            items = len(page.get("items") or [])
            entry.estimate = items + int((page.get("metadata") or {}).get("remainingItemCount") or 0)

    async def _migrate(self, migrate_resource: Callable[[ResourceProgress, ServedResource], Any]) -> None:
        total = sum(max(r.estimate, r.counts.done) for r in self.progress.resources)
        await self._enter(
            Phase.MIGRATING, f"rewriting objects of {len(self._served)} resource types (~{total} objects)"
        )
        for entry, served in self._pending_resources():
            entry.phase = ResourcePhase.MIGRATING
            self.progress.rewind(entry)
            try:
                await migrate_resource(entry, served)
            except _ResourceAbandoned as reason:
                entry.phase = ResourcePhase.FAILED
                entry.message = str(reason)
                await self._sink.event("Warning", "ResourceSkipped", f"{entry.name}: {reason}")
            await self._publish(force=True)

    async def _migrate_full(self, entry: ResourceProgress, served: ServedResource) -> None:
        token = entry.checkpoint.continue_token
        restarts = 0
        while True:
            self._check_stop()
            try:
                page = await self._list_page(served, token)
            except RetryableFailure as failure:
                raise _ResourceAbandoned(f"cannot list: {failure}") from failure
            except ApiError as error:
                if error.status == 410:
                    fresh = str((error.body.get("metadata") or {}).get("continue") or "") or None
                    if fresh is None:
                        restarts += 1
                        self._restart_listing(entry, restarts)
                    else:
                        # The continue token expired (etcd compacted): the Status carries a fresh one.
                        log.info("%s: continue token expired, resuming from the one in the 410", entry.name)
                    token = fresh
                    continue
                if error.status == 404:
                    entry.phase = ResourcePhase.DONE
                    entry.message = "no longer served"
                    return
                raise _ResourceAbandoned(
                    f"cannot list: {error.status} {error.reason}: {error.message}"
                ) from error
            all_items = page.get("items") or []
            metadata = page.get("metadata") or {}
            # After a restart, skip what the checkpoint already counts (a list is in key order).
            items = [i for i in all_items if _after(_list_key(i), entry.checkpoint.last_key)]
            remaining = int(metadata.get("remainingItemCount") or 0)
            entry.estimate = max(entry.estimate, entry.counts.done + len(items) + remaining)
            targets = [self._target_from_item(served, item) for item in items]
            await self._rewrite_all(entry, served, targets)
            token = str(metadata.get("continue") or "") or None
            if token is None:
                entry.phase = ResourcePhase.DONE
            last = _list_key(items[-1]) if items else entry.checkpoint.last_key
            entry.commit(continue_token=token, last_key=last)
            if token is None:
                return
            await self._publish(force=True)

    def _restart_listing(self, entry: ResourceProgress, restarts: int) -> None:
        """A 410 without a fresh token: list again from the start, counting from the checkpoint."""
        if restarts > MAX_LIST_RESTARTS:
            raise _ResourceAbandoned(
                f"the list expired (410 Gone) {restarts} times with no continue token to resume from: "
                "the walk outlasts etcd compaction; retry with a larger pageSize or qps"
            )
        log.warning("%s: list expired with no fresh continue token, restart %d", entry.name, restarts)
        self.progress.rewind(entry)  # drop the page that was cut short; keep committed counts

    async def _migrate_targeted(self, entry: ResourceProgress, served: ServedResource) -> None:
        assert self._etcd is not None
        label = entry.write_format or self._reference_label
        if label is None:
            raise _ResourceAbandoned("current write format unknown")
        if entry.scanned and entry.estimate <= entry.counts.done:
            entry.phase = ResourcePhase.DONE  # the scan found nothing stale: no second walk
            return
        # The checkpoint starts past the canaries (the first keys), which are already counted.
        after = entry.checkpoint.last_key
        async for page in self._stored(served, self._spec.page_size, after_key=after):
            self._check_stop()
            targets = [
                RewriteTarget(served, item.stored_key.namespace, item.stored_key.name, str(item.mod_revision))
                for item in page
                if _needs_rewrite(item, label)
            ]
            await self._rewrite_all(entry, served, targets)
            entry.commit(last_key=page[-1].key)
            await self._publish(force=True)
        entry.phase = ResourcePhase.DONE
        entry.commit(last_key=entry.checkpoint.last_key)

    async def _verify(self, *, final_mode: Mode) -> None:
        if self._etcd is None:
            self.progress.verification = Verification(
                VerificationResult.UNVERIFIED,
                message="no etcd access: the result is unverified (give the operator --etcd-config)",
            )
            failed = self.progress.failures_total or any(
                r.phase is ResourcePhase.FAILED for r in self.progress.resources
            )
            if failed:
                await self._finish(Phase.FAILED, self._failure_summary())
            else:
                await self._finish(
                    Phase.SUCCEEDED, "all selected objects rewritten (unverified: no etcd access)"
                )
            return
        await self._enter(Phase.VERIFYING, "reading every selected object back from etcd")
        resources = [(served, self._entry(name).write_format) for name, served in self._served.items()]
        report = await verify_resources(
            self._etcd,
            resources,
            self._index,
            self._spec.page_size,
            reference_label=self._reference_label,
            failed=[r.name for r in self.progress.resources if r.phase is ResourcePhase.FAILED],
            should_stop=self._should_stop,
            root=self._root,
        )
        self._check_stop()
        verification = report.verification()
        self.progress.verification = verification
        if final_mode is Mode.VERIFY_ONLY:
            message = f"verification only: {verification.stale} of {verification.scanned} objects stale"
            if report.needs_attention:
                message += "; " + "; ".join(report.needs_attention)
            await self._finish(Phase.SUCCEEDED, message)
        elif verification.result is VerificationResult.VERIFIED:
            await self._finish(
                Phase.SUCCEEDED, f"verified: all {verification.scanned} objects in the current format"
            )
        else:
            # Stale objects, or resources not checked or not migrated: never reported as success.
            problems = [
                f"{verification.stale} object(s) still stale after rewriting",
                *report.needs_attention,
            ]
            await self._finish(Phase.FAILED, "; ".join(problems))

    # ---- rewriting ----------------------------------------------------------------------------

    async def _rewrite_all(
        self, entry: ResourceProgress, served: ServedResource, targets: Sequence[RewriteTarget]
    ) -> None:
        if not targets:
            return
        semaphore = asyncio.Semaphore(self._spec.concurrency)

        async def rewrite_one(target: RewriteTarget) -> None:
            async with semaphore:
                self._check_stop()
                result = await self._rewriter.rewrite(target)
                await self._record(entry, served, result)

        try:
            async with asyncio.TaskGroup() as group:
                for target in targets:
                    group.create_task(rewrite_one(target))
        except BaseExceptionGroup as errors:
            raise errors.exceptions[0] from None

    async def _record(self, entry: ResourceProgress, served: ServedResource, result: RewriteResult) -> None:
        entry.counts.record(result.outcome)
        entry.counts.retries += result.attempts - 1
        self._observer.outcome(entry.name, result.outcome)
        if result.outcome in FAILED_OUTCOMES:
            await self._record_failure(entry, result)
            return
        self._forbidden_streak[entry.name] = -1  # one success: the resource is writable
        learnable = result.outcome in (Outcome.REWRITTEN, Outcome.UNCHANGED)
        if learnable and entry.write_format is None and entry.name not in self._learning:
            self._learning.add(entry.name)  # one read-back per resource, not one per parallel write
            target = result.target
            try:
                key = object_key(served, self._index, target.namespace, target.name, root=self._root)
                await self._learn_write_format(entry, served, key)
            finally:
                self._learning.discard(entry.name)

    async def _record_failure(self, entry: ResourceProgress, result: RewriteResult) -> None:
        target = result.target
        failure = Failure(
            entry.name,
            target.namespace or "",
            target.name,
            result.reason or result.outcome.value,
            result.message,
        )
        first_few = self.progress.failures_total < MAX_FAILURES
        self.progress.record_failure(failure)
        if first_few:
            await self._sink.event(
                "Warning",
                "ObjectNotRewritten",
                f"{target.describe()}: {failure.reason}: {failure.message}"[:400],
            )
        streak = self._forbidden_streak.get(entry.name, 0)
        if result.reason == "Forbidden" and streak >= 0:
            self._forbidden_streak[entry.name] = streak + 1
            if streak + 1 >= FORBIDDEN_STREAK_LIMIT:
                raise _ResourceAbandoned(f"every write is forbidden ({result.message})")

    def _target_from_item(self, served: ServedResource, item: dict[str, Any]) -> RewriteTarget:
        metadata = item.get("metadata") or {}
        return RewriteTarget(
            served,
            metadata.get("namespace") or None,
            str(metadata.get("name") or ""),
            str(metadata.get("resourceVersion") or ""),
            str(metadata.get("uid") or "") or None,
        )

    async def _list_page(self, served: ServedResource, token: str | None) -> dict[str, Any]:
        """One metadata-only page, under the same limiter and retry policy as the writes."""
        async for attempt in transient_retrying(LIST_ATTEMPTS):
            with attempt:
                return await self._list_once(served, token)
        raise AssertionError("unreachable: tenacity either returns or re-raises")  # pragma: no cover

    async def _list_once(self, served: ServedResource, token: str | None) -> dict[str, Any]:
        await self._limiter.acquire()
        started = time.monotonic()
        try:
            page = await self._api.list_metadata(
                served.collection_path(), limit=self._spec.page_size, continue_token=token
            )
        except TransportError as error:
            self._observer.request_done(served.name, "transport", time.monotonic() - started)
            raise RetryableFailure("ConnectionError", str(error)) from error
        except ApiError as error:
            self._observer.request_done(served.name, str(error.status), time.monotonic() - started)
            if not is_retryable_status(error.status):
                raise
            self._limiter.overloaded()
            raise RetryableFailure(error.reason, error.message, error.retry_after) from error
        self._observer.request_done(served.name, "200", time.monotonic() - started)
        return page

    # ---- learning the current write format ------------------------------------------------------

    async def _learn_reference_format(self) -> None:
        """Our own CR was just written (status): how etcd holds it is the current default format.

        Not finding it means we read the wrong place (another --etcd-prefix, another etcd):
        every scan would be empty and a run "verified" with nothing rewritten, so stop here.
        """
        if self._etcd is None or self._canary_key is None:
            return
        found = await read_format(self._etcd, self._canary_key)
        if found is None:
            raise PlanError(
                f"this StorageMigration is not in etcd at {self._canary_key} (etcd prefix {self._root}): "
                "the operator reads another prefix or another etcd than the apiserver writes; "
                "pass the apiserver's --etcd-prefix to the operator (run --etcd-prefix)"
            )
        self._reference_label = write_format_label(found[0])
        self._note_key_id(found[0].kind, found[0].key_id)

    async def _learn_by_canary(self, entry: ResourceProgress, served: ServedResource) -> None:
        """Targeted mode: rewrite a few objects of the resource and read back how they are stored now."""
        if entry.write_format is not None or self._etcd is None:
            return
        pages = self._stored(served, CANARY_CANDIDATES, after_key=entry.checkpoint.last_key)
        try:
            await self._try_canaries(entry, served, pages)
        finally:
            await pages.aclose()
            # Canary outcomes are final: keep their counts across a restart, and start the walk
            # after them (they are the first keys), so no canary is written or counted twice.
            entry.commit(last_key=entry.checkpoint.last_key)

    async def _try_canaries(
        self, entry: ResourceProgress, served: ServedResource, pages: AsyncGenerator[list[StoredObject], None]
    ) -> None:
        async for page in pages:
            for item in page:
                if not is_rewritable(item.stored_format):
                    continue  # undecodable: the apiserver would answer 500; verification reports it
                target = RewriteTarget(
                    served, item.stored_key.namespace, item.stored_key.name, str(item.mod_revision)
                )
                await self._record(entry, served, await self._rewriter.rewrite(target))
                entry.checkpoint.last_key = item.key  # committed with the counts by the caller
                if entry.write_format is not None:
                    return
            return  # only the first few objects: a resource nobody may write is not scanned twice

    async def _learn_write_format(self, entry: ResourceProgress, served: ServedResource, key: str) -> None:
        if self._etcd is None:
            return
        found = await read_format(self._etcd, key)
        if found is None:
            return
        stored, _revision = found
        if stored.kind is FormatKind.UNKNOWN:
            return
        entry.write_format = write_format_label(stored)
        self._note_key_id(stored.kind, stored.key_id)
        log.info("%s: current write format %s", entry.name, entry.write_format)

    def _note_key_id(self, kind: FormatKind, key_id: str | None) -> None:
        if kind is FormatKind.KMS_V2 and key_id and self.progress.key_id is None:
            self.progress.key_id = key_id

    # ---- status -------------------------------------------------------------------------------

    def _pending_resources(self) -> list[tuple[ResourceProgress, ServedResource]]:
        return [
            (entry, self._served[entry.name])
            for entry in self.progress.resources
            if entry.name in self._served and entry.phase not in (ResourcePhase.DONE, ResourcePhase.FAILED)
        ]

    def _entry(self, name: str) -> ResourceProgress:
        found = self.progress.resource(name)
        assert found is not None
        return found

    def _check_stop(self) -> None:
        if self._should_stop():
            raise MigrationStopped("stop requested")

    def _failure_summary(self) -> str:
        failed = [r.name for r in self.progress.resources if r.phase is ResourcePhase.FAILED]
        parts = []
        if self.progress.failures_total:
            parts.append(f"{self.progress.failures_total} object(s) could not be rewritten")
        if failed:
            parts.append("resources not migrated: " + ", ".join(failed[:5]))
        return "; ".join(parts)

    async def _enter(self, phase: Phase, message: str) -> None:
        progress = self.progress
        changed = progress.phase is not phase
        progress.phase = phase
        progress.message = message
        await self._publish(force=True)
        if changed:
            await self._sink.event("Normal", phase.value, message)

    async def _finish(self, phase: Phase, message: str) -> None:
        progress = self.progress
        progress.completion_time = utc_now()
        await self._sink.event("Normal" if phase is Phase.SUCCEEDED else "Warning", phase.value, message)
        progress.phase = phase
        progress.message = message
        await self._publish_final()

    async def _publish_final(self) -> None:
        """The terminal status is the result: retry it, and if it never lands, say so loudly.

        A lost final status would leave the CR mid-phase with no daemon running for it; raising
        lets the caller (kopf) run the migration again, which resumes from the last checkpoint.
        """
        document = to_status(self.progress, utc_now())
        self._observer.status(self.progress.phase, int(document["totals"]["remaining"]))
        try:
            async for attempt in transient_retrying(FINAL_PUBLISH_ATTEMPTS):
                with attempt:
                    async with self._publish_lock:
                        await self._publish_once(document)
        except (RetryableFailure, ApiError) as error:
            raise FinalStatusNotPublished(f"cannot store the final status: {error}") from error

    async def _publish_once(self, document: dict[str, Any]) -> None:
        try:
            await self._sink.publish(document)
        except TransportError as error:
            raise RetryableFailure("ConnectionError", str(error)) from error
        except ApiError as error:
            if is_retryable_status(error.status) or error.status == 409:
                raise RetryableFailure(error.reason, error.message, error.retry_after) from error
            raise

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self._status_interval)
            try:
                await self._publish()
            except MigrationStopped:
                return  # the main task sees the same at its next publish or stop check

    async def _publish(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._published_at < self._status_interval:
            return
        async with self._publish_lock:
            self._published_at = time.monotonic()
            document = to_status(self.progress, utc_now())
            self._observer.status(self.progress.phase, int(document["totals"]["remaining"]))
            try:
                await self._sink.publish(document)
            except (ApiError, TransportError) as error:
                # Status is best effort: a missed checkpoint only means redoing a page after a crash.
                log.warning("status update failed (next one in %ss): %s", self._status_interval, error)


def _needs_rewrite(item: StoredObject, label: str) -> bool:
    """Stale and decodable: an undecodable value is reported by verification, never written."""
    return is_rewritable(item.stored_format) and is_stale(item.stored_format, label)


def _list_key(item: dict[str, Any]) -> str:
    """Where a listed object sorts: lists come in etcd key order, i.e. by namespace/name."""
    metadata = item.get("metadata") or {}
    namespace = str(metadata.get("namespace") or "")
    name = str(metadata.get("name") or "")
    return f"{namespace}/{name}" if namespace else name


def _after(key: str, checkpoint_key: str | None) -> bool:
    return checkpoint_key is None or key > checkpoint_key
