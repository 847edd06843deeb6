"""A large range cut at namespaces is still read whole, once and in key order, on the real etcd.

etcd counts every key left in a range on each paged request, so the reader cuts a range found
holding more than LARGE_RANGE_KEYS keys at ``<prefix><namespace>/``; at 200k objects that read
2.3x faster. Here the threshold is lowered so 300 ConfigMaps in 12 namespaces are cut, and
every read is judged against etcdctl's own listing of the keys.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
from fault_tools import EtcdInspector
from operator_harness import configmaps_list

from kms_storage_migrator.devcluster.cluster import DevCluster
from kms_storage_migrator.storage import etcd
from kms_storage_migrator.storage.etcd import EtcdConfig, EtcdReader, namespace_names

pytestmark = pytest.mark.integration

PREFIX = "/registry/configmaps/"
NAMESPACES = [f"cut-{index:02}" for index in range(12)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    cluster = DevCluster(tmp_path_factory.mktemp("etcd-range-cuts") / "cluster")
    cluster.up("kms")
    try:
        for namespace in NAMESPACES:
            cluster.kubectl("create", "-f", "-", input=configmaps_list(namespace, 25))
        yield cluster
    finally:
        cluster.down()


def etcdctl_keys(cluster: DevCluster) -> list[bytes]:
    listing = EtcdInspector(cluster)._etcdctl("get", "--prefix", PREFIX, "--keys-only", "-w", "json")
    reply = json.loads(listing)
    return [base64.b64decode(kv["key"]) for kv in reply["kvs"]]


@pytest.fixture
def cuts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Lower the threshold, and count the ranges cut (each call: how many parts it made)."""
    monkeypatch.setattr(etcd, "LARGE_RANGE_KEYS", 10)
    made: list[int] = []
    cut = etcd._cut_at_namespaces

    def counting(cursors: object, namespaces: object) -> None:
        before = len(cursors)  # type: ignore[arg-type]
        cut(cursors, namespaces)  # type: ignore[arg-type]
        made.append(len(cursors) - before)  # type: ignore[arg-type]

    monkeypatch.setattr(etcd, "_cut_at_namespaces", counting)
    return made


@pytest.mark.parametrize("keys_only", [False, True])
async def test_a_cut_range_yields_every_key_once_in_order(
    cluster: DevCluster, cuts: list[int], keys_only: bool
) -> None:
    expected = etcdctl_keys(cluster)
    async with EtcdReader(EtcdConfig.from_file(cluster.etcd_config)) as reader:
        names = await namespace_names(reader)
        assert set(NAMESPACES) <= {name.decode() for name in names}
        seen = [
            entry.key
            async for page in reader.scan(PREFIX, 7, keys_only=keys_only, namespaces=names)
            for entry in page
        ]
    assert seen == expected
    assert cuts  # the first range was cut...
    assert cuts[0] >= len(NAMESPACES) - 1  # ...at (nearly) every namespace


async def test_a_resumed_scan_is_cut_too_and_starts_after_its_key(
    cluster: DevCluster, cuts: list[int]
) -> None:
    expected = etcdctl_keys(cluster)
    after = expected[40]
    async with EtcdReader(EtcdConfig.from_file(cluster.etcd_config)) as reader:
        names = await namespace_names(reader)
        seen = [
            entry.key
            async for page in reader.scan(PREFIX, 7, start_after=after, namespaces=names)
            for entry in page
        ]
    assert seen == expected[41:]
    assert cuts


async def test_without_namespaces_a_large_range_is_read_as_one(cluster: DevCluster, cuts: list[int]) -> None:
    async with EtcdReader(EtcdConfig.from_file(cluster.etcd_config)) as reader:
        seen = [entry.key async for page in reader.scan(PREFIX, 7) for entry in page]
    assert seen == etcdctl_keys(cluster)
    assert cuts == []
