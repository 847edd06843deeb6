"""`kms-storage-migrator scan` on real dev clusters: exact counts on a mixed cluster, the CI guard,
and one-line errors on bad input."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kms_storage_migrator.devcluster.cluster import DevCluster
from kms_storage_migrator.devcluster.seed import crd_manifest
from kms_storage_migrator.inventory.counts import Inventory
from kms_storage_migrator.inventory.scan import classify_page, crd_index_from_etcd
from kms_storage_migrator.storage.etcd import EtcdConfig, EtcdReader
from kms_storage_migrator.storage.formats import DEK_SOURCE_HKDF_SEED, FormatKind
from kms_storage_migrator.storage.keys import GroupResource, scan_boundaries
from kms_storage_migrator.storage.write_format import WriteFormat

pytestmark = pytest.mark.integration

NS = "inv-mixed"
GROUP = "inv.example.com"


def scan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kms_storage_migrator", "scan", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def scan_json(cluster: DevCluster, *args: str) -> dict[str, Any]:
    completed = scan("--etcd-config", str(cluster.etcd_config), "-o", "json", *args)
    assert completed.returncode == 0, completed.stderr
    document: dict[str, Any] = json.loads(completed.stdout)
    return document


def row(document: dict[str, Any], group: str, resource: str) -> dict[str, Any]:
    rows = [r for r in document["resources"] if (r["group"], r["resource"]) == (group, resource)]
    assert len(rows) == 1, f"{resource}.{group} missing from the report"
    return rows[0]


def crd(plural: str, kind: str, scope: str) -> dict[str, Any]:
    return crd_manifest(GROUP, plural, kind, scope)


def create_objects(
    cluster: DevCluster, phase: str, configmaps: int, secrets: int, widgets: int, gadgets: int
) -> None:
    """Objects named after the phase that wrote them, so a failure says which write went wrong."""
    items: list[dict[str, Any]] = []

    def meta(name: str, namespace: str | None = NS) -> dict[str, str]:
        return {"name": name, "namespace": namespace} if namespace else {"name": name}

    items += [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(f"{phase}-cm-{i}"), "data": {"i": str(i)}}
        for i in range(configmaps)
    ]
    items += [
        {"apiVersion": "v1", "kind": "Secret", "metadata": meta(f"{phase}-s-{i}"), "stringData": {"k": "v"}}
        for i in range(secrets)
    ]
    items += [
        {"apiVersion": f"{GROUP}/v1", "kind": "Widget", "metadata": meta(f"{phase}-w-{i}"), "spec": {"i": i}}
        for i in range(widgets)
    ]
    items += [
        {
            "apiVersion": f"{GROUP}/v1",
            "kind": "Gadget",
            "metadata": meta(f"{phase}-g-{i}", None),
            "spec": {"i": i},
        }
        for i in range(gadgets)
    ]
    cluster.kubectl(
        "create", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    )


async def rewrite_stale_objects(cluster: DevCluster, expectation: WriteFormat) -> int:
    """No-op updates (`kubectl get -o json | kubectl replace`) of every resource holding stale objects."""
    async with EtcdReader(EtcdConfig.from_file(cluster.etcd_config)) as reader:
        index = await crd_index_from_etcd(reader)
        stale = set()
        async for page in reader.scan("/registry/"):
            for obj in classify_page(page, index):
                if obj.stored_key.rewritable and not expectation.is_current(obj.format):
                    stale.add(obj.stored_key.group_resource)
    for resource in sorted(stale):
        listing = cluster.kubectl("get", str(resource), "--all-namespaces", "-o", "json")
        cluster.kubectl("replace", "-f", "-", input=listing, check=False)  # a conflict is retried next round
    return len(stale)


@pytest.fixture(scope="module")
def mixed_cluster(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Plaintext objects, then KMS v2 under key A, then under key B after a rotation.

    Shared by the tests below in file order: the --fail-on-stale test rewrites every stale object,
    so it comes after the counting tests.
    """
    cluster = DevCluster(tmp_path_factory.mktemp("mixed"))
    cluster.up("none")
    try:
        cluster.kubectl("create", "namespace", NS)
        for plural, kind, scope in (("widgets", "Widget", "Namespaced"), ("gadgets", "Gadget", "Cluster")):
            cluster.kubectl("create", "-f", "-", input=json.dumps(crd(plural, kind, scope)))
            cluster.wait_established(f"{plural}.{GROUP}")
        create_objects(cluster, "plain", configmaps=3, secrets=2, widgets=2, gadgets=1)
        cluster.encrypt()
        key_a = cluster.current_key_id()
        create_objects(cluster, "keya", configmaps=2, secrets=1, widgets=1, gadgets=1)
        key_b = cluster.rotate_kek(restart=True)
        assert key_b != key_a
        create_objects(cluster, "keyb", configmaps=1, secrets=1, widgets=1, gadgets=2)
        yield cluster, key_a, key_b
    finally:
        cluster.down()


