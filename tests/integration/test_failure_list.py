"""The full failure list on a real cluster: more failures than status keeps, every one named.

A validating webhook denies every ConfigMap of one namespace (its text quotes the object, as a
policy engine's might). status.failures keeps the first ten and counts the rest; the ConfigMap
``<migration>-failures`` in the operator's namespace names all of them, which etcd confirms
are exactly the objects left stale, and holds no data value and none of the webhook's text.

The same run is watched with ``kubectl get sm -w``: a printed row that repeats the one before
tells the user nothing (issue 12 item 3). Measured on this cluster: 2 of 13 rows repeat, both
kopf's finalizer: added when the migration is first seen (the blank first row twice) and
removed once it has finished (the final row twice). Before, 3 of 14 and 4 of 15: the key gate
stored its phase on entry and again on passing (WaitingForKey twice, Verifying twice), and
once more after waiting 20 s for the apiserver's next KMS Status poll after the rotation; its
pass is now stored with the next phase. 6 of 16 before discovery and preflight left their
findings to the next phase's publish.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fault_tools import FaultWorld, fault_world, is_terminal, migration_spec
from operator_harness import OperatorProcess
from webhook_server import AdmissionWebhook, Verdict, webhook_configuration

from kms_storage_migrator.devcluster.binaries import binary_path
from kms_storage_migrator.devcluster.cluster import DevCluster

pytestmark = pytest.mark.integration

DENIED_NAMESPACE = "frozen"
DENIED = [f"frozen-{index:02d}" for index in range(25)]
OPERATOR_NAMESPACE = "kms-storage-migrator"
MIGRATION = "many-failures"
STATUS_KEEPS = 10  # MAX_FAILURES
PAYLOAD = "payload-8d1e-"  # each denied object's data value starts so: it must appear nowhere


def _create_denied(world: FaultWorld) -> None:
    items: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": DENIED_NAMESPACE}}
    ]
    items += [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": DENIED_NAMESPACE},
            "data": {"value": f"{PAYLOAD}{index}"},
        }
        for index, name in enumerate(DENIED)
    ]
    world.cluster.kubectl(
        "create", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultWorld]:
    with fault_world(tmp_path_factory.mktemp("failure-list"), objects=40, namespaces=2) as world:
        _create_denied(world)
        world.cluster.kubectl("create", "namespace", OPERATOR_NAMESPACE)
        yield world


# Rows that may repeat the one before (the measured sources above): kopf's two finalizer writes.
# Discovery and preflight publish with the next phase, and so does the key gate when it passes.
# While it waits, its rows follow each apiserver's KMS polls (their message names the laggards),
# so its phase is left out.
MAX_REPEATED_ROWS = 2
CHECK_PHASES = frozenset({"WaitingForKey"})


class RowWatch:
    """``kubectl get sm -w`` as a user runs it, its printed rows kept in a file."""

    def __init__(self, cluster: DevCluster, output: Path) -> None:
        self._output = output
        with output.open("wb") as sink:
            self._process = subprocess.Popen(
                [str(binary_path("kubectl")), "--kubeconfig", str(cluster.kubeconfig), "get", "sm", "-w"],
                stdout=sink,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> list[list[str]]:
        """The rows printed, each as its columns without AGE (which moves by itself)."""
        self._process.terminate()
        self._process.wait(timeout=30)
        lines = self._output.read_text().splitlines()[1:]  # after the header
        return [line.split()[:-1] for line in lines if line.strip()]


def repeated_rows(rows: list[list[str]]) -> list[list[str]]:
    return [row for previous, row in itertools.pairwise(rows) if row == previous]


def _deny_frozen(request: dict[str, Any]) -> Verdict:
    data = (request.get("object") or {}).get("data")
    return Verdict(allowed=False, message=f"data {data} is frozen by policy")


def _listed(config_map: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in config_map["data"]["failures.jsonl"].splitlines()]


def test_every_failure_is_listed_by_name_in_a_configmap(world: FaultWorld) -> None:
    cluster = world.cluster
    with AdmissionWebhook(world.directory / "deny-webhook", _deny_frozen) as webhook:
        cluster.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps(
                webhook_configuration(
                    "ValidatingWebhookConfiguration",
                    "freeze",
                    DENIED_NAMESPACE,
                    f"https://127.0.0.1:{webhook.port}/validate",
                    webhook.ca_pem,
                )
            ),
        )
        world.make_all_stale()
        world.operator = OperatorProcess(
            cluster, world.log, env={"POD_NAMESPACE": OPERATOR_NAMESPACE}
        ).start()
        watch = RowWatch(cluster, world.directory / "watch.txt")
        # Small pages: several page ends in Migrating, each of which could print a row.
        world.apply(
            MIGRATION, migration_spec("Full", resources={"include": ["core/configmaps"]}, pageSize=10)
        )
        status = world.wait_until(MIGRATION, is_terminal, timeout=300)
        # kopf removes its finalizer from a finished migration just after the final status.
        finalizer_gone = time.monotonic() + 60
        while cluster.kubectl("get", "sm", MIGRATION, "-o", "jsonpath={.metadata.finalizers}").strip():
            assert time.monotonic() < finalizer_gone, "kopf kept its finalizer on a finished migration"
            time.sleep(0.5)
        time.sleep(2)  # the watch prints that last event
        rows = watch.stop()
    cluster.kubectl("delete", "validatingwebhookconfiguration", "freeze")
    world.stop_operator()
    log = world.log.read_text(errors="replace")

    # Status keeps the first ten and counts all.
    assert status["failuresTotal"] == len(DENIED), status
    assert len(status["failures"]) == STATUS_KEEPS

    config_map = json.loads(
        cluster.kubectl("get", "configmap", f"{MIGRATION}-failures", "-n", OPERATOR_NAMESPACE, "-o", "json")
    )
    listed = _listed(config_map)
    assert sorted((entry["namespace"], entry["name"]) for entry in listed) == [
        (DENIED_NAMESPACE, name) for name in DENIED
    ]
    for entry in listed:
        assert entry["resource"] == "core/configmaps"
        assert entry["code"] == 403, entry
        assert "freeze.faults.kms-storage-migrator.io" in entry["message"], entry
    assert "truncated" not in config_map["data"]
    # Independent: etcd holds exactly the listed objects under the old key.
    stale = world.etcd.stale(["/registry/configmaps/"])
    assert set(stale) == {f"/registry/configmaps/{DENIED_NAMESPACE}/{name}" for name in DENIED}, stale

    # It goes away with its migration: owned by the StorageMigration (the dev cluster runs no
    # garbage collector, so only the reference is checked).
    uid = json.loads(cluster.kubectl("get", "storagemigration", MIGRATION, "-o", "json"))["metadata"]["uid"]
    owners = config_map["metadata"]["ownerReferences"]
    assert [(o["kind"], o["name"], o["uid"]) for o in owners] == [("StorageMigration", MIGRATION, uid)]

    # Names only: no data value, none of the webhook's text, in the list or the log.
    text = json.dumps(config_map["data"])
    assert "frozen by policy" not in text
    assert "frozen by policy" not in log
    assert PAYLOAD not in text
    assert PAYLOAD not in log
    # One WARNING line per failed object, naming it.
    for name in DENIED:
        assert log.count(f"not rewritten: core/configmaps {DENIED_NAMESPACE}/{name} ") == 1, name

    # The watch: each row shows something new, but for the measured repeats outside Migrating.
    print(f"{len(rows)} rows printed by kubectl get sm -w; repeats: {repeated_rows(rows)}")
    assert rows[-1][:2] == [MIGRATION, "Failed"], rows
    repeats = [row for row in repeated_rows(rows) if not CHECK_PHASES & set(row)]
    assert len(repeats) <= MAX_REPEATED_ROWS, repeats
    assert all(row in (rows[0], rows[-1]) for row in repeats), repeats  # kopf's, nothing else
    assert not [row for row in repeats if {"Migrating", "Verifying"} & set(row)], repeats
