"""The HA dev cluster on real processes: three kube-apiservers on one etcd, each with its own KMS
plugin and identity, behind HAProxy.

Independent references: the identity Leases as the apiservers themselves wrote them, each
apiserver's own /metrics (its ``apiserver_id_hash`` tells which one answered a request sent
through the load balancer), and etcd's raw bytes read with etcdctl. Key id hashes are
computed here with hashlib, the way kube-apiserver computes them ("sha256:" + hex digest).
"""

from __future__ import annotations

import hashlib
import json
import ssl
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kms_storage_migrator.devcluster.cluster import DevCluster

pytestmark = pytest.mark.integration

APISERVERS = 3
ROTATION_WAIT_SECONDS = 180
CONFIG_INFO = "apiserver_encryption_config_controller_last_config_info"


def sha256_label(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def key_id_field(key_id: str) -> bytes:
    """EncryptedObject.keyID as protobuf encodes it: tag 0x12, a one-byte length, the id."""
    return b"\x12" + bytes([len(key_id)]) + key_id.encode()


@pytest.fixture(scope="module")
def ha_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DevCluster, float]]:
    cluster = DevCluster(tmp_path_factory.mktemp("ha-cluster"))
    started = time.monotonic()
    cluster.up("kms", apiservers=APISERVERS)
    seconds = time.monotonic() - started
    print(f"HA dev cluster of {APISERVERS} apiservers up in {seconds:.1f}s")
    try:
        yield cluster, seconds
    finally:
        cluster.down()


def admin_context(cluster: DevCluster) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cluster.pki.ca.cert))
    context.load_cert_chain(str(cluster.pki.admin.cert), str(cluster.pki.admin.key))
    return context


def answering_apiserver(cluster: DevCluster, context: ssl.SSLContext) -> str:
    """The ``apiserver_id_hash`` of whichever apiserver answers a fresh connection to the LB."""
    with urllib.request.urlopen(f"{cluster.api_url}/metrics", context=context, timeout=10) as response:
        text = response.read().decode()
    (line,) = [line for line in text.splitlines() if line.startswith(CONFIG_INFO + "{")]
    return line.split('apiserver_id_hash="', 1)[1].split('"', 1)[0]


def identity_leases(cluster: DevCluster, kubeconfig: Path | None = None) -> dict[str, str]:
    """Identity Lease name -> the host name label, as the apiservers wrote them."""
    leases = json.loads(
        cluster.kubectl(
            "get",
            "leases",
            "-n",
            "kube-system",
            "-l",
            "apiserver.kubernetes.io/identity=kube-apiserver",
            "-o",
            "json",
            kubeconfig=kubeconfig,
        )
    )
    return {
        item["metadata"]["name"]: item["metadata"]["labels"]["kubernetes.io/hostname"]
        for item in leases["items"]
    }


def test_each_apiserver_answers_on_its_own_and_has_its_own_identity(
    ha_cluster: tuple[DevCluster, float],
) -> None:
    cluster, seconds = ha_cluster
    apiservers = cluster.apiservers
    assert len(apiservers) == APISERVERS
    assert len({apiserver.port for apiserver in apiservers}) == APISERVERS
    assert cluster.api_url not in {apiserver.url for apiserver in apiservers}  # DIR/kubeconfig: the LB
    for apiserver in apiservers:
        assert cluster.kubectl("get", "--raw", "/readyz", kubeconfig=apiserver.kubeconfig) == "ok"
        server = cluster.kubectl(
            "config", "view", "-o", "jsonpath={.clusters[0].cluster.server}", kubeconfig=apiserver.kubeconfig
        )
        assert server == apiserver.url
    leases = identity_leases(cluster)
    # One Lease per apiserver, named as each apiserver derives its id from its own host name.
    assert leases == {apiserver.identity: apiserver.hostname for apiserver in apiservers}
    print(f"identity leases: {leases}; up in {seconds:.1f}s")


def test_the_load_balancer_spreads_connections_and_survives_a_stopped_apiserver(
    ha_cluster: tuple[DevCluster, float],
) -> None:
    cluster, _ = ha_cluster
    context = admin_context(cluster)
    expected = {sha256_label(apiserver.identity) for apiserver in cluster.apiservers}
    # Round robin over fresh connections: a few rounds reach every apiserver.
    answered = {answering_apiserver(cluster, context) for _ in range(3 * APISERVERS)}
    assert answered == expected

    stopped = cluster.apiservers[1]
    cluster.stop_apiserver(stopped.index)
    try:
        assert not cluster.status()["apiservers"][1]["running"]
        # Every request through the LB still succeeds: a refused connection is redispatched,
        # and the /readyz health check takes the stopped one out of the rotation.
        answered = {answering_apiserver(cluster, context) for _ in range(4 * APISERVERS)}
        assert answered == expected - {sha256_label(stopped.identity)}
        assert cluster.kubectl("get", "namespace", "default", "-o", "name") == "namespace/default\n"
    finally:
        cluster.start_apiserver(stopped.index)
    assert cluster.kubectl("get", "--raw", "/readyz", kubeconfig=stopped.kubeconfig) == "ok"


