"""The key-convergence gate through a load balancer: three apiservers behind HAProxy.

Each apiserver has its own identity Lease and KMS plugin (one shared keyring), so after a
rotation without restarts each switches at its own Status poll. The gate reaches them only
through HAProxy, one fresh connection per scrape. Judged against: each apiserver's identity as
the dev cluster derives it and kubectl lists it, each apiserver's own /metrics read directly
(not through the balancer), the keyring's primary key id, and etcd read with etcdctl.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

# The etcd and metrics readers of the single-apiserver test (tests/integration is on sys.path).
from test_convergence_rotation import STATUS_GAUGE, sha256_label, stored_key_id

from kms_storage_migrator.convergence.gate import Converged, GateResult, Lag, Waiting
from kms_storage_migrator.convergence.scrape import wait_for_convergence
from kms_storage_migrator.devcluster.cluster import DevCluster
from kms_storage_migrator.kms.keyring import load_keyring
from kms_storage_migrator.kube import KubeApi, load_credentials

pytestmark = pytest.mark.integration

APISERVERS = 3
CONVERGENCE_BOUND_SECONDS = 150.0


def identity_leases(cluster: DevCluster) -> set[str]:
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
    return set(names)


async def status_poll_of(kubeconfig_path: Path, key_hash: str) -> float:
    """When this apiserver's Status last returned ``key_hash``, from its own /metrics (0: never)."""
    async with KubeApi(load_credentials(kubeconfig_path)) as direct:
        text = await direct.get_text("/metrics")
    pattern = re.compile(
        rf'^{STATUS_GAUGE}{{[^}}]*key_id_hash="{re.escape(key_hash)}"[^}}]*}} (\S+)$', re.MULTILINE
    )
    match = pattern.search(text)
    return float(match.group(1)) if match else 0.0


async def test_gate_through_the_load_balancer_names_each_apiserver_until_all_switched(
    make_cluster: Callable[..., DevCluster],
) -> None:
    cluster = make_cluster(apiservers=APISERVERS)
    members = cluster.apiservers
    identities = {member.identity for member in members}
    assert len(identities) == APISERVERS
    assert identity_leases(cluster) == identities
    old_key = load_keyring(cluster.keyring).primary_key_id
    async with KubeApi(load_credentials(cluster.kubeconfig)) as api:
        before = await wait_for_convergence(api, 0.0, 60)
        assert isinstance(before, Converged), before
        assert set(before.apiservers) == identities  # every identity answered through HAProxy

        new_key = cluster.rotate_kek(restart=False)
        assert load_keyring(cluster.keyring).primary_key_id == new_key
        started_at = time.time()
        seen: list[GateResult] = []

        async def record(result: GateResult) -> None:
            seen.append(result)

        result = await wait_for_convergence(
            api, started_at, CONVERGENCE_BOUND_SECONDS, record, poll_seconds=2
        )
        took = time.time() - started_at
        assert isinstance(result, Converged), result
        assert result.key_id_hash == sha256_label(new_key)
        assert set(result.apiservers) == identities

    assert isinstance(seen[0], Waiting), seen[0]
    lagging_names = {lag.apiserver_id for waiting in seen[:-1] for lag in waiting.lagging}  # type: ignore[union-attr]
    assert lagging_names <= identities
    assert any(
        lag.write_key_id_hash == sha256_label(old_key)
        for waiting in seen[:-1]
        for lag in waiting.lagging  # type: ignore[union-attr]
    )
    print(f"converged {took:.1f} s after the rotation; laggards seen: {sorted(lagging_names)}")
    for member in members:
        # Each apiserver, asked directly, polled Status after the start and got the new key ...
        assert await status_poll_of(member.kubeconfig, sha256_label(new_key)) > started_at
        # ... and what it writes now lands in etcd under the new key.
        name = f"after-convergence-{member.index}"
        cluster.kubectl(
            "--kubeconfig", str(member.kubeconfig), "create", "configmap", name, "--from-literal=k=v"
        )
        assert stored_key_id(cluster, f"/registry/configmaps/default/{name}") == new_key


async def test_gate_names_the_one_apiserver_whose_plugin_is_down(
    make_cluster: Callable[..., DevCluster],
) -> None:
    cluster = make_cluster(apiservers=APISERVERS)
    members = cluster.apiservers
    broken = members[1]
    old_key = load_keyring(cluster.keyring).primary_key_id
    cluster.stop_kms_plugin(broken.index)
    new_key = cluster.rotate_kek(restart=False)
    started_at = time.time()
    async with KubeApi(load_credentials(cluster.kubeconfig)) as api:
        result = await wait_for_convergence(api, started_at, 75, poll_seconds=2)
    assert isinstance(result, Waiting), result
    # The others switched; only the apiserver without a plugin holds the gate. Its /readyz
    # fails without the plugin, so HAProxy may take it out of rotation: then it is unreachable.
    assert {lag.apiserver_id for lag in result.lagging} == {broken.identity}, result.message
    (lag,) = result.lagging
    assert lag.reason in {Lag.NOT_REACHED, Lag.NO_STATUS_SINCE_START}
    if lag.reason is Lag.NO_STATUS_SINCE_START:
        assert lag.write_key_id_hash == sha256_label(old_key)
    assert broken.identity in result.message
    for member in members:
        if member is not broken:
            assert await status_poll_of(member.kubeconfig, sha256_label(new_key)) > started_at
    print(f"gave up after 75 s: {result.message}")
