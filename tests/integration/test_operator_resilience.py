"""The operator under trouble, on a real cluster: kill -9 mid-run, a denying webhook, concurrent writers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from operator_harness import (
    OperatorProcess,
    apply_migration,
    install_crd,
    migration,
    objects,
    scan,
    wait_finished,
    wait_for,
)
from webhook_server import AdmissionWebhook, Verdict, webhook_configuration

from kms_storage_migrator.devcluster.cluster import DevCluster

pytestmark = pytest.mark.integration

BULK_NAMESPACE = "bulk"
BULK_OBJECTS = 400
POLICY_NAMESPACE = "policy"
DENIED = "deny-me"
BUSY = [f"busy-{index}" for index in range(5)]
PAGE_SIZE = 25
CONFIGMAPS = {"include": ["core/configmaps"]}


@dataclass
class Troubled:
    cluster: DevCluster
    operator: OperatorProcess
    log: Path
    directory: Path

    def configmap_count(self) -> int:
        return len(json.loads(self.cluster.kubectl("get", "configmaps", "-A", "-o", "json"))["items"])


def _configmaps(namespace: str, names: list[str]) -> str:
    items = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}]
    items += [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace},
            "data": {"value": "0", "note": "legacy plaintext"},
        }
        for name in names
    ]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


@pytest.fixture(scope="module")
def troubled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Troubled]:
    directory = tmp_path_factory.mktemp("operator-troubled")
    cluster = DevCluster(directory / "cluster")
    cluster.up("none")
    try:
        cluster.kubectl(
            "create", "-f", "-", input=_configmaps(BULK_NAMESPACE, [f"cm-{i}" for i in range(BULK_OBJECTS)])
        )
        cluster.kubectl("create", "-f", "-", input=_configmaps(POLICY_NAMESPACE, [DENIED, *BUSY]))
        install_crd(cluster)
        cluster.encrypt()
        log = directory / "operator.log"
        with OperatorProcess(cluster, log) as operator:
            yield Troubled(cluster, operator, log, directory)
    finally:
        cluster.down()


def test_kill_9_mid_run_resumes_from_the_checkpoint_to_the_same_result(troubled: Troubled) -> None:
    total = troubled.configmap_count()
    spec = {"mode": "Full", "resources": CONFIGMAPS, "qps": 40, "concurrency": 4, "pageSize": PAGE_SIZE}
    apply_migration(troubled.cluster, "resume", spec)
    at_kill = wait_for(
        troubled.cluster,
        "resume",
        lambda m: (m.get("status") or {}).get("totals", {}).get("rewritten", 0) >= 100,
        timeout=120,
        log=troubled.log,
    )["status"]
    troubled.operator.kill_9()
    assert at_kill["phase"] == "Migrating"
    checkpoint = at_kill["resources"][0]["checkpoint"]
    assert checkpoint.get("continue"), "a page-end checkpoint was stored before the kill"

    troubled.operator.start()
    status = wait_finished(troubled.cluster, "resume", log=troubled.log)["status"]
    assert status["phase"] == "Succeeded", status["message"]
    assert status["verification"]["result"] == "Verified"
    totals = status["totals"]
    # Every object counted exactly once, and only the interrupted page was walked twice: a
    # restart from scratch would find the first ~100 objects already rewritten instead.
    assert totals["rewritten"] + totals["unchanged"] + totals["conflicts"] == total
    assert totals["unchanged"] + totals["conflicts"] <= PAGE_SIZE
    assert totals["failed"] == 0
    inventory = scan(troubled.cluster, "configmaps")
    assert inventory["summary"]["stale"] == 0, inventory["summary"]


def test_denied_object_is_reported_concurrent_changes_survive_and_the_rest_migrate(
    troubled: Troubled,
) -> None:
    troubled.cluster.rotate_kek(restart=True)
    webhook_dir = troubled.directory / "webhook"
    webhook_dir.mkdir()

    def deny_one(request: dict[str, Any]) -> Verdict:
        if request.get("name") == DENIED:
            return Verdict(allowed=False, message=f"{DENIED} is frozen by policy")
        return Verdict()

    with AdmissionWebhook(webhook_dir, deny_one) as webhook:
        configuration = webhook_configuration(
            "ValidatingWebhookConfiguration",
            "deny-frozen",
            POLICY_NAMESPACE,
            f"https://127.0.0.1:{webhook.port}/validate",
            webhook.ca_pem,
        )
        troubled.cluster.kubectl("apply", "-f", "-", input=json.dumps(configuration))
        last_written: dict[str, str] = {}
        stop = threading.Event()

        def keep_writing() -> None:
            value = 0
            while not stop.is_set():
                value += 1
                name = BUSY[value % len(BUSY)]
                patch = json.dumps({"data": {"value": str(value)}})
                troubled.cluster.kubectl(
                    "patch", "configmap", name, "-n", POLICY_NAMESPACE, "--type=merge", "-p", patch
                )
                last_written[name] = str(value)

        writer = threading.Thread(target=keep_writing)
        writer.start()
        try:
            time.sleep(1)
            spec = {
                "mode": "Full",
                "resources": CONFIGMAPS,
                "qps": 40,
                "concurrency": 4,
                "pageSize": PAGE_SIZE,
            }
            apply_migration(troubled.cluster, "rotate", spec)
            status = wait_finished(troubled.cluster, "rotate", log=troubled.log)["status"]
        finally:
            stop.set()
            writer.join()
        troubled.cluster.kubectl("delete", "validatingwebhookconfiguration", "deny-frozen")
        assert webhook.calls.get(DENIED, 0) >= 1

    # The denial is recorded once (never retried in a loop) and named in the status.
    assert status["totals"]["failed"] == 1
    assert status["failuresTotal"] == 1
    failure = status["failures"][0]
    assert (failure["namespace"], failure["name"]) == (POLICY_NAMESPACE, DENIED)
    # The webhook's own text could quote the object: only its name is kept, in status and events.
    denial = "HTTP 403: denied by admission webhook deny-frozen.faults.kms-storage-migrator.io"
    assert failure["message"] == denial
    events = troubled.cluster.kubectl("get", "events", "-n", "default", "-o", "json")
    assert "frozen by policy" not in events
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True"
    # Verification finds exactly that one object still under the old key; all the rest moved.
    assert status["phase"] == "Failed"
    assert status["verification"]["stale"] == 1
    assert DENIED in status["verification"]["examples"][0]
    assert scan(troubled.cluster, "configmaps")["summary"]["stale"] == 1
    # Objects written concurrently keep what their writer wrote last.
    busy = objects(troubled.cluster, "configmaps", [POLICY_NAMESPACE])
    for name, value in last_written.items():
        assert busy[f"ConfigMap/{POLICY_NAMESPACE}/{name}"]["data"]["value"] == value, name


def test_deleting_a_running_migration_stops_it_promptly(troubled: Troubled) -> None:
    apply_migration(troubled.cluster, "doomed", {"mode": "Full", "qps": 5, "resources": CONFIGMAPS})
    wait_for(
        troubled.cluster,
        "doomed",
        lambda m: (m.get("status") or {}).get("phase") == "Migrating",
        timeout=60,
        log=troubled.log,
    )
    started = time.monotonic()
    troubled.cluster.kubectl("delete", "storagemigration", "doomed", "--timeout=30s")
    assert time.monotonic() - started < 15
    assert "doomed" not in troubled.cluster.kubectl("get", "storagemigrations", "-o", "name")
    # The slot is free again: the next migration runs instead of waiting in Pending.
    apply_migration(troubled.cluster, "next", {"mode": "VerifyOnly", "resources": CONFIGMAPS})
    assert (
        wait_finished(troubled.cluster, "next", log=troubled.log, timeout=60)["status"]["phase"]
        == "Succeeded"
    )
    assert migration(troubled.cluster, "next")["status"]["verification"]["stale"] == 1
