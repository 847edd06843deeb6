"""The dev cluster really stores what it claims: read raw from etcd with the real etcdctl.

Each assertion looks at the bytes etcd holds, independently of this project's own classifier:
the KMS v2 prefix, and the EncryptedObject's keyID field (protobuf field 2, wire type 2).
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable

import pytest

from kms_storage_migrator.devcluster.cluster import DevCluster
from kms_storage_migrator.kms.keyring import set_key_state

pytestmark = pytest.mark.integration

KMS_PREFIX = b"k8s:enc:kms:v2:local-kms:"

WIDGET_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.test.kms-storage-migrator.io
spec:
  group: test.kms-storage-migrator.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
"""


def key_id_field(key_id: str) -> bytes:
    """EncryptedObject.keyID as protobuf encodes it: tag 0x12, a one-byte length, the id."""
    encoded = key_id.encode()
    assert len(encoded) < 128
    return b"\x12" + bytes([len(encoded)]) + encoded


def install_widget_crd(cluster: DevCluster) -> None:
    cluster.kubectl("apply", "-f", "-", input=WIDGET_CRD)
    cluster.wait_established("widgets.test.kms-storage-migrator.io")


def create_objects(cluster: DevCluster, namespace: str, suffix: str) -> dict[str, str]:
    """A Secret, a ConfigMap and a Widget; returns their etcd keys by kind."""
    cluster.kubectl("create", "namespace", namespace, check=False)
    cluster.kubectl(
        "create", "secret", "generic", f"s-{suffix}", "-n", namespace, "--from-literal=password=hunter2"
    )
    cluster.kubectl("create", "configmap", f"c-{suffix}", "-n", namespace, "--from-literal=color=blue")
    widget = {
        "apiVersion": "test.kms-storage-migrator.io/v1",
        "kind": "Widget",
        "metadata": {"name": f"w-{suffix}", "namespace": namespace},
        "spec": {"size": 3},
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(widget))
    return {
        "Secret": f"/registry/secrets/{namespace}/s-{suffix}",
        "ConfigMap": f"/registry/configmaps/{namespace}/c-{suffix}",
        "Widget": f"/registry/test.kms-storage-migrator.io/widgets/{namespace}/w-{suffix}",
    }


def stored(cluster: DevCluster, key: str) -> bytes:
    value = cluster.etcd_value(key)
    assert value is not None, f"etcd holds nothing at {key}"
    return value


def assert_kms_v2_under(cluster: DevCluster, keys: dict[str, str], key_id: str) -> None:
    for kind, key in keys.items():
        value = stored(cluster, key)
        assert value.startswith(KMS_PREFIX), f"{kind} at {key} is not KMS v2: {value[:30]!r}"
        assert key_id_field(key_id) in value, f"{kind} at {key} is not under key {key_id}"
        assert b"hunter2" not in value
        assert b"blue" not in value


def test_objects_are_stored_under_the_plugins_primary_key(dev_cluster: DevCluster) -> None:
    install_widget_crd(dev_cluster)
    suffix = uuid.uuid4().hex[:8]
    keys = create_objects(dev_cluster, f"enc-{suffix}", suffix)
    assert_kms_v2_under(dev_cluster, keys, dev_cluster.current_key_id())
    secret = json.loads(
        dev_cluster.kubectl("get", "secret", f"s-{suffix}", "-n", f"enc-{suffix}", "-o", "json")
    )
    assert secret["data"]["password"] == "aHVudGVyMg=="  # base64 of hunter2: decrypts on read


def test_plaintext_cluster_then_encrypt_then_rotate(make_cluster: Callable[..., DevCluster]) -> None:
    cluster = make_cluster(encryption="none")
    install_widget_crd(cluster)
    legacy = create_objects(cluster, "legacy", "old")
    for kind, key in legacy.items():
        value = stored(cluster, key)
        assert value.startswith((b"k8s\x00", b"{")), f"{kind} is not plaintext: {value[:20]!r}"
    before = {kind: stored(cluster, key) for kind, key in legacy.items()}

    cluster.encrypt()
    key_a = cluster.current_key_id()
    # Legacy plaintext is untouched by the switch and still reads through the identity fallback.
    assert {kind: stored(cluster, key) for kind, key in legacy.items()} == before
    assert json.loads(cluster.kubectl("get", "configmap", "c-old", "-n", "legacy", "-o", "json"))["data"] == {
        "color": "blue"
    }
    under_a = create_objects(cluster, "fresh", "a")
    assert_kms_v2_under(cluster, under_a, key_a)

    key_b = cluster.rotate_kek(restart=True)
    assert key_b != key_a
    assert cluster.current_key_id() == key_b
    under_b = create_objects(cluster, "fresh", "b")
    assert_kms_v2_under(cluster, under_b, key_b)
    # Objects under the old key still read back, and their stored bytes did not change.
    assert_kms_v2_under(cluster, under_a, key_a)
    secret = json.loads(cluster.kubectl("get", "secret", "s-a", "-n", "fresh", "-o", "json"))
    assert secret["data"]["password"] == "aHVudGVyMg=="


def test_disabled_primary_key_fails_writes_until_enabled(make_cluster: Callable[..., DevCluster]) -> None:
    cluster = make_cluster(encryption="kms")
    primary = cluster.current_key_id()
    set_key_state(cluster.keyring, primary, "disabled")
    # The apiserver polls Status each minute and keeps using its DEK for 3 minutes after the
    # last healthy answer (that is KMS v2's design, so a KMS blip does not stop writes).
    failure = wait_for_write_outcome(cluster, "disabled", want_success=False, timeout=330)
    assert "InternalError" in failure or "Internal error" in failure, failure
    assert "hunter2" not in failure

    set_key_state(cluster.keyring, primary, "enabled")
    # While unhealthy the apiserver polls Status every 10 s, then writes work again.
    wait_for_write_outcome(cluster, "enabled", want_success=True, timeout=120)
    assert key_id_field(primary) in stored(cluster, "/registry/configmaps/default/probe-enabled")


def wait_for_write_outcome(
    cluster: DevCluster, suffix: str, *, want_success: bool, timeout: float = 60
) -> str:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            cluster.kubectl("create", "configmap", f"probe-{suffix}", "-n", "default", "--from-literal=a=b")
        except subprocess.CalledProcessError as error:
            last = error.stderr
            if not want_success and "AlreadyExists" not in last:
                return last
        else:
            if want_success:
                return ""
            cluster.kubectl("delete", "configmap", f"probe-{suffix}", "-n", "default")
            last = "write succeeded"
        time.sleep(2)
    pytest.fail(f"writes did not {'recover' if want_success else 'fail'} within {timeout}s; last: {last}")
