"""The key-convergence gate on a real HA control plane: 3 apiservers behind HAProxy, one KMS.

After ``rotate_kek(restart=False)`` each apiserver switches to the new key only at its own next
KMS Status poll. A migration started at once must wait (WaitingForKey, naming the laggards)
and only then rewrite; an independent etcdctl read then finds every object under the new key.
The same in Full mode with an operator that has no etcd access: the gate alone must make it
right, since nothing verifies. And when one apiserver can never switch (its KMS plugin
stopped), the gate times out naming it.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from operator_harness import (
    OperatorProcess,
    apply_migration,
    configmaps_list,
    install_crd,
    wait_finished,
    wait_for,
)

from kms_storage_migrator.convergence.identity import expected_apiserver_id
from kms_storage_migrator.devcluster.cluster import DevCluster
from kms_storage_migrator.inventory.command import EXIT_KEY_IN_USE

pytestmark = pytest.mark.integration

NAMESPACE = "gate-ha"
SELECTION = {"include": ["core/configmaps", "core/secrets"]}
PREFIXES = ("/registry/configmaps/", "/registry/secrets/")


@dataclass
class HaCluster:
    cluster: DevCluster
    log: Path
    operator: OperatorProcess  # with etcd access; a test may swap it for one without


@pytest.fixture(scope="module")
def ha(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HaCluster]:
    directory = tmp_path_factory.mktemp("key-gate")
    cluster = DevCluster(directory / "cluster")
    cluster.up("kms", apiservers=3)
    try:
        cluster.kubectl("create", "-f", "-", input=configmaps_list(NAMESPACE, 60, prefix="gate"))
        install_crd(cluster)
        log = directory / "operator.log"
        with OperatorProcess(cluster, log) as operator:
            yield HaCluster(cluster, log, operator)
    finally:
        cluster.down()


def stored_values(cluster: DevCluster) -> dict[str, bytes]:
    """Every configmap and secret as etcd stores it, read with etcdctl (not the operator's code)."""
    found: dict[str, bytes] = {}
    for prefix in PREFIXES:
        reply = json.loads(cluster.etcdctl("get", prefix, "--prefix", "-w", "json"))
        for kv in reply.get("kvs") or []:
            found[base64.b64decode(kv["key"]).decode()] = base64.b64decode(kv["value"])
    return found


def under_key(values: dict[str, bytes], key_id: str) -> list[str]:
    # The EncryptedObject envelope carries its key id as a plain protobuf string field.
    return sorted(key for key, value in values.items() if key_id.encode() in value)


def finished_through_a_broken_apiserver(
    cluster: DevCluster, name: str, log: Path, *, timeout: float
) -> dict[str, Any]:
    """Poll until finished; a read HAProxy sends to the apiserver without KMS fails (500) and is retried."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = cluster.kubectl("get", "storagemigration", name, "-o", "json", check=False)
        document: dict[str, Any] = json.loads(text) if text else {}
        if (document.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return document
        time.sleep(1)
    raise AssertionError(f"{name} did not finish in {timeout}s\n{log.read_text(errors='replace')[-3000:]}")


def scan_for_key(cluster: DevCluster, key_id: str) -> subprocess.CompletedProcess[str]:
    """`scan --fail-if-key-in-use` over the migrated types, as an operator retiring a KEK runs it."""
    command = [
        sys.executable,
        "-m",
        "kms_storage_migrator",
        "scan",
        "--etcd-config",
        str(cluster.etcd_config),
    ]
    command += ["--resource", "configmaps", "--resource", "secrets", "--fail-if-key-in-use", key_id]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def identities(cluster: DevCluster) -> list[str]:
    """Each apiserver's identity Lease name, as kube-apiserver derives it from its host name."""
    state = cluster.load_state()
    return [expected_apiserver_id(state.apiserver(index).hostname) for index in (1, 2, 3)]


def conditions(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (document.get("status") or {}).get("conditions") or []}


def test_a_migration_right_after_a_rotation_waits_for_every_apiserver_then_leaves_nothing_on_the_old_key(
    ha: HaCluster,
) -> None:
    cluster = ha.cluster
    old_key = cluster.current_key_id()
    before = stored_values(cluster)
    assert len(under_key(before, old_key)) >= 60
    assert scan_for_key(cluster, old_key).returncode == EXIT_KEY_IN_USE
    new_key = cluster.rotate_kek(restart=False)
    assert new_key == cluster.current_key_id()
    assert new_key not in old_key
    assert old_key not in new_key

    apply_migration(cluster, "after-rotation", {"mode": "Targeted", "resources": SELECTION})
    waiting = wait_for(
        cluster,
        "after-rotation",
        lambda m: conditions(m).get("KeyConverged", {}).get("status") == "False",
        timeout=60,
        log=ha.log,
    )
    assert waiting["status"]["phase"] == "WaitingForKey"
    lagging = conditions(waiting)["KeyConverged"]
    assert lagging["reason"] == "ApiserversLagging"
    assert any(identity in lagging["message"] for identity in identities(cluster))

    done = wait_finished(cluster, "after-rotation", log=ha.log, timeout=240)
    status = done["status"]
    assert status["phase"] == "Succeeded", status.get("message")
    assert conditions(done)["KeyConverged"]["status"] == "True"
    assert status["keyId"] == new_key
    previous = conditions(done)["PreviousKeysInUse"]
    assert previous["status"] == "False", previous["message"]
    assert [entry["keyId"] for entry in status["verification"]["keysInUse"]] == [new_key]

    after = stored_values(cluster)
    assert under_key(after, old_key) == []
    still_not_new = sorted(key for key in after if key not in under_key(after, new_key))
    assert still_not_new == []
    released = scan_for_key(cluster, old_key)
    assert released.returncode == 0, released.stderr
    assert scan_for_key(cluster, new_key).returncode == EXIT_KEY_IN_USE


def test_full_mode_without_etcd_access_waits_for_every_apiserver_then_leaves_nothing_on_the_old_key(
    ha: HaCluster,
) -> None:
    cluster = ha.cluster
    # Only one operator may run: the one with etcd access steps aside for one without.
    ha.operator.stop()
    blind_log = ha.log.with_name("operator-without-etcd.log")
    try:
        with OperatorProcess(cluster, blind_log, etcd=False):
            old_key = cluster.current_key_id()
            assert len(under_key(stored_values(cluster), old_key)) >= 60
            new_key = cluster.rotate_kek(restart=False)
            apply_migration(cluster, "full-blind", {"mode": "Full", "resources": SELECTION})
            waiting = wait_for(
                cluster,
                "full-blind",
                lambda m: conditions(m).get("KeyConverged", {}).get("status") == "False",
                timeout=60,
                log=blind_log,
            )
            assert waiting["status"]["phase"] == "WaitingForKey"
            lagging = conditions(waiting)["KeyConverged"]
            assert lagging["reason"] == "ApiserversLagging"
            assert any(identity in lagging["message"] for identity in identities(cluster))
            assert (waiting["status"].get("totals") or {}).get("rewritten", 0) == 0  # nothing written yet

            done = wait_finished(cluster, "full-blind", log=blind_log, timeout=240)
    finally:
        ha.operator.start()
    status = done["status"]
    assert status["phase"] == "Succeeded", status.get("message")
    assert status["mode"] == "Full"
    assert conditions(done)["KeyConverged"]["status"] == "True"
    assert status["totals"]["rewritten"] >= 60

    # Nothing verified it (no etcd access): etcdctl is the judge.
    after = stored_values(cluster)
    assert under_key(after, old_key) == []
    assert sorted(key for key in after if key not in under_key(after, new_key)) == []


def test_the_gate_times_out_naming_the_apiserver_whose_kms_plugin_is_down(ha: HaCluster) -> None:
    cluster = ha.cluster
    cluster.stop_kms_plugin(3)
    try:
        cluster.rotate_kek(restart=False)
        apply_migration(
            cluster,
            "plugin-down",
            {"mode": "Targeted", "resources": SELECTION, "keyConvergenceTimeout": "30s"},
        )
        done = finished_through_a_broken_apiserver(cluster, "plugin-down", ha.log, timeout=120)
    finally:
        cluster.start_kms_plugin(3)
    status = done["status"]
    assert status["phase"] == "Failed"
    assert "spec.keyConvergenceTimeout (30 s) ran out" in status["message"]
    assert identities(cluster)[2] in status["message"]  # the one whose plugin is down
    gate = conditions(done)["KeyConverged"]
    assert gate["status"] == "False"
    assert gate["reason"] == "ApiserversLagging"
    # Nothing was written: the gate holds before the first write.
    assert all(resource.get("rewritten", 0) == 0 for resource in status.get("resources") or [])
    assert (status.get("totals") or {}).get("rewritten", 0) == 0
