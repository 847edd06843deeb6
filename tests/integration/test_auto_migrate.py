"""``run --auto-migrate`` on the real dev cluster: a KEK rotation alone re-encrypts everything.

The test only rotates (no restart, as in production) and never creates a StorageMigration.
Judged against: the keyring's primary key (what "the new key" is), etcd read with etcdctl and
decoded here (not the operator's scanner), and kubectl's view of the StorageMigrations and
their events.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from operator_harness import OperatorProcess, configmaps_list, install_crd, wait_finished

# The EncryptedObject decoder of the convergence tests (tests/integration is on sys.path).
from test_convergence_rotation import KMS_PREFIX, key_id_of

from kms_storage_migrator.devcluster.cluster import DevCluster

pytestmark = pytest.mark.integration

AUTOMATIC = "kms-storage-migrator.io/automatic=true"
POLL_SECONDS = 3
# The apiserver's own keys no API can reach: it rewrites them on its next update of them.
NOT_REWRITABLE = ("/registry/ranges/", "/registry/masterleases/", "/registry/peerserverleases/")
NOT_KMS = "(not KMS v2)"


def key_hash(key_id: str) -> str:
    return "sha256:" + hashlib.sha256(key_id.encode()).hexdigest()


def automatic_migrations(cluster: DevCluster) -> list[dict[str, Any]]:
    listing = json.loads(cluster.kubectl("get", "storagemigrations", "-l", AUTOMATIC, "-o", "json"))
    items: list[dict[str, Any]] = listing["items"]
    return items


def all_migrations(cluster: DevCluster) -> list[str]:
    listing = json.loads(cluster.kubectl("get", "storagemigrations", "-o", "json"))
    return sorted(item["metadata"]["name"] for item in listing["items"])


def keys_by_key_id(cluster: DevCluster) -> dict[str, list[str]]:
    """Every rewritable object in etcd by the KMS v2 key id it is stored under (the dev cluster
    encrypts every resource, so anything else is listed under ``NOT_KMS``)."""
    reply = json.loads(cluster.etcdctl("get", "/registry/", "--prefix", "-w", "json"))
    found: dict[str, list[str]] = {}
    for kv in reply.get("kvs") or []:
        key = base64.b64decode(kv["key"]).decode()
        value = base64.b64decode(kv["value"])
        if key.startswith(NOT_REWRITABLE):
            continue
        key_id = key_id_of(value, key) if value.startswith(KMS_PREFIX) else NOT_KMS
        found.setdefault(key_id, []).append(key)
    return found


def wait_until(what: str, probe: Callable[[], Any], *, timeout: float, log: Path) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = probe()
        if result:
            return result
        time.sleep(1)
    tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
    raise AssertionError(f"{what}: not within {timeout:.0f} s\n{tail}")


def test_a_rotation_alone_ends_with_one_automatic_migration_and_everything_under_the_new_key(
    make_cluster: Callable[..., DevCluster], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = make_cluster()
    cluster.kubectl("create", "-f", "-", input=configmaps_list("auto", 40, prefix="auto"))
    install_crd(cluster)
    old_key = cluster.current_key_id()
    assert len(keys_by_key_id(cluster).get(old_key, [])) >= 40
    log = tmp_path / "operator.log"
    monkeypatch.setenv("KMS_STORAGE_MIGRATOR_AUTO_MIGRATE", "true")
    monkeypatch.setenv("KMS_STORAGE_MIGRATOR_AUTO_MIGRATE_INTERVAL", str(POLL_SECONDS))
    with OperatorProcess(cluster, log):  # with etcd access: the start scan runs too
        # Its first check saw the old key converged and nothing under older keys: no migration.
        wait_until(
            "the operator's first auto-migrate check",
            lambda: (
                f"nothing to do: the apiservers write with key {key_hash(old_key)[:19]}"
                in log.read_text(errors="replace")
            ),
            timeout=120,
            log=log,
        )
        assert all_migrations(cluster) == []

        new_key = cluster.rotate_kek(restart=False)
        rotated_at = time.monotonic()
        created = wait_until(
            "an automatic StorageMigration", lambda: automatic_migrations(cluster), timeout=240, log=log
        )
        assert len(created) == 1
        name = created[0]["metadata"]["name"]
        seen_at = time.monotonic()
        assert name == "auto-to-" + key_hash(new_key).removeprefix("sha256:")[:12]
        annotations = created[0]["metadata"]["annotations"]
        assert annotations["kms-storage-migrator.io/auto-migrate-trigger"] == "KeyChanged"
        assert annotations["kms-storage-migrator.io/target-key-id-hash"] == key_hash(new_key)

        done = wait_finished(cluster, name, log=log, timeout=300)
        status = done["status"]
        assert status["phase"] == "Succeeded", status.get("message")
        assert status["keyId"] == new_key
        finished_at = time.monotonic()
        print(
            f"{name} seen {seen_at - rotated_at:.1f} s after the rotation, "
            f"Succeeded {finished_at - rotated_at:.1f} s after it: {status.get('message')}"
        )

        # Later checks see the work done and create nothing more.
        wait_until(
            "an auto-migrate check after the migration finished",
            lambda: f"nothing to do: {name} for key" in log.read_text(errors="replace"),
            timeout=120,
            log=log,
        )
        time.sleep(3 * POLL_SECONDS)
        assert all_migrations(cluster) == [name]

    events = json.loads(
        cluster.kubectl(
            "get", "events", "-n", "default", "--field-selector", f"involvedObject.name={name}", "-o", "json"
        )
    )
    creation = [event for event in events["items"] if event["reason"] == "AutomaticMigrationCreated"]
    assert len(creation) == 1
    assert "KeyChanged" in creation[0]["message"]

    # etcdctl, decoded here: every object is under the new key, none under the old one.
    stored = keys_by_key_id(cluster)
    assert stored.get(old_key, []) == []
    assert {key_id: keys[:5] for key_id, keys in stored.items() if key_id != new_key} == {}
    assert len(stored[new_key]) >= 40
