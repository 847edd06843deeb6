"""Outages: whether etcd and the apiserver answer, and waiting one out without losing the phase.

The driver calls :meth:`OutageWatch.wait_out` with what the error boundary called
"infrastructure unavailable": the status keeps its phase and says what is awaited, the wait
doubles up to OUTAGE_MAX_WAIT, and the migration goes on from its checkpoints once both answer.

The KMS is watched too, through the apiserver's own ``kms-providers`` health check: a failing
KMS lets writes go on for 3 minutes (the apiserver's cached DEK seed) and then fails them all,
our status updates included. So the check is asked every KMS_CHECK_INTERVAL while work goes
on, and the ``KMSAvailable`` condition (Degraded with it) is stored while writes still land.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from kms_storage_migrator.kube import ApiError, TransportError
from kms_storage_migrator.migration.boundary import (
    APISERVER,
    KMS_UNAVAILABLE,
    InfrastructureUnavailable,
    KmsTrouble,
    KmsUnavailable,
    as_retryable,
    at_phase_level,
    kms_trouble,
)
from kms_storage_migrator.migration.conditions import KMS_AVAILABLE
from kms_storage_migrator.migration.ports import ApiPort, EtcdPort
from kms_storage_migrator.migration.progress import MigrationProgress, set_condition, to_status
from kms_storage_migrator.migration.status_publisher import MigrationSink, StatusPublisher, utc_now

log = logging.getLogger(__name__)

OUTAGE_FIRST_WAIT = 2.0
OUTAGE_MAX_WAIT = 60.0
READINESS_PATH = "/readyz"  # readable by every authenticated client (system:public-info-viewer)
# Answers "ok", or 500 with the plugin's error in plain text (needs get on this non-resource URL).
KMS_CHECK_PATH = "/readyz/kms-providers"
# The apiserver asks its plugin again when the check's last answer is older than 20 s.
KMS_CHECK_INTERVAL = 20.0
KMS_HEALTH_FAILS = (
    "the apiserver's kms-providers health check fails: writes go on with its cached DEK seed "
    "for up to 3 minutes after the KMS last answered, then fail until it answers again"
)


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
        clock: Callable[[], float] = time.monotonic,
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
        self._clock = clock
        self._kms_checked_at = clock()  # the first check waits one interval: a short run needs none
        self._kms_checks = True  # off once the apiserver says it has no such check, or we may not ask
        self._failures_seen = progress.failures_total  # failures beyond it are the current page's
        self._last_trouble: KmsTrouble | None = None  # what the KMS check last said, until writes land

    async def require_available(self) -> None:
        """Raise InfrastructureUnavailable unless the apiserver is ready and etcd answers.

        Asked after a page whose writes ran out of retries: a KMS error among them is an outage
        even when /readyz passes (measured: with the key still disabled, /readyz passed now and
        then while every write failed), so those writes are redone later, never counted.
        """
        trouble = self._fresh_kms_failure()
        if trouble is not None:
            raise KmsUnavailable(self._named(await self._kms_trouble() or trouble))
        await self._answering()

    def _named(self, trouble: KmsTrouble) -> KmsTrouble:
        """A write only says its DEK seed expired; the KMS check said why (the key is disabled)."""
        if trouble.reason == KMS_UNAVAILABLE and self._last_trouble is not None:
            return self._last_trouble
        return trouble

    async def _answering(self) -> None:
        try:
            await self._api.get_json(READINESS_PATH)
        except (ApiError, TransportError) as error:
            if as_retryable(error) is not None:
                trouble = await self._kms_trouble() if isinstance(error, ApiError) else None
                if trouble is not None:
                    raise KmsUnavailable(trouble) from error
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
            self._last_trouble = None
            self._kms_condition(None, back)
            await self._sink.event("Normal", "InfrastructureAvailable", back)
        self._failures_seen = self._progress.failures_total  # committed: no longer the page's own
        await self._watch_kms()

    def _fresh_kms_failure(self) -> KmsTrouble | None:
        """A KMS error among the failures recorded since work last went on (the page's own)."""
        failures = self._progress.failures
        fresh = self._progress.failures_total - self._failures_seen
        if fresh <= 0 or len(failures) != self._progress.failures_total:
            return None  # none new, or the bounded list is full (it keeps the first, not the newest)
        for failure in failures[len(failures) - fresh :]:
            trouble = kms_trouble(failure.message)
            if trouble is not None:
                return trouble
        return None

    async def _write_lands(self) -> None:
        """Store the status (its message changed since the last one: a real write), or raise.

        The only sure sign the apiserver encrypts again: its KMS check answers from a cache.
        """
        try:
            await self._sink.publish(to_status(self._progress, utc_now()))
        except ApiError as error:
            trouble = kms_trouble(error.message)
            if trouble is not None:
                raise KmsUnavailable(self._named(trouble)) from error
            log.warning("status update failed while probing writes: %s", error)
        except TransportError as error:
            raise InfrastructureUnavailable(APISERVER, str(error)) from error

    async def _watch_kms(self) -> None:
        """Ask the KMS check now and then: its failure shows while our status can still be stored."""
        if not self._kms_checks or self._clock() - self._kms_checked_at < KMS_CHECK_INTERVAL:
            return
        self._kms_checked_at = self._clock()
        trouble = await self._kms_trouble()
        was_down = self._kms_down()
        if trouble is not None:
            message = f"{KMS_HEALTH_FAILS} ({trouble.summary}); what to do: {trouble.advice}"
            if not was_down:
                log.warning("%s", message)
                await self._sink.event("Warning", trouble.reason, message)
            self._kms_condition(trouble, message)
            await self._publisher.publish(force=True)
        elif was_down:
            self._kms_condition(None, "the apiserver's kms-providers health check passes again")
            await self._publisher.publish(force=True)

    async def _kms_trouble(self) -> KmsTrouble | None:
        """What the apiserver's KMS check says is wrong, or None (healthy, absent, or not ours to ask)."""
        if not self._kms_checks:
            return None
        try:
            await self._api.get_json(KMS_CHECK_PATH)
        except TransportError:
            return None  # the apiserver itself is away: that outage is named as such
        except ApiError as error:
            if error.status in (401, 403, 404):
                # No KMS provider configured, or RBAC does not grant this non-resource URL.
                self._kms_checks = error.status == 401
                return None
            trouble = kms_trouble(error.message)
            if trouble is not None:
                self._last_trouble = trouble
                return trouble
            return KmsTrouble(
                KMS_UNAVAILABLE,
                f"{KMS_CHECK_PATH} answers {error.status}",
                "make the KMS plugin answer again; the migration goes on by itself",
            )
        return None

    def _kms_down(self) -> bool:
        return any(
            c.get("type") == KMS_AVAILABLE and c.get("status") == "False" for c in self._progress.conditions
        )

    def _kms_condition(self, trouble: KmsTrouble | None, message: str) -> None:
        """KMSAvailable False with the trouble; back to True only if it was ever set."""
        if trouble is None and not self._kms_down():
            return
        self._progress.conditions = set_condition(
            self._progress.conditions,
            KMS_AVAILABLE,
            status=trouble is None,
            reason=trouble.reason if trouble else KMS_AVAILABLE,
            message=message,
            now=utc_now(),
        )

    async def wait_out(self, outage: InfrastructureUnavailable) -> None:
        """Keep the phase, say what is awaited, back off; return once both answer again."""
        if self._attempt == 0:
            self._since = time.monotonic()
            await self._sink.event("Warning", "InfrastructureUnavailable", self._waiting(outage, 1))
        while True:
            self._attempt += 1
            delay = min(OUTAGE_MAX_WAIT, OUTAGE_FIRST_WAIT * 2 ** (self._attempt - 1))
            self._progress.message = message = self._waiting(outage, self._attempt, delay)
            if isinstance(outage, KmsUnavailable):
                self._kms_condition(outage.trouble, message)
            log.warning("%s", message)
            await self._publisher.publish(force=True)
            await self._sleep(delay)
            self._check_stop()
            try:
                await self._answering()
                if isinstance(outage, KmsUnavailable):
                    await self._write_lands()
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
