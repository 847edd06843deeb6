"""Publishing a migration's status: at every phase change and page end, from a ticker, and at the end.

Progress is best effort (a missed checkpoint only means redoing a page after a crash); the final
status is the result, so it is retried, and when it never lands the caller hears about it. A
document that shows nothing new is not sent (``publish_policy.py``): every publish is a row in
``kubectl get sm -w``. The rate and ETA are sampled here, at every document built.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Protocol

from kms_storage_migrator.kube import ApiError, TransportError
from kms_storage_migrator.migration.boundary import MigrationStopped, RunAgainLater, as_retryable
from kms_storage_migrator.migration.outcome import Outcome
from kms_storage_migrator.migration.progress import MigrationProgress, Phase, to_status
from kms_storage_migrator.migration.publish_policy import worth_publishing
from kms_storage_migrator.migration.rate import RateWindow, eta_seconds, format_eta, rounded_rate
from kms_storage_migrator.migration.ratelimit import RetryableFailure, transient_retrying
from kms_storage_migrator.migration.rewrite import NoObserver, RewriteObserver
from kms_storage_migrator.migration.status_parts import Failure

log = logging.getLogger(__name__)

STATUS_INTERVAL_SECONDS = 3.0
# The final status carries the outcome: tried this often (transient policy) before the caller retries.
FINAL_PUBLISH_ATTEMPTS = 8


class MigrationSink(Protocol):
    """Where a running migration reports: the CR status and its events (or anything else)."""

    async def publish(self, status: dict[str, Any]) -> None: ...

    async def event(self, kind: str, reason: str, message: str) -> None: ...


class FailureList(Protocol):
    """Every failure of a migration, beyond the few status keeps (failure_configmap.py)."""

    def add(self, failure: Failure) -> None: ...

    async def flush(self, *, final: bool = False) -> None:
        """Store what was added, at most every so often; ``final``: now, the migration ends."""


class NoFailureList:
    def add(self, failure: Failure) -> None:
        return None

    async def flush(self, *, final: bool = False) -> None:
        return None


class MigrationObserver(RewriteObserver, Protocol):
    def outcome(self, resource: str, outcome: Outcome, count: int = 1) -> None: ...

    def status(
        self,
        phase: str,
        remaining: int,
        verification: Mapping[str, Any] | None = None,
        key_id: str | None = None,
    ) -> None:
        """The document being published: ``phase`` as status shows it (a Phase value, or
        Suspended), its ``verification`` part (None before any read-back) and ``keyId`` (the
        KMS key the migration writes with)."""


class NullObserver(NoObserver):
    def outcome(self, resource: str, outcome: Outcome, count: int = 1) -> None:
        return None

    def status(
        self,
        phase: str,
        remaining: int,
        verification: Mapping[str, Any] | None = None,
        key_id: str | None = None,
    ) -> None:
        return None


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class StatusPublisher:
    """One lock around every publish, so a ticker and a page end never interleave documents."""

    def __init__(
        self,
        progress: MigrationProgress,
        sink: MigrationSink,
        observer: MigrationObserver,
        *,
        interval: float = STATUS_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        failures: FailureList | None = None,
    ) -> None:
        self._progress = progress
        # Written alongside status (it paces itself): at the ticks, page ends and the end.
        self._failures = failures or NoFailureList()
        self._sink = sink
        self._observer = observer
        self._interval = interval
        self._clock = clock
        self._published_at = 0.0
        self._published: dict[str, Any] | None = None  # the last document that landed
        self._rates = RateWindow()
        self._lock = asyncio.Lock()

    def _document(self) -> dict[str, Any]:
        self._measure_rate()
        document = to_status(self._progress, utc_now())
        self._observer.status(
            str(document["phase"]),
            int(document["totals"]["remaining"]),
            document.get("verification"),
            document.get("keyId"),
        )
        return document

    def _measure_rate(self) -> None:
        """Rate and ETA mean something only while objects are being written."""
        progress = self._progress
        if progress.phase is not Phase.MIGRATING or progress.suspended:
            progress.rate = progress.eta = None
            return
        totals = progress.totals()
        now = self._clock()
        self._rates.record(now, totals.counts.done)
        rate = self._rates.rate(now)
        progress.rate = rounded_rate(rate)
        progress.eta = format_eta(eta_seconds(totals.remaining, rate))

    async def publish(self, *, force: bool = False) -> None:
        """Store the status now (``force``) or when the interval has passed, if it shows something new.

        Failures are logged: the next publish carries the same and more.
        """
        await self._failures.flush()
        if not force and self._clock() - self._published_at < self._interval:
            return
        async with self._lock:
            document = self._document()
            if not worth_publishing(self._published, document, self._clock() - self._published_at):
                return
            self._published_at = self._clock()
            try:
                await self._sink.publish(document)
                self._published = copy.deepcopy(document)
            except (ApiError, TransportError) as error:
                log.warning("status update failed (next one in %ss): %s", self._interval, error)

    async def publish_final(self) -> None:
        """The terminal status: retried; :class:`RunAgainLater` when it never lands.

        A lost final status would leave the CR mid-phase with no daemon running for it; the
        caller runs the migration again, which resumes from the last checkpoint.
        """
        await self._failures.flush(final=True)  # before the status that says where the list is
        document = self._document()
        try:
            async for attempt in transient_retrying(FINAL_PUBLISH_ATTEMPTS):
                with attempt:
                    async with self._lock:
                        await self._publish_once(document)
                        self._published = copy.deepcopy(document)
        except (RetryableFailure, ApiError) as error:
            raise RunAgainLater(f"cannot store the final status: {error}") from error

    async def _publish_once(self, document: dict[str, Any]) -> None:
        try:
            await self._sink.publish(document)
        except (ApiError, TransportError) as error:
            retryable = as_retryable(error)
            if retryable is None and isinstance(error, ApiError) and error.status == 409:
                retryable = RetryableFailure(error.reason, error.message)
            if retryable is None:
                raise
            raise retryable from error

    @contextlib.asynccontextmanager
    async def ticking(self) -> AsyncIterator[None]:
        """Publish every interval while the body runs (a long page still shows progress)."""
        ticker = asyncio.create_task(self._tick())
        try:
            yield
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.publish()
            except MigrationStopped:
                return  # the main task sees the same at its next publish or stop check
