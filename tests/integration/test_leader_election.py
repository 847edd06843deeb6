"""Two operator replicas with --leader-elect on the real dev cluster: one migrates, one stands by.

Who holds the Lease is read with kubectl, apart from the operators; which replica ran a
migration is read from each process's own /metrics (a replica that never ran it has no series
for it); the end state is judged by etcd (the project's independent ``scan``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
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
    migration,
    scan,
    wait_finished,
    wait_for,
)
from prometheus_client.parser import text_string_to_metric_families

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

    def __init__(
        self,
        cluster: DevCluster,
        log: Path,
        identity: str,
        *,
        program_args: Sequence[str] = (),
        run_args: Sequence[str] = (),
    ) -> None:
        # program_args and run_args: what a `helm upgrade` changes (operator.verbose, qps, ...).
        election = (
            "--leader-elect",
            "--leader-elect-namespace",
            LEASE_NAMESPACE,
            "--leader-elect-name",
            LEASE_NAME,
        )
        super().__init__(
            cluster,
            log,
            program_args=program_args,
            run_args=(*election, *run_args),
            env={"POD_NAME": identity},
        )
        self.identity = identity

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def handled(self, migration_name: str) -> int:
        """Objects this process's engine finished for the migration, any outcome (its metrics)."""
        return sum(
            int(sample.value)
            for family in text_string_to_metric_families(self.metrics())
            for sample in family.samples
            if sample.name == "kms_storage_migrator_objects_total"
            and sample.labels.get("migration") == migration_name
        )

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


def test_a_rolling_upgrade_mid_migration_hands_it_to_the_new_pod_with_its_new_args(
    replicas: Replicas,
) -> None:
    """`helm upgrade` with leader election: the new pod (new args) stands by, the old one gets
    SIGTERM and releases the Lease, the new one takes over and resumes from the checkpoint."""
    assert not replicas.a.alive()
    assert not replicas.b.alive()
    # A fresh start: the last test left a Lease naming a replica that exited.
    replicas.cluster.kubectl("delete", "lease", LEASE_NAME, "-n", LEASE_NAMESPACE, "--ignore-not-found")
    # A KEK rotation (apiserver restarted: it writes with the new key at once) makes every
    # ConfigMap stale again, so the upgrade interrupts real re-encryption.
    new_key = replicas.cluster.rotate_kek(restart=True)
    directory = replicas.directory
    # The old release: a slow default qps, so the migration is still running at the upgrade.
    old = ElectingOperator(replicas.cluster, directory / "old.log", "pod-old", run_args=["--qps", "10"])
    # The upgraded values: operator.verbose=true and a higher operator.qps.
    new = ElectingOperator(
        replicas.cluster,
        directory / "new.log",
        "pod-new",
        program_args=["--verbose"],
        run_args=["--qps", "60"],
    )
    pair = Replicas(replicas.cluster, directory, old, new)
    try:
        old.start()
        assert pair.wait_holder(lambda holder: holder != "", LEASE_TIMEOUT) == "pod-old"
        # No qps in the spec: the operator's --qps applies, and the upgrade changes it.
        spec = {"mode": "Full", "resources": CONFIGMAPS, "concurrency": 4, "pageSize": PAGE_SIZE}
        apply_migration(replicas.cluster, "upgrade", spec)
        wait_for(
            replicas.cluster,
            "upgrade",
            lambda m: (m.get("status") or {}).get("totals", {}).get("rewritten", 0) >= 50,
            timeout=120,
            log=old.log,
        )
        # maxSurge 1: the new pod starts first and waits for the Lease.
        new.start()
        wait_until(lambda: "standing by" in new.log.read_text(), LEASE_TIMEOUT, pair)
        assert not new.ran("upgrade")
        old_process = old.process
        assert old_process is not None
        # Still mid-run, or this would test nothing.
        assert migration(replicas.cluster, "upgrade")["status"]["phase"] == "Migrating"
        done_by_old = old.handled("upgrade")
        terminated_at = time.monotonic()
        old.stop()  # SIGTERM, as the kubelet sends it to the old ReplicaSet's pod
        assert old_process.returncode == 0, pair.tails()
        # Released on the way out (or already taken by the standby's next try).
        assert pair.holder() in ("", "pod-new"), pair.lease()

        assert pair.wait_holder(lambda holder: holder == "pod-new", TAKEOVER_TIMEOUT) == "pod-new"
        handed_over_after = time.monotonic() - terminated_at
        status = wait_finished(replicas.cluster, "upgrade", log=new.log, timeout=300)["status"]
        assert status["phase"] == "Succeeded", status.get("message")
        assert status["verification"]["result"] == "Verified"
        totals = status["totals"]
        # Every ConfigMap etcd holds counted once: the old pod's pages from the checkpoint, the
        # rest by the new pod; only a page cut short by the SIGTERM is done again.
        stored = etcd_configmap_keys(replicas.cluster)
        assert totals["rewritten"] + totals["unchanged"] + totals["conflicts"] == stored
        assert totals["unchanged"] + totals["conflicts"] <= PAGE_SIZE
        assert totals["failed"] == 0
        # Resumed, not started again: the new pod did only what the old one had not (give or
        # take the interrupted page). Read from each process's own counters.
        assert done_by_old >= 50
        assert new.handled("upgrade") <= stored - done_by_old + PAGE_SIZE
        assert status["keyId"] == new_key
        # The figures docs/install.md quotes (seen with -s).
        print(
            f"upgrade: Lease to the new pod {handed_over_after:.1f} s after SIGTERM; old pod did "
            f"{done_by_old}, new pod {new.handled('upgrade')} of {stored}; totals {totals}"
        )
        inventory = scan(replicas.cluster, "configmaps")
        assert inventory["summary"]["stale"] == 0, inventory["summary"]
        assert pair.holder() == "pod-new"
        # The new pod runs with the upgraded args: debug logging only it was given.
        assert " DEBUG " in new.log.read_text()
        assert " DEBUG " not in old.log.read_text()
    finally:
        old.stop()
        new.stop()


def etcd_configmap_keys(cluster: DevCluster) -> int:
    """How many ConfigMaps etcd stores, by etcdctl: a count the operator did not make."""
    reply = json.loads(
        cluster.etcdctl("get", "/registry/configmaps/", "--prefix", "--keys-only", "-w", "json")
    )
    return len(reply.get("kvs", []))


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
