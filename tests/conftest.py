"""Fixtures that start the real dev cluster: etcd, the KMS v2 plugin and kube-apiserver.

Nothing here is mocked: integration tests talk to real processes started from the binaries
that `kms-storage-migrator dev-cluster build` made (and cached) from Go modules.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from kms_storage_migrator.devcluster.cluster import DevCluster

# The longest modules first (seconds measured in the CI rehearsal of 43a5ef5, the slowest test
# of each): with `--dist loadfile` each module runs whole on one worker in collection order, so
# a long module collected last ran alone on one worker while the other sat idle (the KMS outage
# module, ~8 min, did). Unit tests, quick and many, fill the gaps at the end.
SLOW_MODULES_FIRST = (
    "test_faults_kms.py",  # 357 s disabled key, plus the outage variants
    "test_faults_load.py",  # 180-284 s (two cases on one cluster)
    "test_dev_cluster.py",  # 192 s disabled primary key
    "test_convergence_rotation.py",  # 128 + 87 + 84 s
    "test_engine_etcd_outage.py",  # 151 s
    "test_faults_etcd_long_outage.py",  # 148 s
    "test_faults_etcd_outage.py",
    "test_auto_migrate.py",  # 105 s
    "test_faults_hostile.py",  # 101 s
    "test_faults_writers.py",
    "test_convergence_ha.py",
    "test_faults_ha.py",
    "test_faults_startup_restart.py",
    "test_leader_election.py",
    "test_preflight_phase.py",  # 93-160 s (this session, loaded machine)
    "test_faults_secrets_audit.py",  # 117-144 s
    "test_faults_mutating_webhook.py",  # ~120 s
    "test_failure_list.py",  # 80-130 s
)


def _module_rank(item: pytest.Item) -> tuple[int, int]:
    name = item.path.name
    if name in SLOW_MODULES_FIRST:
        return (0, SLOW_MODULES_FIRST.index(name))
    return (2, 0) if "unit" in item.path.parts else (1, 0)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # sort() is stable: within a module, and among modules of one rank, collection order stays.
    items.sort(key=_module_rank)


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
