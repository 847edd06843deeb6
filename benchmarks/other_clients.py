"""Another client of the apiserver, timing its own requests: what a migration costs everyone else.

The probe sends a steady mix of light requests a typical controller or user makes: a GET of a
ConfigMap, a LIST of one namespace's ConfigMaps with ``limit=50``, and a merge PATCH of its own
ConfigMap. It is open-loop: request ``n`` starts at ``n / rate`` seconds whether or not earlier
ones have answered, so a slow apiserver shows up as latency instead of as fewer requests (a
closed loop would hide it: coordinated omission). Each answer's latency, status and the APF
headers the apiserver put on it (which FlowSchema and priority level served it) are kept.

It authenticates with a bearer token (a ServiceAccount's, so its requests are classified by API
Priority and Fairness like any in-cluster controller's) and runs on its own event loop in a
thread, so a synchronous test can keep polling while it measures:

    with OtherClient(target, rate=20).running() as probe:
        idle = probe.window(30)                      # 30 s of samples
        ...

Or from the command line, against any cluster, for a fixed time:

    .venv/bin/python benchmarks/other_clients.py --kubeconfig sa.kubeconfig --namespace probe --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import ssl
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

# The APF headers: the uids of the FlowSchema and the priority level that served a request.
FLOW_SCHEMA_HEADER = "X-Kubernetes-PF-FlowSchema-UID"
PRIORITY_LEVEL_HEADER = "X-Kubernetes-PF-PriorityLevel-UID"
TARGET_NAME = "other-client-target"
LIST_LIMIT = 50


class RequestKind(Enum):
    GET = "get"
    LIST = "list"
    PATCH = "patch"


MIX = (RequestKind.GET, RequestKind.LIST, RequestKind.PATCH)


def kind_of(sequence: int) -> RequestKind:
    """The request sent as number ``sequence``: the mix in turn, one of each per three."""
    return MIX[sequence % len(MIX)]


@dataclass(frozen=True)
class Sample:
    kind: RequestKind
    sent_at: float  # time.monotonic() when it left
    seconds: float
    status: int  # 0: no HTTP answer (connection error, timeout)
    flow_schema_uid: str
    priority_level_uid: str


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile: the smallest value with at least ``fraction`` of them at or
    below it (p99 of 400 samples is the 396th smallest). Nearest rank, not interpolation, so a
    reported p99 is a latency that was really measured."""
    if not values:
        raise ValueError("no samples to take a percentile of")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], not {fraction}")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


@dataclass(frozen=True)
class LatencySummary:
    requests: int
    errors: int
    p50: float
    p99: float
    slowest: float
    per_second: float

    def line(self) -> str:
        return (
            f"{self.requests} requests ({self.per_second:.1f}/s), {self.errors} errors, "
            f"p50 {self.p50 * 1000:.1f} ms, p99 {self.p99 * 1000:.1f} ms, max {self.slowest * 1000:.1f} ms"
        )


def summarise(samples: Sequence[Sample], seconds: float) -> LatencySummary:
    """Latency of the answered requests; anything but a 2xx counts as an error."""
    if not samples:
        raise ValueError("the probe recorded no requests in this window")
    latencies = [s.seconds for s in samples]
    errors = sum(1 for s in samples if not 200 <= s.status < 300)
    return LatencySummary(
        requests=len(samples),
        errors=errors,
        p50=percentile(latencies, 0.50),
        p99=percentile(latencies, 0.99),
        slowest=max(latencies),
        per_second=len(samples) / seconds if seconds > 0 else 0.0,
    )


def latency_bound(idle_p99: float, *, factor: float, floor: float) -> float:
    """The p99 allowed under load: ``factor`` times the idle p99, the idle p99 taken as at least
    ``floor``. A floor, because a few-millisecond idle p99 doubles from scheduler noise alone on
    a small shared machine; the floor says what latency is too small to call a regression."""
    if factor < 1 or floor < 0:
        raise ValueError(f"factor must be >= 1 and floor >= 0, not {factor} and {floor}")
    return factor * max(idle_p99, floor)


DISPATCHED = "apiserver_flowcontrol_dispatched_requests"


def dispatched_by_flow(metrics_text: str) -> dict[tuple[str, str], float]:
    """The apiserver's own count of requests APF let through, per (flow_schema, priority_level),
    from its /metrics text."""
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != DISPATCHED:
            continue
        for sample in family.samples:
            if sample.name == f"{DISPATCHED}_total":
                flow = (sample.labels["flow_schema"], sample.labels["priority_level"])
                counts[flow] = counts.get(flow, 0.0) + sample.value
    return counts


def dispatched_since(
    before: dict[tuple[str, str], float], after: dict[tuple[str, str], float]
) -> dict[tuple[str, str], float]:
    """Requests dispatched between two readings, per flow (a flow first seen later starts at 0)."""
    return {
        flow: count - before.get(flow, 0.0) for flow, count in after.items() if count > before.get(flow, 0.0)
    }


