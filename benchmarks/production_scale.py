"""Benchmark at production scale: every contender from the same snapshot, against the ceiling.

For each scenario a dev cluster is prepared once and its directory copied; every contender
starts from a fresh copy, so each faces the same stale objects:

- ``all-stale``: N objects (Secrets, ConfigMaps and custom resources across 100 namespaces,
  mostly 0.5-8 KiB, a few near 1 MiB) stored in plaintext, then the cluster switched to KMS v2;
- ``ten-percent``: a tenth of the objects written under one KEK, the KEK rotated, the rest
  written under the new one: only the first tenth (and the cluster's own early objects) is stale;
- ``nothing-stale``: the cluster as our first run on an earlier scenario left it (every object
  under the current key), or, run alone, N objects written under KMS v2: Targeted against a
  bare ``scan`` of the same etcd.

Contenders: the ceiling (``benchmarks/ceiling``, a bare client-go sender of the same no-op
precondition patches from a list made before the clock starts), ours in Full and Targeted mode
at the defaults and at a fast setting, the in-tree StorageVersionMigration (kube-controller-manager),
and ``kubectl get -o json | kubectl replace -f -`` per resource.

Measured per run: wall time, stale objects re-encrypted per second, API requests and writes (the
apiserver's ``apiserver_request_total``), etcd puts (etcd's ``etcd_mvcc_put_total``), the
migrator's CPU seconds (``wait4`` rusage) and peak RSS (its own ``VmHWM``: see peak_rss.py),
the apiserver's CPU seconds (``/proc``), and what etcd still holds outside the KMS plugin's
primary key, read by ``etcd_truth.py`` (not the project's scanner). A run that leaves stale
objects has failed.

    .venv/bin/python benchmarks/production_scale.py --objects 50000
    .venv/bin/python benchmarks/production_scale.py --objects 200000 --contenders ceiling,ours-full-fast

Without ``--contenders``, each scenario runs the contenders of ``default_contenders``: at
LARGE_OBJECTS and more, not those whose run at the default qps alone takes N/50 s.

Raw results go to ``benchmarks/results/<timestamp>.json``; ``--chart`` draws a PNG (matplotlib).
Not a test: it takes tens of minutes and its figures depend on the machine.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from etcd_truth import Holding, read_holding
from peak_rss import PeakRss
from scale_report import ETCDCTL, SCAN, Run, draw_chart, scenario_table
from scan_vs_etcdctl import etcdctl_command

from kms_storage_migrator.devcluster.binaries import cache_root
from kms_storage_migrator.devcluster.cluster import DevCluster
from kms_storage_migrator.devcluster.seed import crd_manifest, seed

REPO = Path(__file__).resolve().parents[1]
CRD = REPO / "crds" / "storagemigrations.yaml"
CEILING_MODULE = REPO / "benchmarks" / "ceiling"
RESULTS = REPO / "benchmarks" / "results"
TIMEOUT_SECONDS = 3600
NAMESPACES = 100
BATCH = 200
BENCH_GROUP = "bench.kms-storage-migrator.io"
LARGE_OBJECT_EVERY = 2000  # one object near 1 MiB in this many
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
APISERVER_SETTLE_SECONDS = 25.0  # see measure()
SEED_WORKERS = 6  # parallel `kubectl create`: more keeps the apiserver busier than 4 on 2 cores
# From this many objects on, the default set leaves out what alone takes N/50 s (qps 50).
LARGE_OBJECTS = 20_000
NOTHING_STALE = "nothing-stale"


# ---- data -------------------------------------------------------------------------------------


def object_size(index: int, rng: random.Random) -> int:
    """Bytes of payload: most objects 0.5-8 KiB (log-uniform), one in LARGE_OBJECT_EVERY ~1 MiB."""
    if index % LARGE_OBJECT_EVERY == LARGE_OBJECT_EVERY - 1:
        return 900 * 1024
    return int(512 * 16 ** rng.random())


def bench_objects(count: int, start: int = 0, seed: int = 7) -> Iterator[dict[str, Any]]:
    """Secrets, ConfigMaps and Widgets (a custom resource) round-robin over the namespaces."""
    rng = random.Random(seed + start)  # noqa: S311 (reproducible test data, not secrets)
    for index in range(start, start + count):
        namespace = f"bench-{index % NAMESPACES:03d}"
        # Hex of random bytes: incompressible, like real keys and certificates.
        size = object_size(index, rng)
        payload = rng.randbytes(size // 2 + 1).hex()[:size]
        metadata = {"name": f"obj-{index}", "namespace": namespace}
        kind = index % 3
        if kind == 0:
            yield {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "stringData": {"v": payload}}
        elif kind == 1:
            yield {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": {"v": payload}}
        else:
            yield {
                "apiVersion": f"{BENCH_GROUP}/v1",
                "kind": "Widget",
                "metadata": metadata,
                "spec": {"v": payload},
            }


def seed_bench(cluster: DevCluster, count: int, start: int, workers: int = SEED_WORKERS) -> None:
    if start == 0:
        namespaces = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"bench-{i:03d}"}}
            for i in range(NAMESPACES)
        ]
        crd = crd_manifest(BENCH_GROUP, "widgets", "Widget", "Namespaced")
        cluster.kubectl("apply", "-f", "-", input=_as_list([crd, *namespaces]))
        cluster.wait_established(f"widgets.{BENCH_GROUP}")

    def batches() -> Iterator[list[dict[str, Any]]]:
        batch: list[dict[str, Any]] = []
        for item in bench_objects(count, start):
            batch.append(item)
            # Large objects go alone: a request body stays under the apiserver's 3 MiB limit.
            if len(batch) == BATCH or _size(item) > 100_000:
                yield batch
                batch = []
        if batch:
            yield batch

    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(
            lambda b: cluster.kubectl("create", "-f", "-", "-o", "name", input=_as_list(b)), batches()
        ):
            pass


def _size(item: dict[str, Any]) -> int:
    return len(json.dumps(item))


def _as_list(items: list[dict[str, Any]]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def prepare(work: Path, scenario: str, objects: int, mix: int = 0) -> Path:
    """Build the scenario's cluster once, stop it and keep its directory as the snapshot.

    ``mix`` adds that many objects of the dev cluster's seed (Deployments, Roles, RoleBindings,
    namespaced and cluster-scoped custom resources besides ConfigMaps and Secrets): more
    resources for every contender to discover and walk, each one more StorageVersionMigration.
    They are stale in ``all-stale`` and current in ``ten-percent``.
    """
    base = DevCluster(work / f"prepare-{scenario}")
    try:  # an interrupted preparation must not leave its cluster running
        if scenario == "all-stale":
            base.up("none")
            seed_bench(base, objects, 0)
            _seed_mix(base, mix)
            base.encrypt()
        elif scenario == NOTHING_STALE:
            base.up("kms")
            seed_bench(base, objects, 0)
            _seed_mix(base, mix)
        else:
            base.up("kms")
            tenth = objects // 10
            seed_bench(base, tenth, 0)
            base.rotate_kek(restart=True)  # the rest is written under the new key at once
            seed_bench(base, objects - tenth, tenth)
            _seed_mix(base, mix)
    finally:
        base.down()
    snapshot = work / f"snapshot-{scenario}"
    shutil.rmtree(snapshot, ignore_errors=True)
    shutil.move(str(base.directory), snapshot)
    return snapshot


def _seed_mix(cluster: DevCluster, mix: int) -> None:
    if mix:  # seed() also creates its CRDs: none without --mix, so the default data stays as it was
        seed(cluster, mix, progress=False)


def restore(snapshot: Path, work: Path) -> DevCluster:
    target = work / "cluster"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(snapshot, target, symlinks=True)
    return DevCluster(target)


# ---- measuring --------------------------------------------------------------------------------


def holding(cluster: DevCluster) -> Holding:
    reader = cluster.pki.etcd_reader
    return read_holding(
        cluster.binary("etcdctl"),
        cluster.etcd_endpoint,
        (cluster.pki.ca.cert, reader.cert, reader.key),
        "/registry/",
    )


def stale_resources(cluster: DevCluster) -> list[tuple[str, str]]:
    """(group, resource) of every resource with a stale object, from the project's scan.

    Only the peers that have no discovery of their own (in-tree SVM, kubectl) use this list; the
    verdict on every run comes from etcd_truth, not from the scan.
    """
    report = cluster.scan_report()
    return [(entry["group"], entry["resource"]) for entry in report["resources"] if entry["stale"]]


def metric_sum(text: str, name: str, where: Callable[[str], bool] = lambda labels: True) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            labels = line[len(name) : line.rfind(" ")]
            if where(labels):
                total += float(line.rsplit(" ", 1)[1])
    return total


def etcd_metrics(cluster: DevCluster) -> str:
    reader = cluster.pki.etcd_reader
    context = ssl.create_default_context(cafile=str(cluster.pki.ca.cert))
    context.load_cert_chain(str(reader.cert), str(reader.key))
    with urllib.request.urlopen(f"{cluster.etcd_endpoint}/metrics", context=context, timeout=30) as answer:  # noqa: S310
        return str(answer.read().decode())


@dataclass
class Counters:
    api_requests: float
    api_writes: float
    etcd_puts: float
    apiserver_cpu: float

    @classmethod
    def read(cls, cluster: DevCluster) -> Counters:
        api = cluster.kubectl("get", "--raw", "/metrics")
        writes = metric_sum(
            api,
            "apiserver_request_total",
            lambda labels: any(f'verb="{v}"' in labels for v in ("PATCH", "PUT", "POST", "APPLY")),
        )
        return cls(
            metric_sum(api, "apiserver_request_total"),
            writes,
            metric_sum(etcd_metrics(cluster), "etcd_mvcc_put_total"),
            _cpu_seconds(cluster.load_state().pids["kube-apiserver"]),
        )

    def minus(self, before: Counters) -> Counters:
        return Counters(*(a - b for a, b in zip(asdict(self).values(), asdict(before).values(), strict=True)))


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def spawn(command: list[str], **options: Any) -> tuple[subprocess.Popen[bytes], PeakRss]:
    """Start a contender's process with its memory sampled from the first moment."""
    process = subprocess.Popen(command, **options)
    return process, PeakRss(process.pid)


