"""Benchmark: `kms-storage-migrator scan` against `etcdctl get /registry --prefix`, same keys, one run.

Seeds a fresh KMS v2 dev cluster *through the apiserver* (parallel `kubectl create` of mixed
objects: ConfigMaps, Secrets, Deployments, Roles, RoleBindings, namespaced and cluster-scoped
custom resources), and at each checkpoint times both readers over every key under /registry,
recording wall time, keys per second and each process's peak RSS (from wait4's rusage).

    .venv/bin/python benchmarks/scan_vs_etcdctl.py --checkpoints 10000,100000 --workers 6

Not a test: it takes minutes and the numbers depend on the machine. Results go to
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kms_storage_migrator.devcluster.cluster import DevCluster
from kms_storage_migrator.devcluster.seed import (
    CLUSTER_CRD,
    NAMESPACED_CRD,
    custom_resource_definitions,
    seed_objects,
)

BATCH = 250


@dataclass(frozen=True)
class Measurement:
    seconds: float
    peak_rss_mb: float


def run_measured(command: list[str]) -> Measurement:
    """Run ``command`` with stdout to /dev/null; wall time and the child's own peak RSS."""
    with open(os.devnull, "wb") as sink:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        stderr = process.stderr.read().decode() if process.stderr else ""
        raise SystemExit(f"{command[0]} failed ({process.returncode}): {stderr.strip()}")
    return Measurement(elapsed, usage.ru_maxrss / 1024)  # ru_maxrss is in KiB on Linux


def key_count(cluster: DevCluster) -> int:
    output = cluster.etcdctl("get", "/registry", "--prefix", "--count-only", "-w", "fields").decode()
    return int(next(line for line in output.splitlines() if line.startswith('"Count"')).split(":")[1])


def etcdctl_command(cluster: DevCluster) -> list[str]:
    files = json.loads(cluster.etcd_config.read_text())
    return [
        str(cluster.binary("etcdctl")),
        f"--endpoints={files['endpoints'][0]}",
        f"--cacert={files['cacert']}",
        f"--cert={files['cert']}",
        f"--key={files['key']}",
        "--command-timeout=600s",  # the 5 s default ends a one-range dump of 200k objects early
        "get",
        "/registry",
        "--prefix",
    ]


# The same scan without the CLI's other subcommands (their imports cost ~0.6 s and ~40 MB).
ENGINE_ONLY = """
import argparse, sys
from kms_storage_migrator.inventory import command
parser = argparse.ArgumentParser()
command.register(parser.add_subparsers())
args = parser.parse_args(sys.argv[1:])
sys.exit(args.handler(args))
"""


def engine_command(cluster: DevCluster) -> list[str]:
    return [sys.executable, "-c", ENGINE_ONLY, *cluster.scan_command()[3:]]