def readyz(cluster: DevCluster, kubeconfig: Path) -> str:
    """The apiserver's verbose /readyz body, whatever its status code."""
    url = next(apiserver.url for apiserver in cluster.apiservers if apiserver.kubeconfig == kubeconfig)
    try:
        with urllib.request.urlopen(
            f"{url}/readyz?verbose", context=admin_context(cluster), timeout=10
        ) as response:
            return str(response.read().decode())
    except urllib.error.HTTPError as error:
        return str(error.read().decode())
    except (urllib.error.URLError, OSError) as error:
        return f"unreachable: {error}"


def wait_until(condition: Callable[[], bool], *, what: str, timeout: float) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"{what} did not happen within {timeout}s"
        time.sleep(0.5)
    return time.monotonic() - started


def test_one_plugin_and_etcd_stop_and_start_again(ha_cluster: tuple[DevCluster, float]) -> None:
    cluster, _ = ha_cluster
    third = cluster.apiservers[2]
    cluster.stop_kms_plugin(third.index)
    try:
        assert not Path(third.kms_socket).exists()
        # Its kms-providers check asks Status again once its last answer is 20 s old.
        seconds = wait_until(
            lambda: "[-]kms-providers failed" in readyz(cluster, third.kubeconfig),
            what="apiserver 3 reporting its stopped plugin",
            timeout=90,
        )
        print(f"apiserver 3's /readyz failed {seconds:.1f}s after its plugin stopped")
        assert "[+]kms-providers ok" in readyz(cluster, cluster.apiservers[0].kubeconfig)
    finally:
        cluster.start_kms_plugin(third.index)
    wait_until(
        lambda: "[+]kms-providers ok" in readyz(cluster, third.kubeconfig), what="recovery", timeout=60
    )

    cluster.stop_etcd()
    try:
        assert "etcd" not in cluster.load_state().pids
        wait_until(
            lambda: "[-]etcd failed" in readyz(cluster, third.kubeconfig),
            what="etcd failure seen",
            timeout=60,
        )
    finally:
        cluster.start_etcd()
    for apiserver in cluster.apiservers:
        wait_until(
            lambda apiserver=apiserver: readyz(cluster, apiserver.kubeconfig).endswith(
                "readyz check passed\n"
            ),
            what=f"apiserver {apiserver.index} ready after etcd returned",
            timeout=60,
        )


def test_a_rotation_without_restart_reaches_every_apiserver_on_its_own(
    ha_cluster: tuple[DevCluster, float],
) -> None:
    cluster, _ = ha_cluster
    old_key = cluster.current_key_id()
    pids = {
        apiserver.index: cluster.status()["apiservers"][apiserver.index - 1]["pid"]
        for apiserver in cluster.apiservers
    }
    new_key = cluster.rotate_kek(restart=False)
    rotated = time.monotonic()
    assert new_key != old_key
    switched: dict[int, float] = {}
    while len(switched) < APISERVERS and time.monotonic() - rotated < ROTATION_WAIT_SECONDS:
        for apiserver in cluster.apiservers:
            if apiserver.index not in switched and cluster.write_key_id_hash(apiserver.index) == sha256_label(
                new_key
            ):
                switched[apiserver.index] = time.monotonic() - rotated
        time.sleep(0.5)
    print(f"seconds from rotate-kek (no restart) to writes under {new_key}, per apiserver: {switched}")
    assert len(switched) == APISERVERS, (
        f"only apiservers {sorted(switched)} switched within {ROTATION_WAIT_SECONDS}s"
    )
    # Nothing was restarted: the same processes switched by themselves.
    assert {index: cluster.status()["apiservers"][index - 1]["pid"] for index in pids} == pids

    suffix = uuid.uuid4().hex[:8]
    for apiserver in cluster.apiservers:
        name = f"after-rotation-{suffix}-{apiserver.index}"
        cluster.kubectl(
            "create",
            "configmap",
            name,
            "-n",
            "default",
            "--from-literal=a=b",
            kubeconfig=apiserver.kubeconfig,
        )
        value = cluster.etcd_value(f"/registry/configmaps/default/{name}")
        assert value is not None
        assert value.startswith(b"k8s:enc:kms:v2:local-kms:")
        assert key_id_field(new_key) in value, f"apiserver {apiserver.index} wrote {name} under another key"
        assert key_id_field(old_key) not in value
