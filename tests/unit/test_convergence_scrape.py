"""The scrape round's bounds and the wait loop, against fake connections (pure control flow).

What the real apiserver answers is proven in tests/integration/test_convergence_rotation.py; here
only the loop logic: when a round stops, what a 403 or a dropped connection becomes.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from kms_storage_migrator.convergence.gate import Converged, Lag, NoMetricsAccess, Waiting
from kms_storage_migrator.convergence.identity import apiserver_id_hash
from kms_storage_migrator.convergence.keyids import key_id_hash
from kms_storage_migrator.convergence.metrics import STATUS_METRIC, USE_METRIC
from kms_storage_migrator.convergence.scrape import (
    assess_once,
    fresh_connections,
    scrape_round,
    wait_for_convergence,
)
from kms_storage_migrator.kube import ApiCredentials, ApiError, ApiResponse, KubeApi, TransportError

KEK = key_id_hash("kek-2")
START = 1_796_000_000.0


def _metrics(apiserver_id: str, status_at: float) -> str:
    labels = f'apiserver_id_hash="{apiserver_id_hash(apiserver_id)}",key_id_hash="{KEK}",provider_name="kms"'
    return (
        f"{STATUS_METRIC}{{{labels}}} {status_at}\n"
        f'{USE_METRIC}{{{labels},transformation_type="to_storage"}} {status_at + 1}\n'
    )


@dataclass
class Backend:
    """One apiserver behind the fake balancer: an answer per path, or an exception to raise."""

    answers: dict[str, str | Exception]
    calls: list[str] = field(default_factory=list)

    async def get_text(self, path: str) -> str:
        self.calls.append(path)
        answer = self.answers[path]
        if isinstance(answer, Exception):
            raise answer
        return answer


def balancer(
    backends: list[Backend],
) -> tuple[Callable[[], contextlib.AbstractAsyncContextManager[Backend]], list[int]]:
    """Round robin over fresh connections, as HAProxy's default; records which backend each got."""
    picked: list[int] = []

    @contextlib.asynccontextmanager
    async def connect() -> AsyncIterator[Backend]:
        index = len(picked) % len(backends)
        picked.append(index)
        yield backends[index]

    return connect, picked


async def test_a_round_stops_once_every_wanted_apiserver_answered() -> None:
    one, two = Backend({"/metrics": _metrics("one", START)}), Backend({"/metrics": _metrics("two", START)})
    connect, picked = balancer([one, two])
    found = await scrape_round(connect, [apiserver_id_hash("one"), apiserver_id_hash("two")])
    assert picked == [0, 1]
    assert set(found.answers) == {apiserver_id_hash("one"), apiserver_id_hash("two")}


async def test_a_round_is_bounded_when_an_apiserver_never_answers() -> None:
    one = Backend({"/metrics": _metrics("one", START)})
    connect, picked = balancer([one])
    found = await scrape_round(connect, [apiserver_id_hash("one"), apiserver_id_hash("two")])
    assert len(picked) == found.scrapes == 3 * 2 + 2
    assert apiserver_id_hash("two") not in found.answers


async def test_forbidden_ends_the_round_at_once() -> None:
    denied = ApiError(403, "Forbidden", 'forbidden: User "x" cannot get path "/metrics"')
    connect, picked = balancer([Backend({"/metrics": denied})])
    found = await scrape_round(connect, [apiserver_id_hash("one")])
    assert picked == [0]
    assert found.forbidden == '403 Forbidden: forbidden: User "x" cannot get path "/metrics"'


async def test_dropped_connections_are_noted_and_the_next_connection_tried() -> None:
    broken = Backend({"/metrics": TransportError("GET /metrics: ClientOSError: Connection reset by peer")})
    one = Backend({"/metrics": _metrics("one", START)})
    connect, picked = balancer([broken, one])
    found = await scrape_round(connect, [apiserver_id_hash("one")])
    assert picked == [0, 1]
    assert found.failures == ("Connection reset by peer",)
    assert apiserver_id_hash("one") in found.answers


async def test_nudge_asks_readyz_first_on_the_same_connection_and_ignores_its_failure() -> None:
    unready = ApiError(500, "HTTP500", "")
    one = Backend({"/readyz": unready, "/metrics": _metrics("one", START)})
    connect, _ = balancer([one])
    await scrape_round(connect, [apiserver_id_hash("one")], nudge=True)
    assert one.calls == ["/readyz", "/metrics"]
    await scrape_round(connect, [apiserver_id_hash("one")])
    assert one.calls[2:] == ["/metrics"]


