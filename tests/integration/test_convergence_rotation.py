"""The key-convergence gate on the real dev cluster: a KEK rotation without an apiserver restart.

The gate must say Waiting, naming the apiserver and the old key's hash, until the apiserver's
next KMS Status poll, then Converged on the new key. Judged against references the gate did
not produce: the keyring's primary key id (hashed here with hashlib), the identity Lease as
kubectl lists it, the raw /metrics text (matched with a regex, not the gate's parser), and the
keyID of objects read back from etcd with etcdctl (decoded here, not by the project's reader).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import pytest

from kms_storage_migrator.convergence.gate import Converged, GateResult, Lag, NoMetricsAccess, Waiting
from kms_storage_migrator.convergence.keyids import current_key_id
from kms_storage_migrator.convergence.scrape import ConvergenceError, assess_once, wait_for_convergence
from kms_storage_migrator.devcluster.cluster import DevCluster
from kms_storage_migrator.kms.keyring import load_keyring
from kms_storage_migrator.kube import ApiCredentials, KubeApi, load_credentials

pytestmark = pytest.mark.integration

STATUS_GAUGE = "apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds"
# The apiserver polls Status every 60 s; a wait for "the next poll" is bounded a bit above that.
POLL_BOUND_SECONDS = 80.0
KMS_PREFIX = b"k8s:enc:kms:v2:"


def sha256_label(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def raw_status_polls(metrics_text: str) -> dict[str, float]:
    """key_id_hash -> when a Status call last returned it, straight from the metric lines."""
    pattern = re.compile(rf'^{STATUS_GAUGE}{{[^}}]*key_id_hash="([^"]+)"[^}}]*}} (\S+)$', re.MULTILINE)
    return {match.group(1): float(match.group(2)) for match in pattern.finditer(metrics_text)}


async def latest_status_poll(api: KubeApi) -> float:
    return max(raw_status_polls(await api.get_text("/metrics")).values(), default=0.0)


async def wait_for_a_periodic_status_poll(api: KubeApi) -> float:
    """Block until the apiserver polls Status again, so the next poll is ~60 s away; its time."""
    before = await latest_status_poll(api)
    deadline = time.monotonic() + POLL_BOUND_SECONDS
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        now = await latest_status_poll(api)
        if now > before:
            return now
    raise AssertionError(f"no KMS Status poll within {POLL_BOUND_SECONDS:.0f} s")


def identity_lease_name(cluster: DevCluster) -> str:
    names = cluster.kubectl(
        "-n",
        "kube-system",
        "get",
        "leases",
        "-l",
        "apiserver.kubernetes.io/identity=kube-apiserver",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ).split()
    assert len(names) == 1, names
    return names[0]


def keyring_command(cluster: DevCluster, *args: str) -> str:
    """`kms-plugin ACTION --keyring FILE`: the running plugin re-reads its keyring at its next call."""
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "kms_storage_migrator",
            "kms-plugin",
            *args,
            "--keyring",
            str(cluster.keyring),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return completed.stdout.strip()


def rotate_plugin_keyring(cluster: DevCluster) -> str:
    """A new primary KEK; the apiserver is not restarted. Returns the new key id."""
    return keyring_command(cluster, "rotate")


def stored_key_id(cluster: DevCluster, etcd_key: str) -> str:
    """The keyID field (2) of the stored EncryptedObject, read with etcdctl and decoded here."""
    value = cluster.etcd_value(etcd_key)
    assert value is not None, etcd_key
    return key_id_of(value, etcd_key)


def key_id_of(value: bytes, etcd_key: str) -> str:
    """The keyID field (2) of a stored KMS v2 EncryptedObject (``k8s:enc:kms:v2:<provider>:...``)."""
    assert value.startswith(KMS_PREFIX), f"{etcd_key}: {value[:20]!r}"
    body = value[value.index(b":", len(KMS_PREFIX)) + 1 :]
    position = 0
    while position < len(body):
        tag, position = _varint(body, position)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            _, position = _varint(body, position)
            continue
        assert wire == 2, f"unexpected wire type {wire} in {etcd_key}"
        length, position = _varint(body, position)
        if field == 2:
            return body[position : position + length].decode()
        position += length
    raise AssertionError(f"no keyID in {etcd_key}")


def _varint(data: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7


def create_configmap(cluster: DevCluster, name: str) -> str:
    cluster.kubectl("create", "configmap", name, "-n", "default", "--from-literal=k=v")
    return f"/registry/configmaps/default/{name}"


async def test_gate_waits_for_the_next_status_poll_then_converges_on_the_new_primary(
    make_cluster: Callable[..., DevCluster],
) -> None:
    cluster = make_cluster()
    lease_name = identity_lease_name(cluster)
    async with KubeApi(load_credentials(cluster.kubeconfig)) as api:
        old_key = load_keyring(cluster.keyring).primary_key_id
        before_key = create_configmap(cluster, "before-rotation")
        # Rotate just after a periodic poll: the apiserver will not see the new key for ~60 s.
        await wait_for_a_periodic_status_poll(api)
        new_key = rotate_plugin_keyring(cluster)
        assert new_key != old_key
        assert load_keyring(cluster.keyring).primary_key_id == new_key
        started_at = time.time()

        first = await assess_once(api, started_at)
        assert isinstance(first, Waiting), first
        (lag,) = first.lagging
        assert (lag.apiserver_id, lag.reason) == (lease_name, Lag.NO_STATUS_SINCE_START)
        assert lag.write_key_id_hash == sha256_label(old_key)
        assert lease_name in first.message
        # What the gate guards against: a write now still lands under the old key.
        during_key = create_configmap(cluster, "during-wait")
        assert stored_key_id(cluster, during_key) == old_key

        seen: list[GateResult] = []

        async def record(result: GateResult) -> None:
            seen.append(result)

        result = await wait_for_convergence(api, started_at, 150, record)
        converged_after = time.time() - started_at
        assert isinstance(result, Converged), result
        assert result.key_id_hash == sha256_label(new_key)
        assert result.apiservers == (lease_name,)
        polls = raw_status_polls(await api.get_text("/metrics"))
        assert polls[sha256_label(new_key)] > started_at  # the apiserver did poll after the start
        for waiting in seen[:-1]:
            assert isinstance(waiting, Waiting)
            assert [lag.apiserver_id for lag in waiting.lagging] == [lease_name]
            assert waiting.lagging[0].write_key_id_hash == sha256_label(old_key)
        print(f"converged {converged_after:.1f} s after the rotation, after {len(seen)} looks")

        after_key = create_configmap(cluster, "after-convergence")
        assert stored_key_id(cluster, after_key) == new_key
        in_etcd = {stored_key_id(cluster, key) for key in (before_key, during_key, after_key)}
        assert in_etcd == {old_key, new_key}
        assert current_key_id(result.key_id_hash, in_etcd) == new_key


async def test_nudge_makes_the_apiserver_poll_before_its_periodic_poll(
    make_cluster: Callable[..., DevCluster],
) -> None:
    cluster = make_cluster()
    async with KubeApi(load_credentials(cluster.kubeconfig)) as api:
        periodic = await wait_for_a_periodic_status_poll(api)
        new_key = rotate_plugin_keyring(cluster)
        started_at = time.time()
        result = await wait_for_convergence(api, started_at, 90, nudge=True)
        assert isinstance(result, Converged), result
        assert result.key_id_hash == sha256_label(new_key)
        polled = raw_status_polls(await api.get_text("/metrics"))[sha256_label(new_key)]
        # /readyz re-runs Status once the last answer is 20 s old, long before the 60 s poll.
        assert periodic + 19 < polled < periodic + 50, (periodic, polled)
        print(f"nudged Status poll {polled - periodic:.1f} s after the periodic one")
        assert stored_key_id(cluster, create_configmap(cluster, "after-nudge")) == new_key


def failed_status_calls(metrics_text: str) -> int:
    """Status calls the plugin refused, from the apiserver's KMS operation counter."""
    total = 0
    for line in metrics_text.splitlines():
        if (
            line.startswith("apiserver_envelope_encryption_kms_operations_latency_seconds_count{")
            and 'method_name="/v2.KeyManagementService/Status"' in line
            and 'grpc_status_code="OK"' not in line
        ):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