def batches(items: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    while batch := list(itertools.islice(items, size)):
        yield batch


def seed_in_parallel(cluster: DevCluster, items: Iterator[dict[str, Any]], count: int, workers: int) -> int:
    """Create ``count`` items with ``workers`` concurrent `kubectl create` processes."""
    created = 0
    slots = threading.Semaphore(workers * 2)  # bounds the batches held in memory
    lock = threading.Lock()
    started = time.perf_counter()

    def create(batch: list[dict[str, Any]]) -> None:
        nonlocal created
        try:
            listing = json.dumps({"apiVersion": "v1", "kind": "List", "items": batch})
            try:
                cluster.kubectl("create", "-f", "-", "-o", "name", input=listing)
            except subprocess.CalledProcessError as error:
                raise SystemExit(f"kubectl create failed: {error.stderr.strip()[:500]}") from None
            with lock:
                created += len(batch)
                if created % 5000 < len(batch):
                    rate = created / (time.perf_counter() - started)
                    print(f"  seeded {created}/{count} ({rate:.0f} objects/s)", flush=True)
        finally:
            slots.release()

    futures: list[Future[None]] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for batch in batches(itertools.islice(items, count), BATCH):
            slots.acquire()
            futures.append(pool.submit(create, batch))
    for future in futures:
        future.result()
    return created


def measure(cluster: DevCluster, repeats: int) -> dict[str, Any]:
    keys = key_count(cluster)
    commands = {"etcdctl": etcdctl_command(cluster), "scan": cluster.scan_command()}
    commands["engine"] = engine_command(cluster)
    runs: dict[str, list[Measurement]] = {name: [] for name in commands}
    # Interleaved, so that a change in the machine's load (it is shared) hits every reader alike.
    for _ in range(repeats):
        for name, command in commands.items():
            runs[name].append(run_measured(command))
    etcdctl, scan, engine = runs["etcdctl"], runs["scan"], runs["engine"]
    etcdctl_seconds = statistics.median(m.seconds for m in etcdctl)
    result: dict[str, Any] = {
        "keys": keys,
        "etcdctl_seconds": round(etcdctl_seconds, 3),
        "etcdctl_keys_per_second": round(keys / etcdctl_seconds),
        "etcdctl_peak_rss_mb": round(max(m.peak_rss_mb for m in etcdctl), 1),
    }
    for name, runs in (("scan", scan), ("engine", engine)):
        seconds = statistics.median(m.seconds for m in runs)
        result |= {
            f"{name}_seconds": round(seconds, 3),
            f"{name}_keys_per_second": round(keys / seconds),
            f"{name}_throughput_ratio": round(etcdctl_seconds / seconds, 2),
            f"{name}_peak_rss_mb": round(max(m.peak_rss_mb for m in runs), 1),
        }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoints", default="10000,100000", help="seeded object counts to measure at")
    parser.add_argument("--workers", type=int, default=6, help="concurrent kubectl create processes")
    parser.add_argument("--namespaces", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3, help="runs per reader per checkpoint (median time)")
    parser.add_argument("--directory", type=Path, help="cluster directory (default: a new temporary one)")
    parser.add_argument(
        "--keep", action="store_true", help="leave the seeded cluster running (for profiling)"
    )
    parser.add_argument(
        "--measure-only",
        type=Path,
        metavar="DIR",
        help="only measure the running cluster in DIR (one left by --keep), without seeding",
    )
    args = parser.parse_args()
    if args.measure_only is not None:
        result = measure(DevCluster(args.measure_only), args.repeats)
        print(json.dumps({"cpu_count": os.cpu_count(), "load": os.getloadavg(), **result}), flush=True)
        return 0
    checkpoints = sorted(int(part) for part in args.checkpoints.split(","))

    directory = args.directory or Path(tempfile.mkdtemp(prefix="ksm-bench-"))
    cluster = DevCluster(directory)
    cluster.up("kms")
    results = []
    try:
        cluster.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": custom_resource_definitions()}),
        )
        for crd in (NAMESPACED_CRD, CLUSTER_CRD):
            cluster.wait_established(crd)
        items = seed_objects(checkpoints[-1], args.namespaces)
        # The namespaces come first and must exist before parallel batches fill them.
        seeded = seed_in_parallel(cluster, items, args.namespaces, workers=1)
        seed_started = time.perf_counter()
        for checkpoint in checkpoints:
            # seed_objects yields the namespaces first; they count towards the objects.
            seeded += seed_in_parallel(cluster, items, checkpoint - seeded, args.workers)
            seed_seconds = time.perf_counter() - seed_started
            print(f"seeded {seeded} objects in {seed_seconds:.0f} s; measuring", flush=True)
            result = {
                "objects_seeded": seeded,
                "seed_seconds": round(seed_seconds),
                **measure(cluster, args.repeats),
            }
            results.append(result)
            print(json.dumps(result), flush=True)
    finally:
        if args.keep:
            print(f"cluster left running in {directory}; stop it with DevCluster(path).down()", flush=True)
        else:
            cluster.down()
    print(json.dumps({"cpu_count": os.cpu_count(), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