@dataclass
class FakeApi:
    """The Lease list the gate asks for; ``credentials`` is unused because ``connect`` is given."""

    leases: dict
    credentials: object = None

    async def request(self, method: str, path: str, **_: object) -> ApiResponse:
        assert (method, path) == ("GET", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases")
        return ApiResponse(200, self.leases)


def _leases(*names: str, renewed: float) -> dict:
    renew = datetime.fromtimestamp(renewed, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "items": [
            {
                "metadata": {"name": name, "labels": {"apiserver.kubernetes.io/identity": "kube-apiserver"}},
                "spec": {"leaseDurationSeconds": 3600, "renewTime": renew},
            }
            for name in names
        ]
    }


async def test_wait_returns_converged_after_reporting_each_waiting_round() -> None:
    backend = Backend({"/metrics": _metrics("one", START - 10)})
    connect, _ = balancer([backend])
    seen: list[object] = []
    sleeps: list[float] = []

    async def progress(result: object) -> None:
        seen.append(result)
        if len(seen) == 2:  # the apiserver polls its Status between the 2nd and 3rd look
            backend.answers["/metrics"] = _metrics("one", START + 30)

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    result = await wait_for_convergence(
        FakeApi(_leases("one", renewed=START + 25)),  # type: ignore[arg-type]
        START,
        600,
        progress,
        connect=connect,
        clock=lambda: START + 30,
        sleep=sleep,
    )
    assert isinstance(result, Converged)
    assert [type(r) for r in seen] == [Waiting, Waiting, Converged]
    assert isinstance(seen[0], Waiting)
    assert seen[0].lagging[0].reason is Lag.NO_STATUS_SINCE_START
    assert sleeps == [5.0, 5.0]


async def test_wait_gives_up_with_the_last_waiting_when_time_runs_out() -> None:
    connect, _ = balancer([Backend({"/metrics": _metrics("one", START - 10)})])

    async def sleep(seconds: float) -> None:
        return None

    result = await wait_for_convergence(
        FakeApi(_leases("one", renewed=START)),  # type: ignore[arg-type]
        START,
        0,
        connect=connect,
        clock=lambda: START + 5,
        sleep=sleep,
    )
    assert isinstance(result, Waiting)
    assert result.lagging[0].apiserver_id == "one"


async def test_wait_returns_no_metrics_access_without_waiting() -> None:
    denied = ApiError(403, "Forbidden", "cannot get path /metrics")
    connect, _ = balancer([Backend({"/metrics": denied})])
    result = await wait_for_convergence(
        FakeApi(_leases("one", renewed=START)),  # type: ignore[arg-type]
        START,
        600,
        connect=connect,
        clock=lambda: START + 5,
    )
    assert isinstance(result, NoMetricsAccess)


async def test_each_fresh_connection_uses_the_token_file_as_it_is_now(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first-token\n")
    credentials = ApiCredentials(
        server="https://127.0.0.1:1", token="startup-token", token_path=str(token_file)
    )
    connect = fresh_connections(credentials)
    async with connect() as client:
        assert isinstance(client, KubeApi)
        assert client.credentials.token == "first-token"
    token_file.write_text("rotated-token\n")  # the kubelet rotated it
    async with connect() as client:
        assert isinstance(client, KubeApi)
        assert client.credentials.token == "rotated-token"


async def test_an_unreached_apiserver_is_reported_with_the_number_of_scrapes_tried() -> None:
    connect, _ = balancer([Backend({"/metrics": _metrics("one", START + 10)})])
    result = await assess_once(
        FakeApi(_leases("one", "two", renewed=START)),  # type: ignore[arg-type]
        START,
        connect=connect,
        clock=lambda: START + 5,
    )
    assert isinstance(result, Waiting)
    assert [(lag.apiserver_id, lag.reason) for lag in result.lagging] == [("two", Lag.NOT_REACHED)]
    assert result.message.startswith("waiting for the apiservers to use the KMS's current key: ")
    assert "8 scrapes through /metrics this round; two did not answer any /metrics scrape" in result.message