async def test_gate_times_out_naming_the_apiserver_whose_plugin_cannot_serve_the_new_key(
    make_cluster: Callable[..., DevCluster],
) -> None:
    cluster = make_cluster()
    lease_name = identity_lease_name(cluster)
    old_key = load_keyring(cluster.keyring).primary_key_id
    async with KubeApi(load_credentials(cluster.kubeconfig)) as api:
        failed_before = failed_status_calls(await api.get_text("/metrics"))
        new_key = rotate_plugin_keyring(cluster)
        # A primary the plugin refuses to use: every Status fails, so the apiserver keeps kek-1.
        keyring_command(cluster, "disable", new_key)
        started_at = time.time()
        result = await wait_for_convergence(api, started_at, POLL_BOUND_SECONDS)
        assert isinstance(result, Waiting), result
        (lag,) = result.lagging
        assert (lag.apiserver_id, lag.reason) == (lease_name, Lag.NO_STATUS_SINCE_START)
        assert lag.write_key_id_hash == sha256_label(old_key)
        assert f"{lease_name} has not polled its KMS Status since the migration started" in result.message
        # It did poll in the meantime; the polls failed (the apiserver's own counter says so).
        assert failed_status_calls(await api.get_text("/metrics")) > failed_before


async def test_a_token_without_get_on_metrics_yields_no_metrics_access(
    make_cluster: Callable[..., DevCluster],
) -> None:
    cluster = make_cluster()
    account = "system:serviceaccount:default:gate-reader"
    cluster.kubectl("create", "serviceaccount", "gate-reader", "-n", "default")
    token = cluster.kubectl("create", "token", "gate-reader", "-n", "default", "--duration=1h").strip()
    credentials = ApiCredentials(server=cluster.api_url, ca_path=str(cluster.pki.ca.cert), token=token)
    async with KubeApi(credentials) as api:
        with pytest.raises(ConvergenceError, match=r"list on leases\.coordination\.k8s\.io"):
            await assess_once(api, 0.0)

        cluster.kubectl(
            "create", "role", "identity-leases", "-n", "kube-system", "--verb=list", "--resource=leases"
        )
        cluster.kubectl(
            "create",
            "rolebinding",
            "identity-leases",
            "-n",
            "kube-system",
            "--role=identity-leases",
            f"--user={account}",
        )
        assert (
            cluster.kubectl("auth", "can-i", "get", "/metrics", f"--as={account}", check=False).strip()
            == "no"
        )
        denied = await _settled(lambda: assess_once(api, 0.0), NoMetricsAccess)
        assert isinstance(denied, NoMetricsAccess)
        assert 'cannot get path "/metrics"' in denied.detail
        assert 'nonResourceURLs ["/metrics"]' in denied.message

        # The documented rule is enough: with it the same token sees the apiserver converged.
        cluster.kubectl(
            "create", "clusterrole", "metrics-reader", "--verb=get", "--non-resource-url=/metrics"
        )
        cluster.kubectl(
            "create",
            "clusterrolebinding",
            "metrics-reader",
            "--clusterrole=metrics-reader",
            f"--user={account}",
        )
        assert cluster.kubectl("auth", "can-i", "get", "/metrics", f"--as={account}").strip() == "yes"
        allowed = await _settled(lambda: assess_once(api, 0.0), Converged)
        assert isinstance(allowed, Converged), allowed
        assert allowed.key_id_hash == sha256_label(load_keyring(cluster.keyring).primary_key_id)


async def _settled(
    look: Callable[[], Awaitable[GateResult]], expected: type, seconds: float = 20.0
) -> GateResult:
    """Look until the answer has the expected type: RBAC changes reach the authorizer's cache async."""
    deadline = time.monotonic() + seconds
    while True:
        result = await look()
        if isinstance(result, expected) or time.monotonic() > deadline:
            return result
        await asyncio.sleep(1.0)
