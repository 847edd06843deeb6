"""What the operator integration tests share: the operator as a real process, and ways to look.

The operator runs as ``python -m kms_storage_migrator run`` in a subprocess (so ``kill -9`` is
real); StorageMigrations are applied and read with kubectl; etcd is judged by the project's
own ``scan`` command, which reads etcd independently of the operator.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

from kms_storage_migrator.devcluster import processes
from kms_storage_migrator.devcluster.cluster import DevCluster

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "storagemigrations.yaml"
TERMINAL = ("Succeeded", "Failed")
# Fields the apiserver changes on every write; the content is everything else.
VOLATILE_METADATA = ("resourceVersion", "managedFields", "generation")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def install_crd(cluster: DevCluster) -> None:
    cluster.kubectl("apply", "-f", str(CRD))
    cluster.wait_established("storagemigrations.kms-storage-migrator.io")


class OperatorProcess:
    """``kms-storage-migrator run`` against one dev cluster, logging to a file."""

    def __init__(
        self,
        cluster: DevCluster,
        log: Path,
        *,
        etcd: bool = True,
        program_args: Sequence[str] = (),
        run_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.cluster = cluster
        self.log = log
        self.etcd = etcd
        # Flags before `run` (e.g. --verbose) and after its own, and variables added to ours.
        self.program_args = tuple(program_args)
        self.run_args = tuple(run_args)
        self.env = dict(env or {})
        self.metrics_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        command = [
            sys.executable,
            "-m",
            "kms_storage_migrator",
            *self.program_args,
            "run",
            "--kubeconfig",
            str(self.cluster.kubeconfig),
            "--metrics-port",
            str(self.metrics_port),
        ]
        if self.etcd:
            command += ["--etcd-config", str(self.cluster.etcd_config)]
        command += self.run_args
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env}
            )
        return self

    def kill_9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as reply:
            return reply.read().decode()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def apply_migration(cluster: DevCluster, name: str, spec: dict[str, Any]) -> None:
    document = {
        "apiVersion": "kms-storage-migrator.io/v1alpha1",
        "kind": "StorageMigration",
        "metadata": {"name": name},
        "spec": spec,
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(document))


def migration(cluster: DevCluster, name: str) -> dict[str, Any]:
    return json.loads(cluster.kubectl("get", "storagemigration", name, "-o", "json"))


def wait_for(
    cluster: DevCluster, name: str, condition: Callable[[dict[str, Any]], bool], *, timeout: float, log: Path
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        current = migration(cluster, name)
        if condition(current):
            return current
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
            status = json.dumps(current.get("status"), indent=1)[:4000]
            raise AssertionError(
                f"StorageMigration {name} did not get there in {timeout}s; status={status}\n{tail}"
            )
        time.sleep(0.5)


def wait_finished(cluster: DevCluster, name: str, *, log: Path, timeout: float = 300) -> dict[str, Any]:
    return wait_for(
        cluster, name, lambda m: (m.get("status") or {}).get("phase") in TERMINAL, timeout=timeout, log=log
    )


def objects(cluster: DevCluster, kinds: str, namespaces: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Full objects of the given kinds in the given namespaces, keyed by kind/namespace/name."""
    found: dict[str, dict[str, Any]] = {}
    for namespace in namespaces:
        listing = json.loads(cluster.kubectl("get", kinds, "-n", namespace, "-o", "json"))
        for item in listing["items"]:
            meta = item["metadata"]
            found[f"{item['kind']}/{meta.get('namespace', '')}/{meta['name']}"] = item
    return found


def cluster_objects(cluster: DevCluster, kinds: str) -> dict[str, dict[str, Any]]:
    listing = json.loads(cluster.kubectl("get", kinds, "-o", "json"))
    return {f"{i['kind']}//{i['metadata']['name']}": i for i in listing["items"]}


def content(item: dict[str, Any]) -> dict[str, Any]:
    """An object without what every write changes: what must survive a migration unchanged."""
    copy = json.loads(json.dumps(item))
    for field in VOLATILE_METADATA:
        copy["metadata"].pop(field, None)
    return copy


def resource_versions(found: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {key: item["metadata"]["resourceVersion"] for key, item in found.items()}


def scan(cluster: DevCluster, *resources: str) -> dict[str, Any]:
    """The inventory of etcd against the cluster's current key id (independent of the operator)."""
    return cluster.scan_report(*resources)


@contextmanager
def etcd_stopped(cluster: DevCluster) -> Iterator[None]:
    """etcd really stopped (its process gone, the port closed), then started again as the cluster
    starts it: same data, same port, the same certificates."""
    state = cluster.load_state()
    ticks = getattr(state, "start_ticks", {}).get("etcd")
    options = {"start_ticks": ticks} if ticks is not None else {}
    processes.stop(state.pids.get("etcd"), *cluster._identity("etcd"), **options)
    try:
        yield
    finally:
        processes.wait_for_port_release(state.etcd_client_port, timeout_seconds=30)
        cluster._start_etcd(cluster.load_state())


def configmaps_list(namespace: str, count: int, *, prefix: str = "cm") -> str:
    """A Namespace and ``count`` small ConfigMaps in it, as one List for ``kubectl create -f -``."""
    items: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}]
    items += [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"{prefix}-{index:05d}", "namespace": namespace},
            "data": {"value": str(index), "note": "legacy plaintext"},
        }
        for index in range(count)
    ]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
