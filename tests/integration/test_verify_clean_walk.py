"""Verification after a Targeted walk that found everything current, on the real etcd.

Such a resource is verified from keys and mod revisions (no values) plus a read-back of what
changed since the walk: etcd's MVCC keeps the value of a key whose revision has not moved. Here
a value is made plaintext behind the apiserver's back (etcdctl put) after the walk and before
the verification: it must be read back and found, named. The counts are judged against
etcdctl's own count of the keys, not the engine's.

The runner runs in this process (no kopf), so the test can act between the two reads. The
logic, case by case, against in-memory fakes: tests/unit/test_clean_walk_verification.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fault_tools import EtcdInspector
from operator_harness import apply_migration, configmaps_list, install_crd

from kms_storage_migrator.devcluster.cluster import DevCluster
from kms_storage_migrator.kube import KubeApi, load_credentials
from kms_storage_migrator.migration.plan import MigrationSpec
from kms_storage_migrator.migration.progress import MigrationProgress, Phase, VerificationResult
from kms_storage_migrator.migration.runner import MigrationRunner
from kms_storage_migrator.migration.service import cr_key
from kms_storage_migrator.storage.etcd import EtcdConfig, EtcdReader
from kms_storage_migrator.storage.keys import EtcdRoot

pytestmark = pytest.mark.integration

NAMESPACE = "clean-walk"
OBJECTS = 300
PREFIX = "/registry/configmaps/"
SPEC = {"mode": "Targeted", "resources": {"include": ["core/configmaps"]}, "pageSize": 50}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    """KMS v2 from the start: every ConfigMap is current, nothing for the walk to write."""
    cluster = DevCluster(tmp_path_factory.mktemp("verify-clean-walk") / "cluster")
    cluster.up("kms")
    try:
        cluster.kubectl("create", "-f", "-", input=configmaps_list(NAMESPACE, OBJECTS))
        install_crd(cluster)
        yield cluster
    finally:
        cluster.down()


class Sink:
    """Status and events kept in memory; ``before_verifying`` runs as Verifying is entered."""

    def __init__(self, before_verifying: Callable[[], None]) -> None:
        self.status: dict[str, Any] = {}
        self._before_verifying = before_verifying

    async def publish(self, status: dict[str, Any]) -> None:
        self.status = status

    async def event(self, kind: str, reason: str, message: str) -> None:
        if reason == "Verifying":
            self._before_verifying()


async def _migrate(cluster: DevCluster, name: str, before_verifying: Callable[[], None]) -> MigrationProgress:
    apply_migration(cluster, name, SPEC)  # our CR in etcd: the reference format is read from it
    root = EtcdRoot.parse("/registry")
    async with (
        KubeApi(load_credentials(cluster.kubeconfig)) as api,
        EtcdReader(EtcdConfig.from_file(cluster.etcd_config)) as etcd,
    ):
        runner = MigrationRunner(
            api,
            MigrationSpec.from_spec(SPEC),
            MigrationProgress(),
            Sink(before_verifying),
            etcd=etcd,
            cr_key=cr_key(name, root),
            etcd_prefix=root,
        )
        return await runner.run()


def _configmap_keys(inspector: EtcdInspector) -> int:
    return len(inspector.values([PREFIX]))


async def test_nothing_stale_is_verified_from_revisions_with_etcdctls_count(cluster: DevCluster) -> None:
    inspector = EtcdInspector(cluster)
    progress = await _migrate(cluster, "clean", lambda: None)

    assert progress.phase is Phase.SUCCEEDED, progress.message
    verification = progress.verification
    assert verification is not None
    assert verification.result is VerificationResult.VERIFIED, verification.message
    assert verification.scanned == _configmap_keys(inspector)
    assert "unchanged since the walk read them current" in verification.message
    assert progress.totals().counts.rewritten == 0  # the probe's no-op write stores nothing new


async def test_a_value_made_plaintext_after_the_walk_is_read_back_and_named(cluster: DevCluster) -> None:
    inspector = EtcdInspector(cluster)
    victim = f"{PREFIX}{NAMESPACE}/cm-00123"
    plaintext = json.dumps(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm-00123", "namespace": NAMESPACE}}
    ).encode()
    try:
        progress = await _migrate(cluster, "planted", lambda: inspector.put(victim, plaintext))
        assert inspector.stale([PREFIX]) == {victim: "plaintext"}  # etcdctl's view of the plant

        verification = progress.verification
        assert verification is not None
        assert verification.result is VerificationResult.STALE_FOUND, verification.message
        assert "unchanged since the walk" in verification.message  # found by the read-back
        assert verification.stale == 1
        assert verification.examples == [f"core/configmaps {NAMESPACE}/cm-00123 (plaintext-json)"]
        assert verification.scanned == _configmap_keys(inspector)
        assert progress.phase is Phase.FAILED
    finally:
        inspector.delete(victim)  # the apiserver could not read it back
