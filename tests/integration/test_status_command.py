"""`kms-storage-migrator status` (and `kubectl storagemigration status`) on the real dev cluster.

A migration run by the real operator is watched to the end; what the command prints is judged
against the StorageMigration as kubectl reads it, and its exit codes against the phase. The
permission claim (get and list on StorageMigrations are enough) is checked with a
ServiceAccount that holds exactly those.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_harness import OperatorProcess, apply_migration, install_crd, migration

from kms_storage_migrator.devcluster.cluster import DevCluster

pytestmark = pytest.mark.integration

NAMESPACE = "status-view-test"
WATCHED = "status-watched"
FAILED = "status-failed"
CONFIGMAPS = 120
VENV_BIN = Path(sys.executable).parent


def _status(
    *args: str, kubeconfig: Path, timeout: float = 60, kubectl_plugin: bool = False
) -> subprocess.CompletedProcess[str]:
    if kubectl_plugin:
        command = [str(VENV_BIN / "kubectl"), "storagemigration", "status", *args]
    else:
        command = [sys.executable, "-m", "kms_storage_migrator", "status", *args]
    environment = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
    }
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env=environment, check=False
    )


@pytest.fixture(scope="module")
def cluster(dev_cluster: DevCluster) -> Iterator[DevCluster]:
    install_crd(dev_cluster)
    dev_cluster.kubectl("create", "namespace", NAMESPACE)
    configmaps = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm-{i}", "namespace": NAMESPACE}}
            for i in range(CONFIGMAPS)
        ],
    }
    dev_cluster.kubectl("create", "-f", "-", input=json.dumps(configmaps))
    yield dev_cluster
    for name in (WATCHED, FAILED):
        dev_cluster.kubectl(
            "patch",
            "storagemigration",
            name,
            "--type=merge",
            "-p",
            '{"metadata":{"finalizers":null}}',
            check=False,
        )
        dev_cluster.kubectl(
            "delete", "storagemigration", name, "--ignore-not-found", "--wait=false", check=False
        )
    dev_cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


@pytest.fixture(scope="module")
def watched(
    cluster: DevCluster, tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """A Full migration of the test's ConfigMaps, run by the operator and followed with --watch."""
    log = tmp_path_factory.mktemp("status") / "operator.log"
    # Slow on purpose (qps 20 for ~120 writes), so the watch sees it run.
    apply_migration(
        cluster,
        WATCHED,
        {"mode": "Full", "qps": 20, "pageSize": 20, "resources": {"include": ["core/configmaps"]}},
    )
    with OperatorProcess(cluster, log):
        completed = _status(
            WATCHED, "--watch", "--interval", "0.5", kubeconfig=cluster.kubeconfig, timeout=240
        )
    return completed, migration(cluster, WATCHED)


