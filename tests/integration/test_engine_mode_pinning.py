"""A migration keeps its mode across a resume, on a real cluster (issue 8, fix 1).

Started without etcd access (Auto means Full), the operator is killed mid-run and restarted
with etcd access (a Helm upgrade adding it). Before the fix the resumed run re-resolved Auto to
Targeted, read the Full list checkpoint as an etcd key, marked ConfigMaps Done with no further
write and left hundreds of them plaintext. Judged by the scan, which reads etcd on its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from operator_harness import (
    OperatorProcess,
    apply_migration,
    configmaps_list,
    install_crd,
    scan,
    wait_finished,
    wait_for,
)

from kms_storage_migrator.devcluster.cluster import DevCluster

pytestmark = pytest.mark.integration

NAMESPACE = "pinned"
OBJECTS = 600
PAGE_SIZE = 25
SPEC = {"resources": {"include": ["core/configmaps"]}, "qps": 40, "concurrency": 4, "pageSize": PAGE_SIZE}


@pytest.fixture(scope="module")
def plaintext_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DevCluster, Path]]:
    directory = tmp_path_factory.mktemp("engine-mode-pinning")
    cluster = DevCluster(directory / "cluster")
    cluster.up("none")
    try:
        cluster.kubectl("create", "-f", "-", input=configmaps_list(NAMESPACE, OBJECTS))
        install_crd(cluster)
        cluster.encrypt()
        yield cluster, directory
    finally:
        cluster.down()


def test_a_full_run_resumed_with_etcd_access_finishes_as_full_and_verified(
    plaintext_cluster: tuple[DevCluster, Path],
) -> None:
    cluster, directory = plaintext_cluster
    log = directory / "operator.log"
    total = len(json.loads(cluster.kubectl("get", "configmaps", "-A", "-o", "json"))["items"])
    api_only = OperatorProcess(cluster, log, etcd=False).start()
    try:
        apply_migration(cluster, "pinned", SPEC)
        at_kill = wait_for(
            cluster,
            "pinned",
            lambda m: (m.get("status") or {}).get("totals", {}).get("rewritten", 0) >= 150,
            timeout=120,
            log=log,
        )["status"]
    finally:
        api_only.kill_9()
    assert at_kill["mode"] == "Full"
    assert at_kill["phase"] == "Migrating"

    with OperatorProcess(cluster, log, etcd=True):
        status = wait_finished(cluster, "pinned", log=log)["status"]

    assert status["mode"] == "Full", status["message"]
    assert status["phase"] == "Succeeded", status["message"]
    assert status["verification"]["result"] == "Verified"
    totals = status["totals"]
    # Every object counted once: only the page cut short by the kill is walked twice.
    assert totals["rewritten"] + totals["unchanged"] + totals["conflicts"] == total
    assert totals["unchanged"] + totals["conflicts"] <= PAGE_SIZE
    assert totals["failed"] == 0
    inventory = scan(cluster, "configmaps")
    assert inventory["summary"]["stale"] == 0, inventory["summary"]
    assert inventory["summary"]["plaintext"] == 0, inventory["summary"]


def test_a_targeted_run_resumed_without_etcd_access_converts_and_counts_each_object_once(
    plaintext_cluster: tuple[DevCluster, Path],
) -> None:
    """The reverse: before the fix the resumed Full walk could not read the etcd-key checkpoint,
    listed everything again and counted the objects done under Targeted twice."""
    cluster, directory = plaintext_cluster
    log = directory / "operator-reverse.log"
    total = len(json.loads(cluster.kubectl("get", "configmaps", "-A", "-o", "json"))["items"])
    cluster.rotate_kek(restart=True)  # every ConfigMap is now under an old key: Targeted rewrites them all
    with_etcd = OperatorProcess(cluster, log, etcd=True).start()
    try:
        apply_migration(cluster, "reverse", SPEC)
        at_kill = wait_for(
            cluster,
            "reverse",
            lambda m: (m.get("status") or {}).get("totals", {}).get("rewritten", 0) >= 150,
            timeout=120,
            log=log,
        )["status"]
    finally:
        with_etcd.kill_9()
    assert (at_kill["mode"], at_kill["phase"]) == ("Targeted", "Migrating")

    with OperatorProcess(cluster, log, etcd=False):
        status = wait_finished(cluster, "reverse", log=log)["status"]

    assert status["mode"] == "Full", status["message"]
    assert status["phase"] == "Succeeded", status["message"]
    totals = status["totals"]
    done = totals["rewritten"] + totals["unchanged"] + totals["conflicts"]
    # Each object counted once: what Targeted did before the kill is not listed and counted again.
    assert total - PAGE_SIZE <= done <= total, totals
    assert totals["failed"] == 0
    events = json.loads(cluster.kubectl("get", "events", "-n", "default", "-o", "json"))["items"]
    assert any(e["reason"] == "ModeConverted" and e["involvedObject"]["name"] == "reverse" for e in events)
    inventory = scan(cluster, "configmaps")
    assert inventory["summary"]["stale"] == 0, inventory["summary"]