def wait_child(process: subprocess.Popen[bytes], memory: PeakRss) -> tuple[float, float]:
    """CPU seconds (rusage: the child and the descendants it waited for) and peak RSS (MB)."""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime, memory.stop()


def wait_for(condition: Callable[[], bool], what: str, every: float = 0.5) -> None:
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    raise SystemExit(f"{what} did not finish within {TIMEOUT_SECONDS}s")


# ---- contenders (each returns wall seconds, CPU seconds, peak RSS MB) ---------------------------


def ceiling_binary() -> Path:
    """Build benchmarks/ceiling once per source version, cached beside the dev cluster's binaries."""
    sources = sorted(CEILING_MODULE.glob("*"))
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in sources)).hexdigest()[:12]
    binary = cache_root() / f"ceiling-{digest}" / "ceiling"
    if not binary.exists():
        binary.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["go", "build", "-mod=readonly", "-o", str(binary), "."], cwd=CEILING_MODULE, check=True
        )
    return binary


def served_versions(cluster: DevCluster) -> dict[tuple[str, str], str]:
    """(group, resource) -> the version discovery prefers, from ``kubectl api-resources``."""
    versions = {}
    for line in cluster.kubectl("api-resources", "--no-headers").splitlines():
        parts = line.split()
        # NAME [SHORTNAMES] APIVERSION NAMESPACED KIND: APIVERSION is the field before true/false.
        at = next(i for i, part in enumerate(parts) if part in ("true", "false")) - 1
        group, _, version = parts[at].rpartition("/")
        versions[(group, parts[0])] = version
    return versions


