"""The chart's own Deployment on a real node (issue 13 part 2): `dev-cluster up --node`, the
operator image imported into containerd, `helm install`, a migration from the pod, `helm
uninstall`, and `down` leaving no host state behind.

Judged apart from the code under test: etcd is read with etcdctl, pod readiness and the Lease
by kubectl, the host state with `ip` and `iptables` directly. Run by scripts/node-test.sh
(root, the node builds and the operator image); CI does not collect it (see conftest.py).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from kms_storage_migrator.devcluster import node
from kms_storage_migrator.devcluster.cluster import DevCluster

REPOSITORY = Path(__file__).resolve().parents[2]
CHART = REPOSITORY / "charts" / "kms-storage-migrator"
IMAGE_REPOSITORY = "localhost/kms-storage-migrator"
IMAGE_TAG = "dev"
RELEASE_NAMESPACE = "ksm-system"
LEASE_NAME = "kms-storage-migrator"
DATA_NAMESPACE = "node-data"
CONFIGMAPS = 60
SECRETS = 20
# Generous on a loaded two-core machine; the figures measured are seconds (docs/dev-cluster.md).
PODS_TIMEOUT = 300.0
MIGRATION_TIMEOUT = 600.0
GONE_TIMEOUT = 180.0
T = TypeVar("T")


@pytest.fixture
def image_archive(tmp_path: Path) -> Path:
    """The operator image as an OCI archive: scripts/node-test.sh's, or saved here from podman."""
    given = os.environ.get("KSM_NODE_IMAGE_ARCHIVE")
    if given:
        return Path(given)
    archive = tmp_path / "operator.tar"
    image = f"{IMAGE_REPOSITORY}:{IMAGE_TAG}"
    subprocess.run(
        ["podman", "--storage-driver", "vfs", "save", "--format", "oci-archive", "-o", str(archive), image],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return archive


def test_chart_runs_the_operator_on_a_real_node_and_down_leaves_no_host_state(
    make_cluster: Callable[..., DevCluster], image_archive: Path
) -> None:
    figures: dict[str, float] = {}
    started = time.monotonic()
    cluster = make_cluster("none", with_node=True)
    figures["up --node (s)"] = time.monotonic() - started

    # Plaintext data, then KMS v2 switched on: every seeded object is stale until migrated.
    _seed(cluster)
    cluster.encrypt()
    assert _stored_formats(cluster) == {"plaintext": CONFIGMAPS + SECRETS}

    started = time.monotonic()
    cluster.import_image(image_archive)
    figures["import-image (s)"] = time.monotonic() - started

    started = time.monotonic()
    _helm(cluster, "install", "ksm", str(CHART), "-n", RELEASE_NAMESPACE, "--create-namespace")
    pods = _eventually(lambda: _ready_pods(cluster), PODS_TIMEOUT, "two operator pods Running and Ready")
    figures["helm install to 2 pods Ready (s)"] = time.monotonic() - started
    for pod in pods:
        assert pod["spec"]["nodeName"] == node.NODE_NAME
        (container,) = pod["spec"]["containers"]
        assert container["image"] == f"{IMAGE_REPOSITORY}:{IMAGE_TAG}"
        assert container["imagePullPolicy"] == "Never"
        # Ready means the readiness probe passed; the liveness probe is judged by restarts below.
        assert "readinessProbe" in container
        assert "livenessProbe" in container
    names = {pod["metadata"]["name"] for pod in pods}
    holder = _eventually(lambda: _lease_holder(cluster), PODS_TIMEOUT, "the Lease held")
    assert holder in names

    started = time.monotonic()
    cluster.kubectl("apply", "-f", "-", input=json.dumps(_migration("on-the-node")))
    finished = _eventually(lambda: _finished(cluster, "on-the-node"), MIGRATION_TIMEOUT, "the migration done")
    figures["migration from the pod (s)"] = time.monotonic() - started
    status = finished["status"]
    assert status["phase"] == "Succeeded", json.dumps(status)[:3000]
    assert _stored_formats(cluster) == {f"kms-v2:{cluster.provider_name}": CONFIGMAPS + SECRETS}
    # The same two pods, never restarted: their liveness probes passed all along.
    assert {pod["metadata"]["name"]: _restarts(pod) for pod in _ready_pods(cluster)} == dict.fromkeys(
        names, 0
    )

    # The kubelet's KUBE-FIREWALL chain drops non-loopback packets to 127.0.0.0/8; a loopback
    # dev cluster (as every other test's) must start and answer with it in place.
    assert "KUBE-FIREWALL" in _iptables("filter")
    neighbour = make_cluster("kms")
    assert neighbour.kubectl("get", "namespace", "default", "-o", "name").strip() == "namespace/default"
    neighbour.down()

    _helm(cluster, "uninstall", "ksm", "-n", RELEASE_NAMESPACE)
    _eventually(lambda: not _pods(cluster) or None, GONE_TIMEOUT, "the operator pods gone")

    layout = cluster.node_layout
    cluster.down()
    shown = subprocess.run(["ip", "link", "show", node.BRIDGE], capture_output=True, check=False)
    assert shown.returncode != 0
    nat = _iptables("nat")
    assert node.DNAT_COMMENT not in nat
    assert "10.0.0.1/32" not in nat
    for table in ("filter", "nat", "mangle"):
        assert "KUBE-" not in _iptables(table), table
    assert not list(Path("/sys/fs/cgroup").glob("*/kubepods"))
    assert not layout.root.exists()
    assert str(layout.root) not in Path("/proc/self/mountinfo").read_text()
    assert not _processes_naming(str(layout.containerd_socket))
    print("\nnode test figures: " + ", ".join(f"{what} {value:.1f}" for what, value in figures.items()))


def _seed(cluster: DevCluster) -> None:
    items: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": DATA_NAMESPACE}}
    ]
    items += [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"cm-{i}", "namespace": DATA_NAMESPACE},
            "data": {"value": f"configuration {i}"},
        }
        for i in range(CONFIGMAPS)
    ]
    items += [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"secret-{i}", "namespace": DATA_NAMESPACE},
            "stringData": {"password": f"not-a-real-password-{i}"},
        }
        for i in range(SECRETS)
    ]
    cluster.kubectl(
        "create", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    )


