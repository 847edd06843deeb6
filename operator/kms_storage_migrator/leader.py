"""Leader election on a coordination.k8s.io/v1 Lease, the way client-go's leaderelection does it.

With two replicas, only the one holding the Lease runs kopf (and so migrations). The holder
renews the Lease every few seconds; a standby takes it once the holder has not renewed it for
the lease duration, measured on the standby's own clock from when it last saw the Lease change
(so clock skew between nodes does not matter). Every write carries the resourceVersion last
read: a 409 means another replica wrote first, and it won. A holder that cannot renew within
the renew deadline (shorter than the lease duration) exits at once, before a standby may take
over, so two replicas never migrate at the same time; Kubernetes restarts it as a standby.

The decisions (may I take it, what to write) are pure functions of the Lease and the time;
:class:`LeaderElector` does the requests and :func:`lead` the lifecycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from kms_storage_migrator.errors import UserError
from kms_storage_migrator.kube import SERVICE_ACCOUNT_DIR, ApiError, KubeApi, TransportError

DEFAULT_LEASE_NAME = "kms-storage-migrator"
# client-go's defaults: a dead holder is replaced after 15 s, a holder that has not renewed for
# 10 s gives up (5 s before anyone may take over), everyone retries every 2 s.
LEASE_DURATION_SECONDS = 15
RENEW_INTERVAL_SECONDS = 5.0
RENEW_DEADLINE_SECONDS = 10.0
RETRY_PERIOD_SECONDS = 2.0
# Each request must end well inside the renew deadline, or one hung request would outlive it.
REQUEST_TIMEOUT_SECONDS = 4.0
# Exit status when the Lease is lost: not 0, so Kubernetes counts a restart and logs it.
LEASE_LOST_EXIT_CODE = 3
POD_NAME_ENV = "POD_NAME"
POD_NAMESPACE_ENV = "POD_NAMESPACE"

LEASES_API = "/apis/coordination.k8s.io/v1"

logger = logging.getLogger(__name__)


class LeadershipLost(Exception):
    """The Lease went to another replica, or could not be renewed in time."""


@dataclass(frozen=True)
class LeaseSettings:
    """Which Lease, who we are, and the timings (client-go's defaults unless a test says)."""

    namespace: str
    name: str
    identity: str
    lease_duration_seconds: int = LEASE_DURATION_SECONDS
    renew_interval: float = RENEW_INTERVAL_SECONDS
    renew_deadline: float = RENEW_DEADLINE_SECONDS
    retry_period: float = RETRY_PERIOD_SECONDS

    @property
    def path(self) -> str:
        return f"{LEASES_API}/namespaces/{self.namespace}/leases/{self.name}"

    @property
    def collection_path(self) -> str:
        return f"{LEASES_API}/namespaces/{self.namespace}/leases"

    def describe(self) -> str:
        return f"Lease {self.namespace}/{self.name}"


@dataclass(frozen=True)
class LeaseRecord:
    """What a Lease says about its holder. ``holder`` is empty when nobody holds it."""

    holder: str
    duration_seconds: int
    # Kept as stored: only compared with the previous reading, never with our clock.
    renew_time: str
    acquire_time: str
    transitions: int
    resource_version: str

    @classmethod
    def from_lease(cls, lease: Mapping[str, Any]) -> LeaseRecord:
        spec = lease.get("spec") or {}
        metadata = lease.get("metadata") or {}
        duration = spec.get("leaseDurationSeconds")
        transitions = spec.get("leaseTransitions")
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            duration_seconds=duration
            if isinstance(duration, int) and duration > 0
            else LEASE_DURATION_SECONDS,
            renew_time=str(spec.get("renewTime") or ""),
            acquire_time=str(spec.get("acquireTime") or ""),
            transitions=transitions if isinstance(transitions, int) else 0,
            resource_version=str(metadata.get("resourceVersion") or ""),
        )


@dataclass(frozen=True)
class Observation:
    """A Lease record and when (our monotonic clock) we first saw it in this form."""

    record: LeaseRecord
    seen_at: float


def observe(previous: Observation | None, record: LeaseRecord, now: float) -> Observation:
    """The new observation: the clock restarts only when the holder renewed or changed.

    A resourceVersion change alone (someone edited a label) is not a sign of life.
    """
    if previous is not None and (previous.record.holder, previous.record.renew_time) == (
        record.holder,
        record.renew_time,
    ):
        return Observation(record, previous.seen_at)
    return Observation(record, now)


def may_take(observation: Observation, identity: str, now: float) -> bool:
    """Whether ``identity`` may write itself in as holder, given what it observed and now."""
    record = observation.record
    if not record.holder or record.holder == identity:
        return True
    return now - observation.seen_at >= record.duration_seconds


