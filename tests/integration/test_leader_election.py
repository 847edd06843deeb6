"""Two operator replicas with --leader-elect on the real dev cluster: one migrates, one stands by.

Who holds the Lease is read with kubectl, apart from the operators; which replica ran a
migration is read from each process's own /metrics (a replica that never ran it has no series
for it); the end state is judged by etcd (the project's independent ``scan``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from operator_harness import (
    OperatorProcess,
    apply_migration,
    configmaps_list,
    etcd_stopped,
    install_crd,
    scan,
    wait_finished,
    wait_for,
)

from kms_storage_migrator.devcluster.cluster import DevCluster
from kms_storage_migrator.leader import LEASE_DURATION_SECONDS, LEASE_LOST_EXIT_CODE, RENEW_DEADLINE_SECONDS

pytestmark = pytest.mark.integration

LEASE_NAMESPACE = "kms-leader"
LEASE_NAME = "kms-storage-migrator"
BULK = "bulk"
BULK_OBJECTS = 400
PAGE_SIZE = 25
CONFIGMAPS = {"include": ["core/configmaps"]}
# Generous bounds on a loaded machine; the expected figures are seconds (see docs/install.md).
TAKEOVER_TIMEOUT = 4 * LEASE_DURATION_SECONDS
LEASE_TIMEOUT = 60.0


class ElectingOperator(OperatorProcess):
    """``run --leader-elect`` as replica ``identity`` (POD_NAME, as the chart passes it)."""

    def __init__(self, cluster: DevCluster, log: Path, identity: str) -> None:
        super().__init__(cluster, log)
        self.identity = identity

    def start(self) -> ElectingOperator:
        command = [
            sys.executable,
            "-m",
            "kms_storage_migrator",
            "run",
            "--kubeconfig",
            str(self.cluster.kubeconfig),
            "--metrics-port",
            str(self.metrics_port),
            "--etcd-config",
            str(self.cluster.etcd_config),
            "--leader-elect",
            "--leader-elect-namespace",
            LEASE_NAMESPACE,
            "--leader-elect-name",
            LEASE_NAME,
        ]
        environment = {**os.environ, "POD_NAME": self.identity}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ran(self, migration_name: str) -> bool:
        """Whether this process's engine worked on the migration (its metrics carry the name)."""
        return f'migration="{migration_name}"' in self.metrics()

    def wait_metrics(self) -> None:
        deadline = time.monotonic() + LEASE_TIMEOUT
        while True:
            try:
                self.metrics()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