def _stored_formats(cluster: DevCluster) -> dict[str, int]:
    """How the seeded objects are stored, read from etcd with etcdctl: plaintext or KMS v2 by provider."""
    counts: dict[str, int] = {}
    for resource in ("configmaps", "secrets"):
        output = cluster.etcdctl("get", f"/registry/{resource}/{DATA_NAMESPACE}/", "--prefix", "-w", "json")
        for pair in json.loads(output).get("kvs", []):
            name = base64.b64decode(pair["key"]).decode().rsplit("/", 1)[-1]
            if not name.startswith(("cm-", "secret-")):
                continue  # kube-root-ca.crt, which the controller-manager publishes in every namespace
            value = base64.b64decode(pair["value"])
            if value.startswith(b"k8s:enc:kms:v2:"):
                provider = value.removeprefix(b"k8s:enc:kms:v2:").split(b":", 1)[0].decode()
                label = f"kms-v2:{provider}"
            else:
                label = "plaintext" if value.startswith(b"k8s\x00") else "other"
            counts[label] = counts.get(label, 0) + 1
    return counts


def _migration(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "kms-storage-migrator.io/v1alpha1",
        "kind": "StorageMigration",
        "metadata": {"name": name},
        "spec": {},
    }


def _finished(cluster: DevCluster, name: str) -> dict[str, Any] | None:
    document: dict[str, Any] = json.loads(cluster.kubectl("get", "storagemigration", name, "-o", "json"))
    phase = (document.get("status") or {}).get("phase")
    return document if phase in ("Succeeded", "Failed") else None


def _helm(cluster: DevCluster, *args: str) -> None:
    image = (
        f"image.repository={IMAGE_REPOSITORY}",
        f"image.tag={IMAGE_TAG}",
        "image.pullPolicy=Never",
    )
    extra = [item for value in image for item in ("--set", value)] if args[0] == "install" else []
    subprocess.run(
        [str(cluster.binary("helm")), "--kubeconfig", str(cluster.kubeconfig), *args, *extra],
        check=True,
        capture_output=True,
        timeout=300,
    )


def _pods(cluster: DevCluster) -> list[dict[str, Any]]:
    output = cluster.kubectl("get", "pods", "-n", RELEASE_NAMESPACE, "-o", "json", check=False)
    items: list[dict[str, Any]] = json.loads(output or '{"items": []}')["items"]
    return items


def _ready_pods(cluster: DevCluster) -> list[dict[str, Any]] | None:
    pods = [pod for pod in _pods(cluster) if not pod["metadata"].get("deletionTimestamp")]
    ready = [pod for pod in pods if pod["status"].get("phase") == "Running" and _condition(pod, "Ready")]
    return ready if len(ready) == len(pods) == 2 else None


def _condition(pod: dict[str, Any], kind: str) -> bool:
    return any(c["type"] == kind and c["status"] == "True" for c in pod["status"].get("conditions", []))


def _restarts(pod: dict[str, Any]) -> int:
    return sum(int(status.get("restartCount", 0)) for status in pod["status"].get("containerStatuses", []))


def _lease_holder(cluster: DevCluster) -> str | None:
    output = cluster.kubectl(
        "get",
        "lease",
        LEASE_NAME,
        "-n",
        RELEASE_NAMESPACE,
        "-o",
        "jsonpath={.spec.holderIdentity}",
        check=False,
    )
    return output.strip() or None


def _iptables(table: str) -> str:
    return subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True, check=True).stdout


def _processes_naming(needle: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _eventually(probe: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s")
        time.sleep(1)