def micro_time(moment: datetime) -> str:
    """A Kubernetes MicroTime (RFC 3339, microseconds, UTC)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def held_lease(settings: LeaseSettings, record: LeaseRecord | None, now: datetime) -> dict[str, Any]:
    """The Lease to write to take or renew it; with ``record``, guarded by its resourceVersion."""
    stamp = micro_time(now)
    if record is None:  # a new Lease
        acquired, transitions = stamp, 0
    elif record.holder != settings.identity:  # taken over (from nobody, or from a dead holder)
        acquired, transitions = stamp, record.transitions + 1
    else:  # renewed
        acquired, transitions = record.acquire_time or stamp, record.transitions
    spec = {
        "holderIdentity": settings.identity,
        "leaseDurationSeconds": settings.lease_duration_seconds,
        "acquireTime": acquired,
        "renewTime": stamp,
        "leaseTransitions": transitions,
    }
    return _lease(settings, record, spec)


def released_lease(settings: LeaseSettings, record: LeaseRecord, now: datetime) -> dict[str, Any]:
    """The Lease with no holder: a standby may take it at once instead of waiting it out."""
    spec = {
        "leaseDurationSeconds": record.duration_seconds,
        "acquireTime": record.acquire_time or micro_time(now),
        "renewTime": micro_time(now),
        "leaseTransitions": record.transitions,
    }
    return _lease(settings, record, spec)


def _lease(settings: LeaseSettings, record: LeaseRecord | None, spec: dict[str, Any]) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": settings.name, "namespace": settings.namespace}
    if record is not None:
        metadata["resourceVersion"] = record.resource_version
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}


def default_identity(environ: Mapping[str, str], hostname: str, pid: int) -> str:
    """The pod's name (the chart passes it), else host and process: unique among the replicas."""
    return environ.get(POD_NAME_ENV) or f"{hostname}_{pid}"


def default_namespace(
    environ: Mapping[str, str], service_account_dir: Path = SERVICE_ACCOUNT_DIR
) -> str | None:
    """The pod's namespace (env, else the mounted ServiceAccount's), or None outside a pod."""
    if environ.get(POD_NAMESPACE_ENV):
        return environ[POD_NAMESPACE_ENV]
    try:
        return (service_account_dir / "namespace").read_text().strip() or None
    except OSError:
        return None


def lease_settings(
    namespace: str | None,
    name: str,
    environ: Mapping[str, str],
    *,
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
) -> LeaseSettings:
    """The Lease this process competes for; a missing namespace is a clear error."""
    namespace = namespace or default_namespace(environ, service_account_dir)
    if not namespace:
        raise UserError(
            "--leader-elect: no namespace for the Lease; pass --leader-elect-namespace "
            f"(in a pod it defaults to ${POD_NAMESPACE_ENV} or the ServiceAccount's namespace)"
        )
    if not name:
        raise UserError("--leader-elect-name: must not be empty")
    return LeaseSettings(namespace, name, default_identity(environ, socket.gethostname(), os.getpid()))