@dataclass(frozen=True)
class ProbeTarget:
    """Where the probe sends, as whom, and in which namespace its objects live."""

    server: str
    ca_pem: str
    token: str = field(repr=False)  # a credential: kept out of reprs and assertion messages
    namespace: str

    @classmethod
    def from_kubeconfig(cls, path: Path, namespace: str) -> ProbeTarget:
        """A kubeconfig's current context, which must hold a bearer token and inline CA data."""
        config = yaml.safe_load(path.read_text())
        context_name = config.get("current-context")
        context = next((c["context"] for c in config.get("contexts", []) if c["name"] == context_name), None)
        if context is None:
            raise ValueError(f"{path}: current-context {context_name!r} is not among its contexts")
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
        user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
        if "token" not in user or "certificate-authority-data" not in cluster:
            raise ValueError(
                f"{path}: user {context['user']!r} needs a 'token' and cluster {context['cluster']!r} "
                "'certificate-authority-data' (make one with `kubectl create token`)"
            )
        ca_pem = base64.b64decode(cluster["certificate-authority-data"]).decode()
        return cls(cluster["server"], ca_pem, user["token"], namespace)


class OtherClient:
    """The probe: ``rate`` requests per second of the mix, every answer recorded."""

    def __init__(self, target: ProbeTarget, *, rate: float = 20.0, timeout: float = 30.0) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, not {rate}")
        self.target = target
        self.rate = rate
        self.timeout = timeout
        self._samples: list[Sample] = []
        self._pending: dict[int, float] = {}  # sequence -> sent_at of requests not answered yet
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    @property
    def _base(self) -> str:
        return f"{self.target.server}/api/v1/namespaces/{self.target.namespace}/configmaps"

    @contextmanager
    def running(self) -> Iterator[OtherClient]:
        self._thread = threading.Thread(target=self._run, name="other-client", daemon=True)
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=self.timeout + 10)
        if self._failure is not None:
            raise RuntimeError(f"the probe stopped: {self._failure!r}") from self._failure

    def samples_between(self, start: float, end: float) -> list[Sample]:
        """Requests sent in [start, end) of time.monotonic(), once all of them have answered
        (or timed out): leaving out the slow ones still in flight would flatter the p99."""
        deadline = time.monotonic() + self.timeout + 5
        while time.monotonic() < deadline:
            with self._lock:
                if not any(sent_at < end for sent_at in self._pending.values()):
                    return [s for s in self._samples if start <= s.sent_at < end]
            time.sleep(0.05)
        raise RuntimeError(f"requests sent before the window's end still unanswered after {self.timeout}s")

    def window(self, seconds: float) -> tuple[list[Sample], float]:
        """Block for ``seconds``; the samples sent meanwhile, and the window's length."""
        start = time.monotonic()
        time.sleep(seconds)
        end = time.monotonic()
        return self.samples_between(start, end), end - start

    def _run(self) -> None:
        try:
            asyncio.run(self._send_steadily())
        except BaseException as error:  # reported by running() on exit; a thread cannot raise
            self._failure = error

    async def _send_steadily(self) -> None:
        context = ssl.create_default_context(cadata=self.target.ca_pem)
        headers = {"Authorization": f"Bearer {self.target.token}", "Accept": "application/json"}
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context, limit=20), headers=headers, timeout=timeout
        ) as session:
            await self._ensure_target(session)
            started = time.monotonic()
            in_flight: set[asyncio.Task[None]] = set()
            sequence = 0
            while not self._stop.is_set():
                delay = started + sequence / self.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(self._send(session, sequence))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                sequence += 1
            if in_flight:
                await asyncio.wait(in_flight, timeout=self.timeout)

    async def _ensure_target(self, session: aiohttp.ClientSession) -> None:
        """The probe's own ConfigMap, the one it GETs and PATCHes (409: it exists already)."""
        body = {"metadata": {"name": TARGET_NAME}, "data": {"sequence": "0"}}
        async with session.post(self._base, json=body) as response:
            if response.status not in (201, 409):
                raise RuntimeError(
                    f"creating ConfigMap {self.target.namespace}/{TARGET_NAME} answered HTTP "
                    f"{response.status}: give the probe's identity create, get, list and patch on "
                    "configmaps in its namespace"
                )

    async def _send(self, session: aiohttp.ClientSession, sequence: int) -> None:
        kind = kind_of(sequence)
        if kind is RequestKind.GET:
            method, url, body = "GET", f"{self._base}/{TARGET_NAME}", None
        elif kind is RequestKind.LIST:
            method, url, body = "GET", f"{self._base}?limit={LIST_LIMIT}", None
        else:
            method, url = "PATCH", f"{self._base}/{TARGET_NAME}"
            body = json.dumps({"data": {"sequence": str(sequence)}}).encode()
        extra = {"Content-Type": "application/merge-patch+json"} if body is not None else {}
        sent_at = time.monotonic()
        with self._lock:
            self._pending[sequence] = sent_at
        clock = time.perf_counter()
        status, flow_schema, level = 0, "", ""
        try:
            async with session.request(method, url, data=body, headers=extra) as response:
                await response.read()
                status = response.status
                flow_schema = response.headers.get(FLOW_SCHEMA_HEADER, "")
                level = response.headers.get(PRIORITY_LEVEL_HEADER, "")
        except (aiohttp.ClientError, TimeoutError):
            pass  # recorded as status 0: an error, with the time it took to fail
        sample = Sample(kind, sent_at, time.perf_counter() - clock, status, flow_schema, level)
        with self._lock:
            self._samples.append(sample)
            del self._pending[sequence]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--kubeconfig", type=Path, required=True, help="a bearer-token kubeconfig")
    parser.add_argument("--namespace", required=True, help="where the probe's ConfigMaps are")
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second (default 20)")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to measure (default 60)")
    args = parser.parse_args(argv)
    target = ProbeTarget.from_kubeconfig(args.kubeconfig, args.namespace)
    with OtherClient(target, rate=args.rate).running() as probe:
        samples, seconds = probe.window(args.seconds)
    print(summarise(samples, seconds).line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
