"""Fixtures that start the real dev cluster: etcd, the KMS v2 plugin and kube-apiserver.

Nothing here is mocked: integration tests talk to real processes started from the binaries
that `kms-storage-migrator dev-cluster build` made (and cached) from Go modules.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from kms_storage_migrator.devcluster.cluster import DevCluster


@pytest.fixture(scope="session")
def dev_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    """A KMS v2-encrypted cluster shared by the whole session: leave it as you found it."""
    cluster = DevCluster(tmp_path_factory.mktemp("dev-cluster"))
    cluster.up("kms")
    try:
        yield cluster
    finally:
        cluster.down()


@pytest.fixture
def make_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., DevCluster]]:
    """Start clusters of the test's own; all stopped after it.

    Options are those of ``DevCluster.up``: ``make_cluster(encryption="none")``, an HA cluster
    with ``make_cluster(apiservers=3)``, an external plugin with ``kms_endpoint`` and
    ``kms_provider_name``, the audit log with ``audit_log=True``. On these clusters
    ``rotate_kek(restart=False)`` leaves each apiserver to switch at its own KMS Status poll.
    """
    started: list[DevCluster] = []

    def make(encryption: str = "kms", **options: object) -> DevCluster:
        cluster = DevCluster(tmp_path_factory.mktemp("cluster"))
        started.append(cluster)
        cluster.up(encryption, **options)  # type: ignore[arg-type]
        return cluster

    yield make
    for cluster in started:
        cluster.down()