def run_ceiling(
    cluster: DevCluster, resources: list[tuple[str, str]], workers: int = 64
) -> tuple[float, float, float]:
    versions = served_versions(cluster)
    paths = [f"{group}/{versions[(group, resource)]}/{resource}" for group, resource in resources]
    command = [str(ceiling_binary()), "--kubeconfig", str(cluster.kubeconfig), "--workers", str(workers)]
    command += ["--resources", ",".join(paths)]
    process, memory = spawn(command, stdout=subprocess.PIPE)
    assert process.stdout is not None
    report = json.loads(process.stdout.read())
    cpu, rss = wait_child(process, memory)
    if process.returncode != 0:
        raise SystemExit(f"the ceiling exited with {process.returncode}")
    return float(report["seconds"]), cpu, rss


def run_ours(
    cluster: DevCluster, mode: str, tuning: dict[str, int], log: Path, *, source: Path | None = None
) -> tuple[float, float, float]:
    """One StorageMigration, timed from its creation to Succeeded.

    ``source``: an ``operator/`` directory of another version of the project (``--baseline``),
    run instead of the installed one, for a before/after on the same snapshot.
    """
    cluster.kubectl("apply", "-f", str(CRD))
    cluster.wait_established("storagemigrations.kms-storage-migrator.io", timeout=30)
    command = [sys.executable, "-m", "kms_storage_migrator", "run", "--kubeconfig", str(cluster.kubeconfig)]
    health = _free_port()
    command += ["--metrics-port", "0", "--health-port", str(health)]
    if mode == "Targeted":
        command += ["--etcd-config", str(cluster.etcd_config)]
    environment = dict(os.environ)
    if source is not None:
        environment["PYTHONPATH"] = str(source)  # ahead of the editable install in site-packages
    with log.open("wb") as sink:
        operator, memory = spawn(command, stdout=sink, stderr=subprocess.STDOUT, env=environment)
    # A name of its own: a kept snapshot (nothing-stale) already holds an earlier run's migration.
    name = f"bench-{time.time_ns()}"
    migration = {
        "apiVersion": "kms-storage-migrator.io/v1alpha1",
        "kind": "StorageMigration",
        "metadata": {"name": name},
        "spec": {"mode": mode, **tuning},
    }
    # The clock starts once the operator is up, as an installed one is when a migration is
    # created; the interpreter's start-up (~1.5 s, ~1 CPU s) is no migration's cost. The ceiling
    # times itself the same way, after its start.
    wait_for(lambda: _serving(operator, health, log), "our operator's start-up")
    startup_cpu = _cpu_seconds(operator.pid)
    started = time.perf_counter()
    cluster.kubectl("create", "-f", "-", input=json.dumps(migration))

    path = f"/apis/kms-storage-migrator.io/v1alpha1/storagemigrations/{name}"

    def finished() -> bool:
        if operator.poll() is not None:
            raise SystemExit(f"the operator exited ({operator.returncode}); see {log}")
        phase = (cluster.get_json(path).get("status") or {}).get("phase")
        if phase == "Failed":
            raise SystemExit(f"our migration failed; see {log}")
        return phase == "Succeeded"

    profiler = _start_profiler(operator.pid, log.with_suffix(".pyspy.txt"))
    try:
        # Every 0.1 s over HTTPS: a `kubectl get` every 0.5 s added ~0.4 s on average to the end.
        wait_for(finished, f"ours {mode}", every=0.1)
        elapsed = time.perf_counter() - started
    finally:
        cpu, rss = stop_child(operator, memory)
        if profiler is not None:
            profiler.wait(timeout=120)  # py-spy writes its file once the operator has gone
    return elapsed, cpu - startup_cpu, rss


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _serving(operator: subprocess.Popen[bytes], port: int, log: Path) -> bool:
    """Whether kopf's liveness endpoint answers: its start-up activities have run."""
    if operator.poll() is not None:
        raise SystemExit(f"the operator exited ({operator.returncode}); see {log}")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


