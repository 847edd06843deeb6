"""`dev-cluster up` options on real processes: an external KMS v2 plugin, and the audit log."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from kms_storage_migrator.devcluster import processes
from kms_storage_migrator.devcluster.cluster import DevCluster
from kms_storage_migrator.errors import UserError
from kms_storage_migrator.kms.keyring import create_keyring

pytestmark = pytest.mark.integration


def key_id_field(key_id: str) -> bytes:
    """EncryptedObject.keyID as protobuf encodes it: tag 0x12, a one-byte length, the id."""
    return b"\x12" + bytes([len(key_id)]) + key_id.encode()


def test_an_external_plugin_encrypts_a_legacy_cluster(tmp_path: Path) -> None:
    # The bundled plugin started by the test on its own: to the cluster it is any external plugin.
    keyring = tmp_path / "external" / "keyring.json"
    keyring.parent.mkdir()
    primary = create_keyring(keyring).primary_key_id
    socket_path = tmp_path / "external" / "plugin.sock"
    plugin = processes.start(
        [
            sys.executable,
            "-m",
            "kms_storage_migrator",
            "kms-plugin",
            "--listen",
            f"unix://{socket_path}",
            "--keyring",
            str(keyring),
        ],
        tmp_path / "external" / "plugin.log",
    )
    cluster = DevCluster(tmp_path / "cluster")
    try:
        processes.wait_until(
            socket_path.exists, what="the external plugin", process=plugin, timeout_seconds=30
        )
        cluster.up("none", kms_endpoint=f"unix://{socket_path}", kms_provider_name="external-kms")
        cluster.kubectl("create", "secret", "generic", "legacy", "-n", "default", "--from-literal=a=b")
        legacy = cluster.etcd_value("/registry/secrets/default/legacy")
        assert legacy is not None
        assert legacy.startswith(b"k8s\x00")

        cluster.encrypt()
        cluster.kubectl("create", "secret", "generic", "fresh", "-n", "default", "--from-literal=a=b")
        fresh = cluster.etcd_value("/registry/secrets/default/fresh")
        assert fresh is not None
        assert fresh.startswith(b"k8s:enc:kms:v2:external-kms:")
        assert key_id_field(primary) in fresh
        assert cluster.etcd_value("/registry/secrets/default/legacy") == legacy  # untouched until rewritten

        status = cluster.status()
        assert status["kmsEndpoint"] == f"unix://{socket_path}"
        assert status["currentKeyId"] is None
        assert not any(name.startswith("kms-plugin") for name in status["components"])
        assert cluster.write_key_id_hash() is not None  # the apiserver's metrics name the key it uses
        with pytest.raises(UserError, match="external KMS v2 plugin"):
            cluster.rotate_kek(restart=True)
    finally:
        cluster.down()
        assert plugin.kill_and_check()


def test_bad_external_plugin_settings_are_refused_before_anything_starts(tmp_path: Path) -> None:
    cluster = DevCluster(tmp_path / "cluster")
    with pytest.raises(UserError, match="--kms-endpoint needs --kms-provider-name"):
        cluster.up("none", kms_endpoint="unix:///run/kms.sock")
    with pytest.raises(UserError, match="unix:///absolute/path"):
        cluster.up("none", kms_endpoint="tcp://127.0.0.1:9", kms_provider_name="x")
    assert not cluster.state_path.exists()


def test_the_audit_log_records_requests_and_responses(tmp_path: Path) -> None:
    cluster = DevCluster(tmp_path / "audited")
    try:
        cluster.up("kms", audit_log=True)
        cluster.kubectl(
            "create", "secret", "generic", "audited", "-n", "default", "--from-literal=marker=audit-marker-1"
        )
        events = [json.loads(line) for line in cluster.audit_log().read_text().splitlines()]
        (create,) = [
            event
            for event in events
            if event["verb"] == "create" and event.get("objectRef", {}).get("name") == "audited"
        ]
        assert create["level"] == "RequestResponse"
        assert create["objectRef"]["resource"] == "secrets"
        # The response body is recorded: so a later test can check what each client received.
        assert create["responseObject"]["data"]["marker"] == "YXVkaXQtbWFya2VyLTE="
        assert cluster.status()["auditLogs"] == [str(cluster.audit_log())]
    finally:
        cluster.down()