def test_mixed_cluster_counts_per_resource(mixed_cluster: tuple[DevCluster, str, str]) -> None:
    cluster, key_a, key_b = mixed_cluster
    document = scan_json(cluster, "--expect-key-id", key_b)
    assert document["expected"]["key_id"] == key_b

    def counts(group: str, resource: str) -> dict[str, Any]:
        found = row(document, group, resource)
        return {name: found[name] for name in ("total", "plaintext", "kmsv2", "other", "unknown", "stale")}

    # No controllers run in the dev cluster: these resources hold only what this test wrote.
    assert counts("", "secrets") == {
        "total": 4,
        "plaintext": 2,
        "kmsv2": {key_a: 1, key_b: 1},
        "other": 0,
        "unknown": 0,
        "stale": 3,
    }
    assert counts(GROUP, "widgets") == {
        "total": 4,
        "plaintext": 2,
        "kmsv2": {key_a: 1, key_b: 1},
        "other": 0,
        "unknown": 0,
        "stale": 3,
    }
    assert counts(GROUP, "gadgets") == {
        "total": 4,
        "plaintext": 1,
        "kmsv2": {key_a: 1, key_b: 2},
        "other": 0,
        "unknown": 0,
        "stale": 2,
    }
    # The summary is the sum of the rows, and the non-API keys are labelled, never stale.
    summary = document["summary"]
    for field in ("total", "plaintext", "other", "unknown", "not_rewritable", "stale"):
        assert summary[field] == sum(r[field] for r in document["resources"]), field
    ranges = row(document, "", "ranges")
    assert ranges["not_rewritable"] == ranges["total"] > 0
    assert ranges["stale"] == 0


async def test_namespace_slice_through_the_python_api(mixed_cluster: tuple[DevCluster, str, str]) -> None:
    cluster, key_a, key_b = mixed_cluster
    expectation = WriteFormat.for_key_id(key_b, provider=cluster.provider_name)
    inventory = Inventory(expectation)
    async with EtcdReader(EtcdConfig.from_file(cluster.etcd_config)) as reader:
        objects = [
            obj
            async for page in reader.scan(f"/registry/configmaps/{NS}/")
            for obj in classify_page(page, {})
        ]
        for obj in objects:
            inventory.record(obj)
            phase = obj.stored_key.name.split("-")[0]
            if phase == "plain":
                assert obj.format.kind is FormatKind.PLAINTEXT_PROTOBUF
            else:
                assert obj.format.kind is FormatKind.KMS_V2
                assert obj.format.provider == cluster.provider_name
                assert obj.format.key_id == {"keya": key_a, "keyb": key_b}[phase]
                assert obj.format.dek_source_type == DEK_SOURCE_HKDF_SEED
    configmaps = inventory.resources[GroupResource("", "configmaps")]
    assert (configmaps.total, configmaps.plaintext, configmaps.kmsv2, configmaps.stale) == (
        6,
        3,
        {key_a: 2, key_b: 1},
        5,
    )