PROFILER: Path | None = None  # --profile: a py-spy binary to sample our operator with


def _start_profiler(pid: int, output: Path) -> subprocess.Popen[bytes] | None:
    """Sample the operator from outside (py-spy, non-blocking), so its own rusage stays clean."""
    if PROFILER is None:
        return None
    command = [str(PROFILER), "record", "--pid", str(pid), "--nonblocking", "--rate", "200"]
    command += ["--format", "raw", "--output", str(output)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_child(
    process: subprocess.Popen[bytes], memory: PeakRss, grace_seconds: float = 30
) -> tuple[float, float]:
    """SIGTERM, then SIGKILL after the grace period: a hung shutdown must not hang the benchmark."""
    process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_utime + usage.ru_stime, memory.stop()
        time.sleep(0.2)
    process.kill()
    return wait_child(process, memory)


def run_in_tree(cluster: DevCluster, resources: list[tuple[str, str]]) -> tuple[float, float, float]:
    controller_manager = cluster.load_state().pids["kube-controller-manager"]
    cpu_before = _cpu_seconds(controller_manager)
    started = time.perf_counter()
    for index, (group, resource) in enumerate(resources):
        migration = {
            "apiVersion": "storagemigration.k8s.io/v1",
            "kind": "StorageVersionMigration",
            "metadata": {"name": f"bench-{index}"},
            "spec": {"resource": {"group": group, "resource": resource}},
        }
        cluster.kubectl("create", "-f", "-", input=json.dumps(migration))

    def all_done() -> bool:
        listing = json.loads(cluster.kubectl("get", "storageversionmigrations", "-o", "json"))
        done = 0
        for item in listing["items"]:
            conditions = {c["type"]: c["status"] for c in item.get("status", {}).get("conditions", [])}
            if conditions.get("Failed") == "True":
                raise SystemExit(f"in-tree migration {item['metadata']['name']} failed")
            done += conditions.get("Succeeded") == "True"
        return done == len(resources)

    wait_for(all_done, "the in-tree migrations")
    elapsed = time.perf_counter() - started
    # The controller manager does more than migrate; its CPU over the run is an upper bound.
    status = Path(f"/proc/{controller_manager}/status").read_text()
    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")) / 1024
    return elapsed, _cpu_seconds(controller_manager) - cpu_before, rss


def run_kubectl_replace(cluster: DevCluster, resources: list[tuple[str, str]]) -> tuple[float, float, float]:
    """What the Kubernetes docs advise: get every object and replace it unchanged, per resource."""
    kubectl = cluster.binary("kubectl")
    steps = []
    for group, resource in resources:
        name = f"{resource}.{group}" if group else resource
        get = f"{kubectl} --kubeconfig {cluster.kubeconfig} get {name} --all-namespaces -o json"
        replace = f"{kubectl} --kubeconfig {cluster.kubeconfig} replace -f - -o name > /dev/null"
        steps.append(f"{get} | {replace}")
    started = time.perf_counter()
    process, memory = spawn(["bash", "-c", "set -o pipefail; " + " && ".join(steps)])
    cpu, rss = wait_child(process, memory)
    if process.returncode != 0:
        raise SystemExit(f"kubectl get | replace failed with {process.returncode}")
    return time.perf_counter() - started, cpu, rss


def run_scan(cluster: DevCluster) -> tuple[float, float, float]:
    """A bare `kms-storage-migrator scan` of every key: what Targeted's etcd reads compare with."""
    started = time.perf_counter()
    process, memory = spawn(cluster.scan_command(), stdout=subprocess.DEVNULL)
    cpu, rss = wait_child(process, memory)
    if process.returncode != 0:
        raise SystemExit(f"scan exited with {process.returncode}")
    return time.perf_counter() - started, cpu, rss


def run_etcdctl(cluster: DevCluster) -> tuple[float, float, float]:
    """`etcdctl get /registry --prefix`, output discarded: the read path's reference (Go, one range)."""
    started = time.perf_counter()
    process, memory = spawn(etcdctl_command(cluster), stdout=subprocess.DEVNULL)
    cpu, rss = wait_child(process, memory)
    if process.returncode != 0:
        raise SystemExit(f"etcdctl exited with {process.returncode}")
    return time.perf_counter() - started, cpu, rss


FAST = {"qps": 2000, "concurrency": 32, "pageSize": 500}
BASELINE: Path | None = None  # --baseline: the operator/ directory the *-baseline contenders run


def _baseline() -> Path:
    if BASELINE is None:
        raise SystemExit("a *-baseline contender needs --baseline DIR (an operator/ directory to compare)")
    return BASELINE


Contender = Callable[[DevCluster, list[tuple[str, str]], Path], tuple[float, float, float]]
CONTENDERS: dict[str, Contender] = {
    "ceiling": lambda c, r, w: run_ceiling(c, r),
    "ours-full-default": lambda c, r, w: run_ours(c, "Full", {}, w / "ours-full-default.log"),
    "ours-full-fast": lambda c, r, w: run_ours(c, "Full", FAST, w / "ours-full-fast.log"),
    "ours-targeted-default": lambda c, r, w: run_ours(c, "Targeted", {}, w / "ours-targeted-default.log"),
    "ours-targeted-fast": lambda c, r, w: run_ours(c, "Targeted", FAST, w / "ours-targeted-fast.log"),
    "in-tree-svm": lambda c, r, w: run_in_tree(c, r),
    "kubectl-replace": lambda c, r, w: run_kubectl_replace(c, r),
    SCAN: lambda c, r, w: run_scan(c),
    ETCDCTL: lambda c, r, w: run_etcdctl(c),
    "ours-full-fast-baseline": lambda c, r, w: run_ours(
        c, "Full", FAST, w / "ours-full-fast-baseline.log", source=_baseline()
    ),
    "ours-targeted-fast-baseline": lambda c, r, w: run_ours(
        c, "Targeted", FAST, w / "ours-targeted-fast-baseline.log", source=_baseline()
    ),
}
# Nothing to rewrite: only what reads etcd compares (a writer of every object has no stale one).
NOTHING_STALE_CONTENDERS = (
    SCAN,
    ETCDCTL,
    "ours-targeted-default",
    "ours-targeted-fast",
    "ours-targeted-fast-baseline",
)


def default_contenders(scenario: str, objects: int) -> list[str]:
    """What a scenario runs without --contenders.

    Below LARGE_OBJECTS: every contender. From there on, not the two of ours at the default
    50 qps (N/50 s each: 17 min apiece at 50k, and they measure the qps setting, not the
    engine), nor the in-tree migrator (behind kubectl-replace at 10k, 157 against 245 objects/s,
    and 3 min of controller-manager start-up and informers on top), so that 50k fits 30 min;
    kubectl-replace stays as the fastest peer. In ten-percent the ceiling and Full write
    every object, as kubectl does: the goal there is Targeted against the fastest peer.
    """
    if scenario == NOTHING_STALE:
        if objects >= LARGE_OBJECTS:
            return [SCAN, ETCDCTL, "ours-targeted-fast"]
        return list(NOTHING_STALE_CONTENDERS[:4])
    every = [c for c in CONTENDERS if c not in (SCAN, ETCDCTL) and not c.endswith("-baseline")]
    if objects < LARGE_OBJECTS:
        return every
    if scenario == "ten-percent":
        return ["ours-targeted-fast", "kubectl-replace"]
    return ["ceiling", "ours-full-fast", "ours-targeted-fast", "kubectl-replace"]


def applies(scenario: str, contender: str) -> bool:
    """The scan and etcdctl are references of nothing-stale alone, and only readers of etcd run there."""
    if scenario == NOTHING_STALE:
        return contender in NOTHING_STALE_CONTENDERS
    return contender not in (SCAN, ETCDCTL)


class LoadLog:
    """The 1-minute load average every 10 s, to a file and as the range over each run."""

    def __init__(self, path: Path, every: float = 10.0) -> None:
        self._path = path
        self._every = every
        self._stop = threading.Event()
        self._low = self._high = os.getloadavg()[0]
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        with self._path.open("a") as sink:
            while not self._stop.is_set():
                load = os.getloadavg()[0]
                self._low, self._high = min(self._low, load), max(self._high, load)
                stamp = datetime.datetime.now(datetime.UTC).strftime("%H:%M:%S")
                sink.write(f"{stamp} {load:.2f}\n")
                sink.flush()
                self._stop.wait(self._every)

    def take_range(self) -> tuple[float, float]:
        """The lowest and highest load since the last call; starts the next range at now."""
        now = os.getloadavg()[0]
        low, high = min(self._low, now), max(self._high, now)
        self._low = self._high = now
        return low, high

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def measure(
    scenario: str,
    contender: str,
    snapshot: Path,
    work: Path,
    objects: int,
    *,
    settle_seconds: float = APISERVER_SETTLE_SECONDS,
    keep_as: Path | None = None,
    load: LoadLog | None = None,
) -> Run:
    """One contender on a fresh copy of the snapshot; ``keep_as``: keep the cluster it leaves."""
    cluster = restore(snapshot, work)
    cluster.up("kms", with_controller_manager=contender == "in-tree-svm")
    up_at = time.monotonic()
    try:
        current = cluster.current_key_id()
        before_holding = holding(cluster)
        resources = stale_resources(cluster)
        # A production apiserver has been running for a while; one started seconds ago makes
        # our key-convergence gate wait for its first KMS Status poll after 20 s (measured:
        # 15 s of a 44 s run at 5k objects). Every contender starts on an apiserver this old.
        time.sleep(max(0.0, settle_seconds - (time.monotonic() - up_at)))
        before = Counters.read(cluster)
        seconds, cpu, rss = CONTENDERS[contender](cluster, resources, work)
        spent = Counters.read(cluster).minus(before)
        after_holding = holding(cluster)
        low, high = load.take_range() if load is not None else (0.0, 0.0)
    finally:
        cluster.down()
    if keep_as is not None:
        shutil.rmtree(keep_as, ignore_errors=True)
        shutil.move(str(cluster.directory), keep_as)
    stale_before = before_holding.stale(current)
    return Run(
        scenario,
        contender,
        objects,
        stale_before,
        after_holding.stale(current),
        round(seconds, 2),
        round(stale_before / seconds, 1) if seconds else 0.0,
        spent.api_requests,
        spent.api_writes,
        spent.etcd_puts,
        round(spent.apiserver_cpu, 1),
        round(cpu, 1),
        round(rss, 1),
        round(low, 2),
        round(high, 2),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=50_000)
    # nothing-stale second: it reuses what all-stale's first run of ours leaves, and the
    # ten-percent goal is the one a run stopped by time can best do without.
    parser.add_argument("--scenarios", default=f"all-stale,{NOTHING_STALE},ten-percent")
    parser.add_argument(
        "--mix", type=int, default=0, help="also seed this many objects of other kinds (devcluster seed)"
    )
    parser.add_argument(
        "--contenders",
        help="comma-separated, repeats allowed (run in that order, on every scenario they apply to); "
        f"default: see default_contenders(); choose from {', '.join(CONTENDERS)}",
    )
    parser.add_argument("--work-dir", type=Path, help="default: a new temporary directory")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument(
        "--settle",
        type=float,
        default=APISERVER_SETTLE_SECONDS,
        help="seconds each apiserver runs before a contender starts (0: a just-started one)",
    )
    parser.add_argument("--chart", type=Path, help="write a PNG chart here (needs matplotlib)")
    parser.add_argument("--profile", type=Path, help="py-spy binary: profile our operator")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="an operator/ directory of another version (e.g. `git archive HEAD~1 operator`): "
        "what the *-baseline contenders run",
    )
    parser.add_argument(
        "--reuse-snapshots",
        action="store_true",
        help="with --work-dir: start from the snapshots an earlier invocation left there (its seeded "
        "data, seeding skipped) and keep them; the objects count must be the one they were made with",
    )
    args = parser.parse_args()
    if args.reuse_snapshots and args.work_dir is None:
        parser.error("--reuse-snapshots needs --work-dir: the directory whose snapshot-* to start from")
    chosen = args.contenders.split(",") if args.contenders else None
    unknown = sorted(set(chosen or ()) - set(CONTENDERS))
    if unknown:
        parser.error(f"--contenders: unknown {', '.join(unknown)}; choose from {', '.join(CONTENDERS)}")
    scenarios = args.scenarios.split(",")
    bad = sorted(set(scenarios) - {"all-stale", "ten-percent", NOTHING_STALE})
    if bad:
        parser.error(
            f"--scenarios: unknown {', '.join(bad)}; choose from all-stale, ten-percent, {NOTHING_STALE}"
        )
    if args.baseline is not None and not (args.baseline / "kms_storage_migrator").is_dir():
        parser.error(
            f"--baseline {args.baseline}: no kms_storage_migrator package in it (give its operator/ dir)"
        )
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="ksm-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    global PROFILER, BASELINE  # flags read by run_ours
    PROFILER, BASELINE = args.profile, args.baseline
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    results = args.results_dir / f"production-scale-{stamp}.json"
    load = LoadLog(work / "load-average.log")
    print(f"work directory {work}; load average every 10 s in {work / 'load-average.log'}", flush=True)
    runs: list[Run] = []
    kept: Path | None = None  # a cluster our first run left with nothing stale
    try:
        for index, scenario in enumerate(scenarios):
            started = time.perf_counter()
            contenders = [
                c for c in chosen or default_contenders(scenario, args.objects) if applies(scenario, c)
            ]
            earlier = work / f"snapshot-{scenario}"
            if scenario == NOTHING_STALE and kept is not None:
                snapshot = kept
            elif args.reuse_snapshots and earlier.is_dir():
                snapshot = earlier  # kept by an earlier invocation with this --work-dir
                kept = snapshot if scenario == NOTHING_STALE else kept
            else:
                snapshot = prepare(work, scenario, args.objects, args.mix)
            print(f"{scenario}: prepared in {time.perf_counter() - started:.0f}s", flush=True)
            for contender in contenders:
                # Our first run on an earlier scenario leaves every object under the current
                # key: its cluster is nothing-stale's snapshot, which saves seeding N once more.
                later = scenarios[index + 1 :]
                keep = NOTHING_STALE in later and kept is None and contender.startswith("ours-")
                keep_as = work / f"snapshot-{NOTHING_STALE}" if keep else None
                run = measure(
                    scenario,
                    contender,
                    snapshot,
                    work,
                    args.objects,
                    settle_seconds=args.settle,
                    keep_as=keep_as,
                    load=load,
                )
                runs.append(run)
                if keep_as is not None and run.ok:
                    kept = keep_as
                print(json.dumps(asdict(run)), flush=True)
                # Written after every run: a long run stopped half way keeps what it measured.
                results.write_text(json.dumps([asdict(r) for r in runs], indent=1))
            if snapshot != kept and not args.reuse_snapshots:
                shutil.rmtree(snapshot, ignore_errors=True)  # its copies are what the runs used
    finally:
        load.stop()
    print(scenario_table(runs))
    print(f"results: {results}")
    if args.chart:
        draw_chart(runs, args.chart)
    return 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
