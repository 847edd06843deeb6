"""The operator end to end on a real cluster: plaintext to KMS v2, then a key rotation.

One legacy cluster per module (seeded while it stored plaintext, then switched to KMS v2) and
one operator process; the tests run in order, each checking one promise on that cluster.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from operator_harness import (
    OperatorProcess,
    apply_migration,
    cluster_objects,
    content,
    install_crd,
    migration,
    objects,
    resource_versions,
    scan,
    wait_finished,
)

from kms_storage_migrator.devcluster.cluster import DevCluster
from kms_storage_migrator.devcluster.seed import seed

pytestmark = pytest.mark.integration

SEEDED_NAMESPACES = ("legacy-000", "legacy-001", "legacy-002")
SEEDED_KINDS = (
    "configmaps,secrets,deployments.apps,roles.rbac.authorization.k8s.io,"
    "rolebindings.rbac.authorization.k8s.io,gadgets.demo.kms-storage-migrator.io"
)
SEEDED_CLUSTER_KINDS = "regions.demo.kms-storage-migrator.io"
# The seeded types only: counts are then exact (no leases or events renewing meanwhile).
SEEDED_SELECTION = {
    "include": [
        "core/configmaps",
        "core/secrets",
        "apps/*",
        "rbac.authorization.k8s.io/*",
        "demo.kms-storage-migrator.io/*",
    ],
    "exclude": ["apps/controllerrevisions"],
}


@dataclass
class LegacyCluster:
    cluster: DevCluster
    operator: OperatorProcess
    log: Path
    before: dict[str, dict[str, Any]] = field(default_factory=dict)

    def seeded(self) -> dict[str, dict[str, Any]]:
        found = objects(self.cluster, SEEDED_KINDS, SEEDED_NAMESPACES)
        found.update(cluster_objects(self.cluster, SEEDED_CLUSTER_KINDS))
        return found

    def finish(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        apply_migration(self.cluster, name, spec)
        return wait_finished(self.cluster, name, log=self.log)


@pytest.fixture(scope="module")
def legacy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LegacyCluster]:
    directory = tmp_path_factory.mktemp("operator-legacy")
    cluster = DevCluster(directory / "cluster")
    cluster.up("none")
    try:
        seed(cluster, 240, len(SEEDED_NAMESPACES), progress=False)
        install_crd(cluster)
        log = directory / "operator.log"
        world = LegacyCluster(cluster, OperatorProcess(cluster, log), log)
        world.before = world.seeded()
        cluster.encrypt()
        with world.operator:
            yield world
    finally:
        cluster.down()


def _kubectl_error(cluster: DevCluster, document: dict[str, Any]) -> str:
    with pytest.raises(subprocess.CalledProcessError) as error:
        cluster.kubectl("create", "-f", "-", input=json.dumps(document))
    return str(error.value.stderr)


@pytest.mark.parametrize(
    ("spec", "field_name"),
    [
        ({"concurrency": 0}, "spec.concurrency"),
        ({"qps": -5}, "spec.qps"),
        ({"pageSize": 0}, "spec.pageSize"),
        ({"maxAttemptsPerObject": 0}, "spec.maxAttemptsPerObject"),
        ({"mode": "Fast"}, "spec.mode"),
        ({"resources": {"include": ["secrets"]}}, "spec.resources.include"),
        ({"resources": {"exclude": ["Core/Secrets"]}}, "spec.resources.exclude"),
    ],
)
def test_invalid_specs_are_rejected_naming_the_field(
    legacy: LegacyCluster, spec: dict, field_name: str
) -> None:
    document = {
        "apiVersion": "kms-storage-migrator.io/v1alpha1",
        "kind": "StorageMigration",
        "metadata": {"name": "invalid"},
        "spec": spec,
    }
    message = _kubectl_error(legacy.cluster, document)
    assert "is invalid" in message
    assert field_name in message


def test_spec_is_immutable(legacy: LegacyCluster) -> None:
    apply_migration(
        legacy.cluster, "immutable", {"mode": "VerifyOnly", "resources": {"include": ["core/secrets"]}}
    )
    wait_finished(legacy.cluster, "immutable", log=legacy.log)
    patch = json.dumps({"spec": {"qps": 7}})
    with pytest.raises(subprocess.CalledProcessError) as error:
        legacy.cluster.kubectl("patch", "storagemigration", "immutable", "--type=merge", "-p", patch)
    assert "spec is immutable" in str(error.value.stderr)


def test_verify_only_reports_plaintext_and_writes_nothing(legacy: LegacyCluster) -> None:
    before = resource_versions(legacy.seeded())
    result = legacy.finish("check-plaintext", {"mode": "VerifyOnly", "resources": SEEDED_SELECTION})
    status = result["status"]
    assert status["phase"] == "Succeeded"
    assert status["mode"] == "VerifyOnly"
    assert status["verification"]["result"] == "StaleFound"
    assert status["verification"]["stale"] >= len(before)
    assert status["totals"]["rewritten"] == 0
    assert resource_versions(legacy.seeded()) == before


def test_full_mode_encrypts_every_plaintext_object(legacy: LegacyCluster) -> None:
    status = legacy.finish("encrypt", {"mode": "Full"})["status"]
    assert status["phase"] == "Succeeded", status["message"]
    assert status["verification"]["result"] == "Verified"
    assert status["verification"]["stale"] == 0
    assert status["keyId"] == legacy.cluster.current_key_id()
    assert status["totals"]["rewritten"] >= len(legacy.before)
    assert status["totals"]["failed"] == 0
    assert status["progress"] == "100%"
    assert {r["name"] for r in status["resources"]} >= {
        "core/secrets",
        "apps/deployments",
        "rbac.authorization.k8s.io/roles",
        "demo.kms-storage-migrator.io/gadgets",
        "demo.kms-storage-migrator.io/regions",
    }
    assert "events.k8s.io/events" in {d["name"] for d in status["dropped"]}
    inventory = scan(legacy.cluster)
    assert inventory["summary"]["stale"] == 0, inventory["summary"]
    # Plaintext is left only where no API reaches (apiserver-internal allocator keys).
    plaintext = [r for r in inventory["resources"] if r["plaintext"] and r["not_rewritable"] < r["total"]]
    assert plaintext == []


def test_full_mode_left_every_object_content_unchanged(legacy: LegacyCluster) -> None:
    after = legacy.seeded()
    assert after.keys() == legacy.before.keys()
    for key, item in legacy.before.items():
        assert content(after[key]) == content(item), key


def test_targeted_mode_after_rotation_rewrites_exactly_the_stale_objects(legacy: LegacyCluster) -> None:
    old_key = legacy.cluster.current_key_id()
    new_key = legacy.cluster.rotate_kek(restart=True)
    assert new_key != old_key
    fresh = [f"fresh-{index}" for index in range(5)]
    for name in fresh:
        legacy.cluster.kubectl("create", "configmap", name, "-n", "legacy-000", "--from-literal=k=v")
    before = legacy.seeded()
    stale = legacy.finish("rotation-check", {"mode": "VerifyOnly", "resources": SEEDED_SELECTION})["status"]
    stale_count = stale["verification"]["stale"]
    assert stale_count >= len(legacy.before)

    status = legacy.finish("rotate", {"mode": "Targeted", "resources": SEEDED_SELECTION})["status"]
    assert status["phase"] == "Succeeded", status["message"]
    assert status["keyId"] == new_key
    totals = status["totals"]
    assert totals["rewritten"] + totals["conflicts"] + totals["gone"] == stale_count
    assert totals["failed"] == 0
    after = legacy.seeded()
    for name in fresh:  # already under the new key: never written
        key = f"ConfigMap/legacy-000/{name}"
        assert after[key]["metadata"]["resourceVersion"] == before[key]["metadata"]["resourceVersion"]
    for key in legacy.before:  # under the old key: every one rewritten, content intact
        assert after[key]["metadata"]["resourceVersion"] != before[key]["metadata"]["resourceVersion"], key
        assert content(after[key]) == content(before[key]), key
    inventory = scan(
        legacy.cluster, "configmaps", "secrets", "deployments.apps", "roles.rbac.authorization.k8s.io"
    )
    assert inventory["summary"]["stale"] == 0, inventory["summary"]


def test_kubectl_get_shows_the_progress_columns(legacy: LegacyCluster) -> None:
    table = legacy.cluster.kubectl("get", "storagemigrations")
    header, *rows = table.splitlines()
    assert header.split() == ["NAME", "PHASE", "PROGRESS", "REWRITTEN", "FAILED", "STALE", "ETA", "AGE"]
    encrypt = next(row for row in rows if row.startswith("encrypt "))
    # A finished migration has no ETA: the column is blank, so AGE follows STALE.
    eta = header.index("ETA")
    assert encrypt[eta : eta + 3].strip() == ""
    cells = encrypt.split()
    assert cells[1:3] == ["Succeeded", "100%"]
    assert int(cells[3]) >= len(legacy.before)
    assert cells[4:6] == ["0", "0"]
    wide = legacy.cluster.kubectl("get", "storagemigrations", "-o", "wide").splitlines()[0].split()
    assert wide[-3:] == ["RATE", "MODE", "KEY"]
    short = legacy.cluster.kubectl("get", "sm", "encrypt", "-o", "name")
    assert short.strip() == "storagemigration.kms-storage-migrator.io/encrypt"


def test_finished_migrations_are_never_run_again(legacy: LegacyCluster) -> None:
    finished = migration(legacy.cluster, "encrypt")["status"]
    legacy.operator.stop()
    legacy.operator.start()
    apply_migration(
        legacy.cluster, "after-restart", {"mode": "VerifyOnly", "resources": {"include": ["core/secrets"]}}
    )
    wait_finished(legacy.cluster, "after-restart", log=legacy.log)  # the restarted operator is working
    again = migration(legacy.cluster, "encrypt")["status"]
    assert again["completionTime"] == finished["completionTime"]
    assert again["totals"] == finished["totals"]


def test_metrics_count_outcomes(legacy: LegacyCluster) -> None:
    apply_migration(legacy.cluster, "metrics", {"mode": "Full", "resources": {"include": ["core/secrets"]}})
    status = wait_finished(legacy.cluster, "metrics", log=legacy.log)["status"]
    text = legacy.operator.metrics()
    counted = re.findall(
        r'^kms_storage_migrator_objects_total\{migration="metrics",outcome="(\w+)",[^}]*\} (\S+)$', text, re.M
    )
    by_outcome = {outcome: int(float(value)) for outcome, value in counted}
    totals = status["totals"]
    assert by_outcome.get("rewritten", 0) == totals["rewritten"]
    assert by_outcome.get("unchanged", 0) == totals["unchanged"]
    assert sum(by_outcome.values()) == totals["objectsTotal"] > 0
    assert "kms_storage_migrator_request_duration_seconds_bucket" in text
    assert 'kms_storage_migrator_migration_phase{migration="metrics",phase="Succeeded"} 1.0' in text
    assert 'kms_storage_migrator_objects_remaining{migration="metrics"} 0.0' in text


def test_without_etcd_access_auto_means_full_and_the_result_is_unverified(legacy: LegacyCluster) -> None:
    legacy.operator.stop()
    api_only = OperatorProcess(legacy.cluster, legacy.log, etcd=False).start()
    try:
        status = legacy.finish("api-only", {"resources": {"include": ["core/secrets"]}})["status"]
    finally:
        api_only.stop()
        legacy.operator.start()
    assert status["mode"] == "Full"
    assert status["phase"] == "Succeeded"
    assert status["verification"]["result"] == "Unverified"
    assert "unverified" in status["message"]
    assert status["totals"]["unchanged"] == status["totals"]["objectsTotal"] > 0