def test_fail_on_stale_guards_until_every_stale_object_is_rewritten(
    mixed_cluster: tuple[DevCluster, str, str],
) -> None:
    cluster, _, key_b = mixed_cluster
    guard = (
        "--etcd-config",
        str(cluster.etcd_config),
        "--kubeconfig",
        str(cluster.kubeconfig),
        "--fail-on-stale",
    )
    before = scan(*guard, "-o", "json")
    assert before.returncode == 1, before.stderr
    learnt = json.loads(before.stdout)["expected"]
    assert (learnt["format"], learnt["key_id"], learnt["provider"]) == (
        "kms-v2",
        key_b,
        cluster.provider_name,
    )
    assert "ConfigMap default/kms-storage-migrator-canary-" in learnt["source"]
    assert cluster.kubectl("get", "configmaps", "-n", "default", "-o", "name").count("canary") == 0

    expectation = WriteFormat.for_key_id(key_b, provider=cluster.provider_name)
    for _ in range(4):
        if asyncio.run(rewrite_stale_objects(cluster, expectation)) == 0:
            break
    after = scan(*guard)
    assert after.returncode == 0, after.stdout + after.stderr
    assert "; 0 stale (expected kms-v2:local-kms:" in after.stdout


def one_line_error(completed: subprocess.CompletedProcess[str]) -> str:
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert "Traceback" not in completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    return lines[0]


def etcd_files(cluster: DevCluster) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(cluster.etcd_config.read_text())
    return document


def test_unreachable_endpoint_is_one_line(dev_cluster: DevCluster) -> None:
    files = etcd_files(dev_cluster)
    line = one_line_error(
        scan(
            "--etcd-endpoints",
            "https://127.0.0.1:1",
            "--etcd-cacert",
            files["cacert"],
            "--etcd-cert",
            files["cert"],
            "--etcd-key",
            files["key"],
        )
    )
    assert "https://127.0.0.1:1" in line
    assert "connection refused" in line


def test_wrong_ca_is_one_line(dev_cluster: DevCluster) -> None:
    files = etcd_files(dev_cluster)
    endpoint = files["endpoints"][0]
    line = one_line_error(
        scan(
            "--etcd-endpoints",
            endpoint,
            "--etcd-cacert",
            files["cert"],
            "--etcd-cert",
            files["cert"],
            "--etcd-key",
            files["key"],
        )
    )
    assert endpoint in line
    assert "TLS handshake failed" in line


def test_missing_client_key_file_is_one_line(dev_cluster: DevCluster, tmp_path: Path) -> None:
    files = etcd_files(dev_cluster)
    missing = tmp_path / "nothing.key"
    line = one_line_error(
        scan(
            "--etcd-endpoints",
            files["endpoints"][0],
            "--etcd-cacert",
            files["cacert"],
            "--etcd-cert",
            files["cert"],
            "--etcd-key",
            str(missing),
        )
    )
    assert f"--etcd-key {missing}" in line


def test_prefix_with_no_keys_is_one_line(dev_cluster: DevCluster) -> None:
    line = one_line_error(
        scan("--etcd-config", str(dev_cluster.etcd_config), "--etcd-prefix", "/nothing-here")
    )
    assert "no keys under '/nothing-here/'" in line


def test_fail_on_stale_without_an_expectation_is_one_line(dev_cluster: DevCluster) -> None:
    line = one_line_error(scan("--etcd-config", str(dev_cluster.etcd_config), "--fail-on-stale"))
    assert "--expect-key-id or --kubeconfig" in line