@dataclass
class Replicas:
    cluster: DevCluster
    directory: Path
    a: ElectingOperator
    b: ElectingOperator

    def lease(self) -> dict[str, Any]:
        return dict(
            json.loads(self.cluster.kubectl("get", "lease", LEASE_NAME, "-n", LEASE_NAMESPACE, "-o", "json"))[
                "spec"
            ]
        )

    def holder(self) -> str:
        return str(self.lease().get("holderIdentity") or "")

    def wait_holder(self, wanted: Callable[[str], bool], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                holder = self.holder()
            except subprocess.CalledProcessError:  # not created yet
                holder = ""
            if wanted(holder):
                return holder
            if time.monotonic() > deadline:
                raise AssertionError(f"Lease holder still {holder!r} after {timeout}s:\n{self.tails()}")
            time.sleep(0.5)

    def tails(self) -> str:
        return "\n".join(
            f"--- {replica.identity}:\n{replica.log.read_text(errors='replace')[-3000:]}"
            for replica in (self.a, self.b)
            if replica.log.exists()
        )


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    directory = tmp_path_factory.mktemp("leader-election")
    cluster = DevCluster(directory / "cluster")
    cluster.up("none")
    a = ElectingOperator(cluster, directory / "replica-a.log", "replica-a")
    b = ElectingOperator(cluster, directory / "replica-b.log", "replica-b")
    try:
        # Stored in plaintext, then the cluster switches to KMS v2: every ConfigMap is stale.
        cluster.kubectl("create", "-f", "-", input=configmaps_list(BULK, BULK_OBJECTS))
        cluster.kubectl("create", "namespace", LEASE_NAMESPACE)
        install_crd(cluster)
        cluster.encrypt()
        yield Replicas(cluster, directory, a, b)
    finally:
        a.stop()
        b.stop()
        cluster.down()


def test_one_replica_holds_the_lease_and_only_it_runs_a_migration(replicas: Replicas) -> None:
    replicas.a.start()
    assert replicas.wait_holder(lambda holder: holder != "", LEASE_TIMEOUT) == "replica-a"
    replicas.b.start()
    replicas.b.wait_metrics()  # b is up and standing by (its metrics are served from the start)
    # b tried and saw the Lease taken: it says so, and never started kopf.
    wait_until(lambda: "standing by" in replicas.b.log.read_text(), LEASE_TIMEOUT, replicas)
    assert "replica-a" in replicas.b.log.read_text()

    # Writes nothing: the ConfigMaps stay stale for the next test.
    apply_migration(replicas.cluster, "inventory", {"mode": "VerifyOnly", "resources": CONFIGMAPS})
    status = wait_finished(replicas.cluster, "inventory", log=replicas.a.log, timeout=120)["status"]
    assert status["phase"] == "Succeeded", status.get("message")
    assert status["verification"]["stale"] >= BULK_OBJECTS
    assert replicas.a.ran("inventory")
    assert not replicas.b.ran("inventory")
    assert replicas.holder() == "replica-a"
    assert replicas.a.alive()
    assert replicas.b.alive()


def test_kill_9_of_the_leader_mid_run_hands_the_migration_to_the_standby(replicas: Replicas) -> None:
    assert replicas.holder() == "replica-a"
    transitions_before = int(replicas.lease().get("leaseTransitions") or 0)
    total = len(json.loads(replicas.cluster.kubectl("get", "configmaps", "-A", "-o", "json"))["items"])
    spec = {"mode": "Full", "resources": CONFIGMAPS, "qps": 40, "concurrency": 4, "pageSize": PAGE_SIZE}
    apply_migration(replicas.cluster, "handover", spec)
    at_kill = wait_for(
        replicas.cluster,
        "handover",
        lambda m: (m.get("status") or {}).get("totals", {}).get("rewritten", 0) >= 100,
        timeout=120,
        log=replicas.a.log,
    )["status"]
    replicas.a.kill_9()
    assert at_kill["phase"] == "Migrating"
    assert not replicas.b.ran("handover")  # until now the standby did nothing

    # b takes over once the dead holder's Lease has run out, without anyone restarting a.
    assert replicas.wait_holder(lambda holder: holder == "replica-b", TAKEOVER_TIMEOUT) == "replica-b"
    assert int(replicas.lease()["leaseTransitions"]) == transitions_before + 1
    status = wait_finished(replicas.cluster, "handover", log=replicas.b.log, timeout=300)["status"]
    assert status["phase"] == "Succeeded", status.get("message")
    assert status["verification"]["result"] == "Verified"
    totals = status["totals"]
    # Resumed from a's checkpoint: every object counted once, only the interrupted page twice.
    assert totals["rewritten"] + totals["unchanged"] + totals["conflicts"] == total
    assert totals["unchanged"] + totals["conflicts"] <= PAGE_SIZE
    assert totals["failed"] == 0
    assert replicas.b.ran("handover")
    inventory = scan(replicas.cluster, "configmaps")
    assert inventory["summary"]["stale"] == 0, inventory["summary"]


def test_sigterm_of_the_leader_releases_the_lease(replicas: Replicas) -> None:
    assert replicas.holder() == "replica-b"
    assert not replicas.a.alive()
    process = replicas.b.process
    assert process is not None
    replicas.b.stop()
    assert process.returncode == 0, replicas.tails()
    # Nobody else runs, so only b's own release can have cleared the holder.
    lease = replicas.lease()
    assert not lease.get("holderIdentity"), lease
    # A replica starting now takes it at its first try: nothing to wait out.
    replicas.a.start()
    assert replicas.wait_holder(lambda holder: holder == "replica-a", LEASE_TIMEOUT) == "replica-a"
    text = replicas.a.log.read_text()
    assert "standing by: Lease kms-leader/kms-storage-migrator is held by replica-b" not in text
    assert text.count("became leader") == 2  # once in the first test, once now


def test_a_leader_that_loses_the_lease_exits_at_once(replicas: Replicas) -> None:
    assert replicas.holder() == "replica-a"
    process = replicas.a.process
    assert process is not None
    # Another writer takes the Lease (as a replica that saw it expire would): a must stop.
    replicas.cluster.kubectl(
        "patch",
        "lease",
        LEASE_NAME,
        "-n",
        LEASE_NAMESPACE,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"holderIdentity": "someone-else"}}),
    )
    process.wait(timeout=LEASE_TIMEOUT)
    assert process.returncode == LEASE_LOST_EXIT_CODE, replicas.tails()
    assert "leadership lost" in replicas.a.log.read_text()
    assert replicas.holder() == "someone-else"  # and it did not write itself back in


def test_a_leader_that_cannot_renew_exits_at_its_renew_deadline(replicas: Replicas) -> None:
    # A fresh start: the Lease of the last test names a holder nobody runs.
    replicas.cluster.kubectl("delete", "lease", LEASE_NAME, "-n", LEASE_NAMESPACE)
    replicas.b.start()
    assert replicas.wait_holder(lambda holder: holder == "replica-b", LEASE_TIMEOUT) == "replica-b"
    process = replicas.b.process
    assert process is not None
    # etcd stopped: the apiserver cannot store a renewal, so b cannot know it still leads, and
    # must stop before the lease duration, after which a standby would be entitled to take over.
    with etcd_stopped(replicas.cluster):
        process.wait(timeout=LEASE_TIMEOUT)
    assert process.returncode == LEASE_LOST_EXIT_CODE, replicas.tails()
    assert f"not renewed for {RENEW_DEADLINE_SECONDS:g}s" in replicas.b.log.read_text()


def wait_until(condition: Callable[[], bool], timeout: float, replicas: Replicas) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s:\n{replicas.tails()}")
        time.sleep(0.5)


def test_a_bad_lease_setting_is_refused_in_one_line_before_anything_starts(tmp_path: Path) -> None:
    # An empty name, not a missing namespace: a machine that is itself a pod has a namespace.
    command = [sys.executable, "-m", "kms_storage_migrator", "run", "--metrics-port", "0", "--leader-elect"]
    completed = subprocess.run(
        [*command, "--leader-elect-namespace", "ops", "--leader-elect-name", ""],
        capture_output=True,
        text=True,
        timeout=60,  # refused before anything starts; a started operator would run until killed
        cwd=tmp_path,
        check=False,
    )
    assert completed.returncode == 2, completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert "--leader-elect-name: must not be empty" in lines[0]
