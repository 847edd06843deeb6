"""Benchmark: re-encrypting a legacy cluster, kms-storage-migrator beside the in-tree migrator.

One run, one starting state for every contender: a plaintext dev cluster is seeded through the
apiserver, switched to KMS v2, stopped, and its directory (etcd data, PKI, keyring) copied.
Each contender starts from a fresh copy of that snapshot, so each faces the same stale objects:

- ``in-tree SVM``: kube-controller-manager's storage-version-migrator-controller (GA in 1.37),
  given one StorageVersionMigration per resource that the scan found stale (it has no
  discovery of its own);
- ``ksm Full``: our operator without etcd access (rewrites every object through the API);
- ``ksm Targeted``: our operator with etcd access (rewrites only what the scan finds stale);
- both again with ``qps: 500, concurrency: 16``: our defaults (50 qps) are deliberately gentle
  on a production apiserver, so the default rows measure the rate limit, these the engine.

For each: wall time from the request to completion, the migrator process's peak RSS, and what
the etcd scan still finds stale afterwards (the proof each contender did the job).

    .venv/bin/python benchmarks/migrate_vs_peers.py --objects 3000

Not a test: it takes minutes and the numbers depend on the machine. Results go to
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kms_storage_migrator.devcluster.cluster import DevCluster
from kms_storage_migrator.devcluster.seed import seed

REPO = Path(__file__).resolve().parents[1]
CRD = REPO / "crds" / "storagemigrations.yaml"
TIMEOUT_SECONDS = 1800


@dataclass(frozen=True)
class Result:
    contender: str
    seconds: float
    peak_rss_mb: float
    stale_before: int
    stale_after: int

    @property
    def objects_per_second(self) -> float:
        return self.stale_before / self.seconds if self.seconds else 0.0


def stale_resources(report: dict[str, Any]) -> list[tuple[str, str]]:
    return [(entry["group"], entry["resource"]) for entry in report["resources"] if entry["stale"]]


def peak_rss_mb(pid: int) -> float:
    # VmHWM is the process's own high-water mark of resident memory.
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise SystemExit(f"{what} did not finish within {TIMEOUT_SECONDS}s")


def run_in_tree(cluster: DevCluster, resources: list[tuple[str, str]]) -> tuple[float, float]:
    state = cluster.load_state()
    controller_manager = state.pids["kube-controller-manager"]
    names = []
    started = time.perf_counter()
    for index, (group, resource) in enumerate(resources):
        name = f"bench-{index}"
        names.append(name)
        migration = {
            "apiVersion": "storagemigration.k8s.io/v1",
            "kind": "StorageVersionMigration",
            "metadata": {"name": name},
            "spec": {"resource": {"group": group, "resource": resource}},
        }
        cluster.kubectl("create", "-f", "-", input=json.dumps(migration))

    def all_done() -> bool:
        listing = json.loads(cluster.kubectl("get", "storageversionmigrations", "-o", "json"))
        done = 0
        for item in listing["items"]:
            conditions = {c["type"]: c["status"] for c in item.get("status", {}).get("conditions", [])}
            if conditions.get("Failed") == "True":
                raise SystemExit(f"in-tree migration {item['metadata']['name']} failed: {item['status']}")
            done += conditions.get("Succeeded") == "True"
        return done == len(names)

    wait_for(all_done, "the in-tree migrations")
    return time.perf_counter() - started, peak_rss_mb(controller_manager)


@dataclass(frozen=True)
class Ours:
    mode: str  # Full or Targeted
    tuning: dict[str, int]

    @property
    def name(self) -> str:
        fast = " fast" if self.tuning else ""
        return f"ksm {self.mode}{fast}"


OURS = (
    Ours("Full", {}),
    Ours("Targeted", {}),
    Ours("Full", {"qps": 500, "concurrency": 16}),
    Ours("Targeted", {"qps": 500, "concurrency": 16}),
)


def run_ours(cluster: DevCluster, ours: Ours, *, log: Path) -> tuple[float, float]:
    cluster.kubectl("apply", "-f", str(CRD))
    cluster.kubectl("wait", "--for=condition=Established", "crd/storagemigrations.kms-storage-migrator.io")
    command = [sys.executable, "-m", "kms_storage_migrator", "run", "--kubeconfig", str(cluster.kubeconfig)]
    command += ["--metrics-port", "0"]
    if ours.mode == "Targeted":
        command += ["--etcd-config", str(cluster.etcd_config)]
    with log.open("wb") as sink:
        operator = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    try:
        migration = {
            "apiVersion": "kms-storage-migrator.io/v1alpha1",
            "kind": "StorageMigration",
            "metadata": {"name": "bench"},
            "spec": {"mode": ours.mode, **ours.tuning},
        }
        started = time.perf_counter()
        cluster.kubectl("create", "-f", "-", input=json.dumps(migration))

        def finished() -> bool:
            if operator.poll() is not None:
                raise SystemExit(f"the operator exited ({operator.returncode}); see {log}")
            phase = cluster.kubectl("get", "storagemigration", "bench", "-o", "jsonpath={.status.phase}")
            if phase == "Failed":
                raise SystemExit(f"our migration failed; see {log}")
            return phase == "Succeeded"

        wait_for(finished, ours.name)
        elapsed = time.perf_counter() - started
        return elapsed, peak_rss_mb(operator.pid)
    finally:
        operator.send_signal(signal.SIGTERM)
        try:
            operator.wait(timeout=30)
        except subprocess.TimeoutExpired:
            operator.kill()


def prepare_snapshot(work: Path, objects: int) -> Path:
    base = DevCluster(work / "cluster")
    base.up("none")
    try:
        created = seed(base, objects, progress=False)
        print(f"seeded {created} objects into a plaintext cluster", flush=True)
        base.encrypt()
    finally:
        base.down()
    snapshot = work / "snapshot"
    shutil.copytree(base.directory, snapshot, symlinks=True)
    return snapshot


def restore(snapshot: Path, work: Path) -> DevCluster:
    target = work / "cluster"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(snapshot, target, symlinks=True)
    return DevCluster(target)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=3000)
    parser.add_argument("--work-dir", type=Path, help="default: a new temporary directory")
    args = parser.parse_args()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="ksm-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    snapshot = prepare_snapshot(work, args.objects)

    results: list[Result] = []
    for contender in ("in-tree SVM", *OURS):
        name = contender if isinstance(contender, str) else contender.name
        cluster = restore(snapshot, work)
        cluster.up("kms", with_controller_manager=isinstance(contender, str))
        try:
            before = cluster.scan_report()
            stale = stale_resources(before)
            if isinstance(contender, str):
                seconds, rss = run_in_tree(cluster, stale)
            else:
                log = work / f"operator-{name.replace(' ', '-')}.log"
                seconds, rss = run_ours(cluster, contender, log=log)
            after = cluster.scan_report()
        finally:
            cluster.down()
        results.append(Result(name, seconds, rss, before["summary"]["stale"], after["summary"]["stale"]))
        print(f"{name}: {seconds:.1f}s, peak RSS {rss:.0f} MB", flush=True)

    reference = results[0]
    print()
    print(f"{args.objects} seeded objects; stale = plaintext or not under the current key, per the etcd scan")
    print(
        f"{'contender':<18} {'seconds':>8} {'objects/s':>10} {'peak RSS MB':>12} {'stale before':>13} "
        f"{'stale after':>12} {'speed vs in-tree':>17}"
    )
    for result in results:
        ratio = reference.seconds / result.seconds if result.seconds else float("inf")
        print(
            f"{result.contender:<18} {result.seconds:>8.1f} {result.objects_per_second:>10.0f} "
            f"{result.peak_rss_mb:>12.0f} {result.stale_before:>13} {result.stale_after:>12} {ratio:>16.2f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