def test_shared_cluster_is_all_current_and_values_never_printed(dev_cluster: DevCluster) -> None:
    secret_value = "inventory-never-prints-this"
    namespace = "inv-scan-shared"
    dev_cluster.kubectl("create", "namespace", namespace)
    try:
        dev_cluster.kubectl(
            "create", "secret", "generic", "s", "-n", namespace, f"--from-literal=k={secret_value}"
        )
        for output in ("table", "json"):
            completed = scan(
                "--etcd-config",
                str(dev_cluster.etcd_config),
                "--expect-key-id",
                dev_cluster.current_key_id(),
                "--resource",
                "secrets",
                "-o",
                output,
            )
            assert completed.returncode == 0, completed.stderr
            assert secret_value not in completed.stdout + completed.stderr
        secrets = row(json.loads(completed.stdout), "", "secrets")
        assert secrets["stale"] == 0
        assert secrets["kmsv2"] == {dev_cluster.current_key_id(): secrets["total"]}
    finally:
        dev_cluster.kubectl("delete", "namespace", namespace, "--wait=false")


async def settled_keys(reader: EtcdReader) -> list[bytes]:
    """The keys under /registry once a fresh apiserver has stopped creating them (its
    peer-endpoint lease comes a few seconds after readiness)."""
    previous: list[bytes] = []
    for _ in range(60):
        keys = [entry.key async for page in reader.scan("/registry/", keys_only=True) for entry in page]
        if keys == previous and any(key.startswith(b"/registry/peerserverleases/") for key in keys):
            return keys
        previous = keys
        await asyncio.sleep(1)
    raise AssertionError("the apiserver kept creating keys for a minute")


async def test_scan_resumes_after_compaction_without_losing_or_repeating_keys(
    make_cluster: Callable[..., DevCluster],
) -> None:
    cluster = make_cluster(encryption="kms")
    async with EtcdReader(EtcdConfig.from_file(cluster.etcd_config)) as reader:
        expected = await settled_keys(reader)
        # Cutting the scan at every known location reads the very same keys, gaps included.
        split = reader.scan("/registry/", 7, keys_only=True, split_at=scan_boundaries({}))
        assert [entry.key async for page in split for entry in page] == expected
        resumed = reader.scan("/registry/", keys_only=True, start_after=expected[10])
        assert [entry.key async for page in resumed for entry in page] == expected[11:]
        pages = reader.scan("/registry/", page_size=10)
        seen = [entry.key for entry in await anext(pages)]
        pinned = reader.revision
        # Move etcd past the pinned revision with a key outside /registry, then compact it away.
        cluster.etcdctl("put", "inventory-test/compaction", "x")
        head = json.loads(cluster.etcdctl("get", "inventory-test/compaction", "-w", "json"))["header"][
            "revision"
        ]
        cluster.etcdctl("compact", str(head))
        async for page in pages:
            seen += [entry.key for entry in page]
        after = [entry.key async for page in reader.scan("/registry/", keys_only=True) for entry in page]
    assert reader.compaction_restarts == 1
    assert reader.revision > pinned
    # The apiserver keeps writing: keys present throughout are each seen once, in key order.
    assert seen == sorted(set(seen))
    assert set(expected) & set(after) <= set(seen)


def test_a_prefix_holding_none_of_the_apiservers_keys_fails_the_guard(dev_cluster: DevCluster) -> None:
    """``/`` holds every key, but the apiserver writes under /registry: nothing there is its own."""
    completed = scan(
        "--etcd-config",
        str(dev_cluster.etcd_config),
        "--etcd-prefix",
        "/",
        "--expect-key-id",
        dev_cluster.current_key_id(),
        "--fail-on-stale",
    )
    line = one_line_error(completed)
    assert "no keys under '/' that kube-apiserver writes" in line
    assert "--etcd-prefix" in line


def test_the_same_prefix_written_differently_scans_the_same(dev_cluster: DevCluster) -> None:
    plain = scan("--etcd-config", str(dev_cluster.etcd_config), "-o", "json")
    slashed = scan(
        "--etcd-config", str(dev_cluster.etcd_config), "--etcd-prefix", "//registry/", "-o", "json"
    )
    assert plain.returncode == slashed.returncode == 0, slashed.stderr
    assert json.loads(slashed.stdout)["summary"]["total"] > 0
    assert json.loads(slashed.stdout)["resources"] == json.loads(plain.stdout)["resources"]
