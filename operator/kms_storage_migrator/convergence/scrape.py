"""The gate's I/O: list identity Leases, scrape every live apiserver's /metrics, repeat until converged.

Behind a load balancer, one URL reaches some apiserver; which one is chosen per TCP connection.
So every scrape opens a fresh connection (a new :class:`KubeApi`: no keep-alive reuse) and the
round goes on, bounded, until each live identity has answered once. RBAC: ``list`` on
``leases.coordination.k8s.io`` in kube-system and ``get`` on the nonResourceURL ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Protocol

from kms_storage_migrator.convergence.gate import GateResult, Lag, Waiting, assess
from kms_storage_migrator.convergence.identity import (
    DEFAULT_STALE_AFTER_SECONDS,
    IDENTITY_LABEL,
    IDENTITY_NAMESPACE,
    KUBE_APISERVER,
    ApiserverIdentity,
    live_identities,
    parse_identity_leases,
)
from kms_storage_migrator.convergence.metrics import ApiserverKeys, MetricsFormatError, parse_apiserver_keys
from kms_storage_migrator.errors import UserError
from kms_storage_migrator.kube import ApiCredentials, ApiError, KubeApi, TransportError

logger = logging.getLogger(__name__)

LEASES_PATH: Final = f"/apis/coordination.k8s.io/v1/namespaces/{IDENTITY_NAMESPACE}/leases"
METRICS_PATH: Final = "/metrics"
# A readiness check runs the KMS v2 health check, which calls Status when the last answer is
# over 20 s old: the same poll the apiserver makes every 60 s, so it switches keys sooner.
READYZ_PATH: Final = "/readyz"
SCRAPE_TIMEOUT_SECONDS: Final = 15.0
DEFAULT_POLL_SECONDS: Final = 5.0
# Round-robin balancing answers each of N apiservers in N connections; random choice needs
# more. Three tries per apiserver (plus two) bound a round without hiding a dead one for long.
SCRAPES_PER_APISERVER: Final = 3
# Fresh connections tried for the Lease list when the usual one fails (a balancer picks anew).
LEASE_LIST_TRIES: Final = 3
# A transient failure is retried within the round; only its kind is kept (never a body).
MAX_FAILURE_NOTES: Final = 3


class ConvergenceError(UserError):
    """The gate cannot work at all (e.g. no permission to list identity Leases)."""


class MetricsReader(Protocol):
    async def get_text(self, path: str) -> str: ...


MetricsConnector = Callable[[], AbstractAsyncContextManager[MetricsReader]]
ProgressCallback = Callable[[GateResult], Awaitable[None]]


def fresh_connections(credentials: ApiCredentials) -> MetricsConnector:
    """Each call makes a client with a connection of its own, so a load balancer picks anew."""

    @contextlib.asynccontextmanager
    async def connect() -> AsyncIterator[MetricsReader]:
        current = credentials
        if credentials.token_path:
            # The kubelet rotates the in-cluster token; a short-lived client must not use the
            # one read at startup (KubeApi re-reads it only after a minute of use).
            token = (await asyncio.to_thread(Path(credentials.token_path).read_text)).strip()
            current = dataclasses.replace(credentials, token=token)
        async with KubeApi(current, request_timeout=SCRAPE_TIMEOUT_SECONDS) as client:
            yield client

    return connect


@dataclass(frozen=True)
class ScrapeRound:
    """What one round of scrapes found."""

    answers: dict[str, list[ApiserverKeys]]  # apiserver_id_hash -> each answer for it
    scrapes: int
    forbidden: str | None = None  # the 403's message, when /metrics is refused
    failures: tuple[str, ...] = ()


async def list_identities(api: KubeApi) -> list[ApiserverIdentity]:
    """Every kube-apiserver identity Lease (live or not). Leases hold no secret data."""
    try:
        selector = {"labelSelector": f"{IDENTITY_LABEL}={KUBE_APISERVER}"}
        reply = await api.request("GET", LEASES_PATH, params=selector)
    except ApiError as error:
        if error.status == 403:
            raise ConvergenceError(
                f"cannot list the apiserver identity Leases in {IDENTITY_NAMESPACE} ({error.message}): "
                "grant list on leases.coordination.k8s.io there"
            ) from None
        raise
    return parse_identity_leases(reply.body)


async def scrape_round(
    connect: MetricsConnector,
    wanted: Collection[str],
    *,
    max_scrapes: int | None = None,
    nudge: bool = False,
) -> ScrapeRound:
    """Scrape over fresh connections until every id hash in ``wanted`` answered, or the bound.

    With nothing wanted (no live Lease), it stops at the first apiserver that names itself.
    ``nudge`` first GETs /readyz on the same connection (so the same apiserver), which makes it
    poll its KMS Status now if its last poll is over 20 s old, as a kubelet probe would.
    """
    bound = max_scrapes or SCRAPES_PER_APISERVER * max(1, len(wanted)) + 2
    answers: dict[str, list[ApiserverKeys]] = {}
    failures: list[str] = []
    scrapes = 0
    while scrapes < bound:
        scrapes += 1
        try:
            async with connect() as reader:
                if nudge:
                    await _nudge(reader)
                text = await reader.get_text(METRICS_PATH)
        except ApiError as error:
            if error.status == 403:
                return ScrapeRound(answers, scrapes, forbidden=f"403 {error.reason}: {error.message}")
            failures.append(f"GET {METRICS_PATH}: {error.status} {error.reason}")
            continue
        except TransportError as error:
            failures.append(str(error).split(":", 2)[-1].strip() or type(error).__name__)
            continue
        try:
            keys = parse_apiserver_keys(text)
        except MetricsFormatError as error:
            failures.append(str(error))
            continue
        for id_hash, observation in keys.items():
            answers.setdefault(id_hash, []).append(observation)
        if all(id_hash in answers for id_hash in wanted) and (wanted or answers):
            break
    return ScrapeRound(answers, scrapes, failures=tuple(dict.fromkeys(failures))[:MAX_FAILURE_NOTES])


async def _nudge(reader: MetricsReader) -> None:
    # Unready (503/500) or refused is fine: the check ran, or the scrape says what is wrong.
    with contextlib.suppress(ApiError):
        await reader.get_text(READYZ_PATH)


async def assess_once(
    api: KubeApi,
    started_at: float,
    *,
    connect: MetricsConnector | None = None,
    stale_after_seconds: float = DEFAULT_STALE_AFTER_SECONDS,
    clock: Callable[[], float] = time.time,
    nudge: bool = False,
) -> GateResult:
    """One look: live identities, one scrape round, the verdict."""
    try:
        identities = await list_identities(api)
    except (ApiError, TransportError) as error:
        if isinstance(error, ApiError) and error.status == 403:
            raise
        # Behind a balancer our kept-alive connection may stick to the one apiserver that cannot
        # read the (encrypted) Leases, e.g. its KMS plugin is down: ask over fresh connections.
        identities = await _list_identities_elsewhere(api.credentials, error)
    live = live_identities(identities, datetime.fromtimestamp(clock(), UTC), stale_after_seconds)
    wanted = [identity.id_hash for identity in live]
    found = await scrape_round(connect or fresh_connections(api.credentials), wanted, nudge=nudge)
    result = assess(live, found.answers, started_at, metrics_forbidden=found.forbidden)
    if isinstance(result, Waiting):
        result = Waiting(result.lagging, note=_round_note(result, found))
    return result


async def _list_identities_elsewhere(
    credentials: ApiCredentials, first: Exception
) -> list[ApiserverIdentity]:
    failure = first
    for _ in range(LEASE_LIST_TRIES):
        try:
            async with KubeApi(credentials, request_timeout=SCRAPE_TIMEOUT_SECONDS) as client:
                return await list_identities(client)
        except (ApiError, TransportError) as error:
            if isinstance(error, ApiError) and error.status == 403:
                raise
            failure = error
    raise failure


def _round_note(result: Waiting, found: ScrapeRound) -> str:
    """How the round went, when that explains a laggard: unreachable ones, failed scrapes."""
    notes = [result.note] if result.note else []
    unreached = any(lag.reason is Lag.NOT_REACHED for lag in result.lagging)
    if unreached or found.failures:
        # A balancer sends nothing to a backend it took out of rotation (its /readyz failing).
        notes.append(f"{found.scrapes} scrapes through {METRICS_PATH} this round")
    if found.failures:
        notes.append("failures: " + "; ".join(found.failures))
    return ", ".join(notes)


async def wait_for_convergence(
    api: KubeApi,
    started_at: float | datetime,
    timeout_seconds: float,
    on_progress: ProgressCallback | None = None,
    *,
    poll_seconds: float = DEFAULT_POLL_SECONDS,
    connect: MetricsConnector | None = None,
    stale_after_seconds: float = DEFAULT_STALE_AFTER_SECONDS,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    nudge: bool = False,
) -> GateResult:
    """Look every ``poll_seconds`` until Converged or NoMetricsAccess, at most ``timeout_seconds``.

    Returns the verdict; a :class:`Waiting` comes back only when the time ran out and says
    who still lags. ``on_progress`` gets every verdict (for status and events). Transient API
    errors count as Waiting and are retried; a missing permission to list Leases raises
    :class:`ConvergenceError`. ``nudge``: see :func:`scrape_round` (opt-in: it makes the
    apiservers poll their KMS early, instead of only observing them).
    """
    start = started_at.timestamp() if isinstance(started_at, datetime) else started_at
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            result = await assess_once(
                api,
                start,
                connect=connect,
                stale_after_seconds=stale_after_seconds,
                clock=clock,
                nudge=nudge,
            )
        except (TransportError, ApiError) as error:
            reason = f"{error.status} {error.reason}" if isinstance(error, ApiError) else type(error).__name__
            result = Waiting((), note=f"cannot list the identity Leases ({reason}); retrying")
        if on_progress is not None:
            await on_progress(result)
        remaining = deadline - time.monotonic()
        if not isinstance(result, Waiting) or remaining <= 0:
            return result
        logger.debug("key convergence: %s", result.message)
        await sleep(min(poll_seconds, remaining))