class LeaderElector:
    """Takes, renews and releases one Lease through the project's API client."""

    def __init__(
        self,
        api: KubeApi,
        settings: LeaseSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._api = api
        self.settings = settings
        self._clock = clock
        self._wall_clock = wall_clock
        self._observation: Observation | None = None
        self._held: LeaseRecord | None = None  # our last successful write
        self._renewed_at = 0.0

    async def acquire(self) -> None:
        """Return once this process holds the Lease; try again every retry period until then."""
        announced = ""
        while not await self._try_take():
            holder = self._observation.record.holder if self._observation else ""
            if holder != announced:
                logger.info("standing by: %s is held by %s", self.settings.describe(), holder)
                announced = holder
            await asyncio.sleep(self.settings.retry_period)
        logger.info("became leader: %s held by %s", self.settings.describe(), self.settings.identity)

    async def keep(self) -> None:
        """Renew until cancelled; raise :class:`LeadershipLost` if another replica has the Lease
        or no renewal succeeded within the renew deadline."""
        while True:
            await asyncio.sleep(self.settings.renew_interval)
            # The deadline bounds the attempts themselves too: a renewal hanging in a slow
            # request must not carry the leader past it, into the time a standby may take over.
            left = self._renewed_at + self.settings.renew_deadline - self._clock()
            try:
                async with asyncio.timeout(max(0.0, left)):
                    await self._renew_until_done()
            except TimeoutError:
                raise LeadershipLost(
                    f"{self.settings.describe()}: not renewed for {self.settings.renew_deadline:g}s"
                ) from None

    async def _renew_until_done(self) -> None:
        while True:
            if await self._renew():
                return
            await asyncio.sleep(self.settings.retry_period)

    async def release(self) -> None:
        """Clear the holder if it is still us, so a standby takes over in seconds, not 15."""
        for _ in range(3):
            record = self._held
            if record is None:
                return
            try:
                answer = await self._api.request(
                    "PUT", self.settings.path, body=released_lease(self.settings, record, self._wall_clock())
                )
            except ApiError as error:
                if error.status != 409:
                    logger.warning("could not release %s: %s", self.settings.describe(), error)
                    return
                current = await self._read()
                self._held = (
                    current if current is not None and current.holder == self.settings.identity else None
                )
                continue
            except TransportError as error:
                logger.warning("could not release %s: %s", self.settings.describe(), error)
                return
            self._held = None
            logger.info(
                "released %s (resourceVersion %s)",
                self.settings.describe(),
                LeaseRecord.from_lease(answer.body).resource_version,
            )
            return

    async def _try_take(self) -> bool:
        try:
            current = await self._read()
            if current is None:
                return await self._write("POST", self.settings.collection_path, None)
            self._observation = observe(self._observation, current, self._clock())
            if not may_take(self._observation, self.settings.identity, self._clock()):
                return False
            return await self._write("PUT", self.settings.path, current)
        except (ApiError, TransportError) as error:
            # The apiserver is away or refuses (RBAC): keep waiting, saying why once per try.
            logger.warning("cannot take %s yet: %s", self.settings.describe(), error)
            return False

    async def _renew(self) -> bool:
        record = self._held
        assert record is not None, "renewing a Lease never taken"
        try:
            if await self._write("PUT", self.settings.path, record):
                return True
            current = await self._read()
        except (ApiError, TransportError) as error:
            logger.warning("cannot renew %s: %s", self.settings.describe(), error)
            return False
        if current is None or current.holder != self.settings.identity:
            holder = current.holder if current is not None else "nobody (the Lease was deleted)"
            raise LeadershipLost(f"{self.settings.describe()} is now held by {holder}")
        # Still ours, only changed by someone else (a label): renew on top of that version.
        self._held = current
        try:
            return await self._write("PUT", self.settings.path, current)
        except (ApiError, TransportError) as error:
            logger.warning("cannot renew %s: %s", self.settings.describe(), error)
            return False

    async def _write(self, method: str, path: str, record: LeaseRecord | None) -> bool:
        """Write us in as holder; False on 409/422 (another replica's write came first)."""
        body = held_lease(self.settings, record, self._wall_clock())
        try:
            answer = await self._api.request(method, path, body=body)
        except ApiError as error:
            if error.status == 409:  # Conflict on update, AlreadyExists on create
                return False
            raise
        self._held = LeaseRecord.from_lease(answer.body)
        self._renewed_at = self._clock()
        return True

    async def _read(self) -> LeaseRecord | None:
        try:
            return LeaseRecord.from_lease(await self._api.get_json(self.settings.path))
        except ApiError as error:
            if error.status == 404:
                return None
            raise


@contextlib.asynccontextmanager
async def standby_health(port: int) -> AsyncIterator[None]:
    """Answer the liveness and readiness probes while waiting for the Lease.

    A standby is healthy: without this, the probes (served by kopf, which has not started)
    would fail, Kubernetes would restart the standby in a loop, and a PodDisruptionBudget
    would count it as unavailable and block every node drain.
    """
    if not port:
        yield
        return

    async def healthy(_: web.Request) -> web.Response:
        return web.json_response({"standby": True})

    application = web.Application()
    application.router.add_get("/healthz", healthy)
    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()  # noqa: S104 (probed by the kubelet)
    try:
        yield
    finally:
        await runner.cleanup()  # the port is free again for kopf's own liveness endpoint


def _exit_at_once(reason: str) -> None:
    # Not a graceful stop: kopf would finish the current page first, while the new leader
    # already writes. The client-go pattern: log and die; Kubernetes restarts us as a standby.
    logger.critical("leadership lost, exiting: %s", reason)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(LEASE_LOST_EXIT_CODE)


async def lead(
    settings: LeaseSettings,
    api: KubeApi,
    work: Callable[[], Awaitable[None]],
    *,
    health_port: int = 0,
    on_lost: Callable[[str], None] = _exit_at_once,
) -> None:
    """Wait for the Lease (answering probes meanwhile), then run ``work`` while renewing it.

    ``api`` is a client of its own with a short request timeout, apart from the engine's. When
    ``work`` ends (SIGTERM stops kopf), the Lease is released. Losing it calls ``on_lost``,
    which by default ends the process at once.
    """
    elector = LeaderElector(api, settings)
    async with api:
        async with standby_health(health_port):
            await elector.acquire()

        async def keep_or_die() -> None:
            try:
                await elector.keep()
            except LeadershipLost as lost:
                on_lost(str(lost))
            except Exception as error:  # a leader that cannot renew must not go on
                on_lost(f"renewing {settings.describe()} failed: {type(error).__name__}: {error}")

        keeper = asyncio.create_task(keep_or_die())
        try:
            await work()
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            await elector.release()
