"""An etcd outage during Migrating is waited out, never terminal, on a real cluster (issue 8, fix 2).

etcd is stopped for 60 s while the operator (with etcd access, so Targeted) rewrites; the
apiserver loses its storage too and answers writes with 504 after about 34 s. The spec allows
one attempt per object, so the outage reaches the engine instead of being absorbed by the
per-object retries (a second attempt would simply wait out a short outage). Before the fix the
page's objects counted as failed and the next etcd read ended the migration Failed for good
("etcd at ...: connection refused"). Judged by the scan, which reads etcd on its own, and by
the events the operator leaves on the CR.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

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

pytestmark = pytest.mark.integration

NAMESPACE = "outage"
OBJECTS = 2500
OUTAGE_SECONDS = 60
SPEC = {
    "resources": {"include": ["core/configmaps"]},
    "qps": 50,
    "concurrency": 8,
    "pageSize": 8,
    "maxAttemptsPerObject": 1,
}


@pytest.fixture(scope="module")
def plaintext_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DevCluster, Path]]:
    directory = tmp_path_factory.mktemp("engine-etcd-outage")
    cluster = DevCluster(directory / "cluster")
    cluster.up("none")
    try:
        for batch in range(OBJECTS // 500):  # kubectl sends one request per object; 500 per call
            cluster.kubectl("apply", "-f", "-", input=configmaps_list(NAMESPACE, 500, prefix=f"cm{batch}"))
        install_crd(cluster)
        cluster.encrypt()
        yield cluster, directory
    finally:
        cluster.down()


def test_a_60_second_etcd_outage_while_migrating_is_survived(
    plaintext_cluster: tuple[DevCluster, Path],
) -> None:
    cluster, directory = plaintext_cluster
    log = directory / "operator.log"
    total = len(json.loads(cluster.kubectl("get", "configmaps", "-n", NAMESPACE, "-o", "json"))["items"])
    assert total == OBJECTS
    with OperatorProcess(cluster, log, etcd=True):
        apply_migration(cluster, "outage", SPEC)
        before = wait_for(
            cluster,
            "outage",
            lambda m: (m.get("status") or {}).get("totals", {}).get("rewritten", 0) >= 300,
            timeout=180,
            log=log,
        )["status"]
        assert before["phase"] == "Migrating"
        with etcd_stopped(cluster):
            time.sleep(OUTAGE_SECONDS)
        status = wait_finished(cluster, "outage", log=log, timeout=600)["status"]

    assert status["phase"] == "Succeeded", status["message"]
    assert status["mode"] == "Targeted"
    assert status["verification"]["result"] == "Verified"
    assert status["totals"]["failed"] == 0
    inventory = scan(cluster, "configmaps")
    assert inventory["summary"]["stale"] == 0, inventory["summary"]
    # The operator said what it waited for, kept the phase, and said when it went on.
    text = log.read_text(errors="replace")
    assert "the apiserver unavailable: /readyz" in text or "etcd unavailable" in text
    assert "phase Migrating kept, retry 1 in 2s" in text
    events = json.loads(cluster.kubectl("get", "events", "-n", "default", "-o", "json"))["items"]
    reasons = {e["reason"] for e in events if e["involvedObject"]["name"] == "outage"}
    # Events are best effort: in one CI rehearsal the apiserver's first writes after etcd came
    # back were answered 504 after 34 s, this event among them; the operator then logs that it
    # could not record it. Either way it announced the end of the outage.
    announced = "cannot record event InfrastructureAvailable on outage" in text
    assert "InfrastructureAvailable" in reasons or announced, reasons
    assert "answers again after" in text
    assert "ObjectNotRewritten" not in reasons, reasons