def test_watch_follows_the_migration_to_succeeded(
    watched: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    completed, stored = watched
    assert completed.returncode == 0, completed.stderr
    status = stored["status"]
    assert status["phase"] == "Succeeded"
    out = completed.stdout
    assert f"StorageMigration {WATCHED}  Succeeded  100%" in out
    row = next(r for r in status["resources"] if r["name"] == "core/configmaps")
    done = sum(row.get(k, 0) for k in ("rewritten", "unchanged", "conflicts", "gone", "failed"))
    assert done >= CONFIGMAPS
    assert f"{done}/{row['objectsTotal']}" in out
    assert f"target key    {status['keyId']}" in out
    assert "Verification: Verified" in out


def test_the_watch_drew_the_migration_while_it_ran(
    watched: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    completed, _ = watched
    # Off a terminal, --watch prints one line per visible change before the final table.
    lines = [line for line in completed.stdout.splitlines() if line.startswith(f"{WATCHED}  ")]
    assert len(lines) >= 3, completed.stdout
    assert lines[-1].startswith(f"{WATCHED}  Succeeded  100%  ")
    unfinished = [line for line in lines if "Succeeded" not in line]
    assert any("Migrating" in line for line in unfinished), lines
    done = [int(re.search(r"(\d+)(?:/\d+)? objects", line).group(1)) for line in lines]  # type: ignore[union-attr]
    assert done == sorted(done), lines  # objects done only grow
    assert done[-1] >= CONFIGMAPS


def test_the_kubectl_plugin_shows_the_same(cluster: DevCluster, watched: Any) -> None:
    completed = _status(WATCHED, kubeconfig=cluster.kubeconfig, kubectl_plugin=True)
    assert completed.returncode == 0, completed.stderr
    assert f"StorageMigration {WATCHED}  Succeeded" in completed.stdout


def _patch_status(cluster: DevCluster, name: str, status: dict[str, Any]) -> None:
    cluster.kubectl(
        "patch",
        "storagemigration",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def test_a_failed_migration_exits_1_and_is_the_newest(cluster: DevCluster, watched: Any) -> None:
    # No operator runs now: this status is what a failed run would have left.
    apply_migration(cluster, FAILED, {"mode": "Full", "resources": {"include": ["core/secrets"]}})
    _patch_status(
        cluster,
        FAILED,
        {
            "phase": "Failed",
            "message": "1 object(s) could not be rewritten",
            "failures": [
                {
                    "resource": "core/secrets",
                    "namespace": "a",
                    "name": "b",
                    "reason": "Forbidden",
                    "message": "x",
                }
            ],
            "failuresTotal": 1,
        },
    )
    named = _status(FAILED, kubeconfig=cluster.kubeconfig)
    assert named.returncode == 1, named.stderr
    assert f"StorageMigration {FAILED}  Failed" in named.stdout
    assert "a/b" in named.stdout
    # Under the failures, the next step for their reason (a 403: the permission to grant).
    steps = named.stdout.split("What to do:", 1)[1]
    assert "Forbidden (core/secrets): the operator may not patch core/secrets" in " ".join(steps.split())
    newest = _status(kubeconfig=cluster.kubeconfig)
    assert newest.returncode == 1
    assert f"StorageMigration {FAILED}  Failed" in newest.stdout


def test_an_unknown_name_exits_2_listing_the_names(cluster: DevCluster, watched: Any) -> None:
    completed = _status("no-such-migration", kubeconfig=cluster.kubeconfig)
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert "no StorageMigration named 'no-such-migration'; existing:" in lines[0]
    assert WATCHED in lines[0]


def _service_account_kubeconfig(cluster: DevCluster, account: str, directory: Path) -> Path:
    token = cluster.kubectl("-n", NAMESPACE, "create", "token", account, "--duration=10m").strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [
            {"name": account, "context": {"cluster": admin["clusters"][0]["name"], "user": account}}
        ],
        "current-context": account,
    }
    path = directory / f"{account}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def test_get_and_list_on_storagemigrations_are_enough(
    cluster: DevCluster, watched: Any, tmp_path: Path
) -> None:
    for account in ("status-reader", "nobody"):
        cluster.kubectl("-n", NAMESPACE, "create", "serviceaccount", account)
    cluster.kubectl(
        "create",
        "clusterrole",
        "status-reader",
        "--verb=get,list",
        "--resource=storagemigrations.kms-storage-migrator.io",
    )
    try:
        cluster.kubectl(
            "create",
            "clusterrolebinding",
            "status-reader",
            "--clusterrole=status-reader",
            f"--serviceaccount={NAMESPACE}:status-reader",
        )
        reader = _service_account_kubeconfig(cluster, "status-reader", tmp_path)
        for args in ([WATCHED], []):
            completed = _status(*args, kubeconfig=reader)
            assert completed.returncode in (0, 1), completed.stderr
            assert "StorageMigration " in completed.stdout
        nobody = _service_account_kubeconfig(cluster, "nobody", tmp_path)
        refused = _status(WATCHED, kubeconfig=nobody)
        assert refused.returncode == 2
        assert "not allowed to get storagemigrations.kms-storage-migrator.io (403)" in refused.stderr
    finally:
        cluster.kubectl(
            "delete", "clusterrolebinding,clusterrole", "status-reader", "--ignore-not-found", check=False
        )
