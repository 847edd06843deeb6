"""Outages: whether etcd and the apiserver answer, and waiting one out without losing the phase.

The driver calls :meth:`OutageWatch.wait_out` with what the error boundary called
"infrastructure unavailable": the status keeps its phase and says what is awaited, the wait
doubles up to OUTAGE_MAX_WAIT, and the migration goes on from its checkpoints once both answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from kms_storage_migrator.kube import ApiError, TransportError
from kms_storage_migrator.migration.boundary import (
    APISERVER,
    InfrastructureUnavailable,
    as_retryable,
    at_phase_level,
)
from kms_storage_migrator.migration.ports import ApiPort, EtcdPort
from kms_storage_migrator.migration.progress import MigrationProgress
from kms_storage_migrator.migration.status_publisher import MigrationSink, StatusPublisher

log = logging.getLogger(__name__)

OUTAGE_FIRST_WAIT = 2.0
OUTAGE_MAX_WAIT = 60.0
READINESS_PATH = "/readyz"  # readable by every authenticated client (system:public-info-viewer)


class OutageWatch:
    def __init__(
        self,
        api: ApiPort,
        etcd: EtcdPort | None,
        *,
        probe_key: str,
        progress: MigrationProgress,
        publisher: StatusPublisher,
        sink: MigrationSink,
        sleep: Callable[[float], Awaitable[None]],
        check_stop: Callable[[], None],
    ) -> None:
        self._api = api
        self._etcd = etcd
        self._probe_key = probe_key  # any key: an answer, even "absent", means etcd serves reads
        self._progress = progress
        self._publisher = publisher
        self._sink = sink
        self._sleep = sleep
        self._check_stop = check_stop
        self._since = 0.0
        self._attempt = 0  # waits since work last went on: the backoff grows with it
        self._what = ""

    async def require_available(self) -> None:
        """Raise InfrastructureUnavailable unless the apiserver is ready and etcd answers."""
        try:
            await self._api.get_json(READINESS_PATH)
        except (ApiError, TransportError) as error:
            if as_retryable(error) is not None:
                raise InfrastructureUnavailable(APISERVER, f"{READINESS_PATH}: {error}") from error
        if self._etcd is not None:
            await self._etcd.get(self._probe_key)  # EtcdUnavailable: the boundary maps it

    async def settled(self) -> None:
        """Work went on (a page or a step done): say so if it had waited, and reset the backoff."""
        if self._attempt:
            waited = time.monotonic() - self._since
            self._attempt = 0
            back = f"{self._what} answers again after {waited:.0f}s; {self._progress.phase.value} goes on"
            log.info("%s", back)
            await self._sink.event("Normal", "InfrastructureAvailable", back)

    async def wait_out(self, outage: InfrastructureUnavailable) -> None:
        """Keep the phase, say what is awaited, back off; return once both answer again."""
        if self._attempt == 0:
            self._since = time.monotonic()
            await self._sink.event("Warning", "InfrastructureUnavailable", self._waiting(outage, 1))
        while True:
            self._attempt += 1
            delay = min(OUTAGE_MAX_WAIT, OUTAGE_FIRST_WAIT * 2 ** (self._attempt - 1))
            self._progress.message = message = self._waiting(outage, self._attempt, delay)
            log.warning("%s", message)
            await self._publisher.publish(force=True)
            await self._sleep(delay)
            self._check_stop()
            try:
                await self.require_available()
            except Exception as error:
                still = at_phase_level(error)
                if not isinstance(still, InfrastructureUnavailable):
                    raise
                outage = still
                continue
            self._what = outage.what
            return  # the driver tries again; settled() once work goes on

    def _waiting(self, outage: InfrastructureUnavailable, attempt: int, delay: float | None = None) -> str:
        delay = delay if delay is not None else OUTAGE_FIRST_WAIT
        return f"{outage}; phase {self._progress.phase.value} kept, retry {attempt} in {delay:.0f}s"
