"""`kms-storage-migrator preflight` against the real dev cluster: what passes, what fails and why.

Judged against the cluster itself: the provider name the dev cluster configured, an etcd
prefix it does not use, a ServiceAccount that holds no role at all. Read-only, so the shared
session cluster is left as it was.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from kms_storage_migrator.devcluster.cluster import DevCluster

pytestmark = pytest.mark.integration


def _preflight(cluster: DevCluster, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "kms_storage_migrator",
        "preflight",
        "--kubeconfig",
        str(cluster.kubeconfig),
        *args,
    ]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=120, env=os.environ.copy(), check=False
    )


def _row(output: str, check: str) -> str:
    return next(line for line in output.splitlines() if line.startswith(check))


def test_an_admin_on_a_kms_cluster_passes_every_check(dev_cluster: DevCluster) -> None:
    result = _preflight(dev_cluster, "--etcd-config", str(dev_cluster.etcd_config))
    assert result.returncode == 0, result.stdout + result.stderr
    # The dev cluster's etcd has no auth, so its reader could write: the one warning.
    assert result.stdout.splitlines()[-1] == "0 check(s) failed, 1 warning(s)", result.stdout
    assert f"KMS v2 provider(s) in use: {dev_cluster.provider_name}" in _row(result.stdout, "write format")
    assert " OK " in _row(result.stdout, "RBAC patch */*")
    assert "you may list and patch every resource (*/*)" in _row(result.stdout, "permissions")
    assert "namespaces under /registry/namespaces/" in _row(result.stdout, "etcd ")
    assert "WARN" in _row(result.stdout, "etcd read-only")
    # --enforce turns that warning into a non-zero exit, as spec.preflight Enforce stops a run.
    enforced = _preflight(dev_cluster, "--etcd-config", str(dev_cluster.etcd_config), "--enforce")
    assert enforced.returncode == 1, enforced.stdout + enforced.stderr


def test_a_service_account_without_a_role_and_a_wrong_prefix_fail_saying_what_to_do(
    dev_cluster: DevCluster,
) -> None:
    result = _preflight(
        dev_cluster,
        "--service-account",
        "default/preflight-nobody",
        "--etcd-config",
        str(dev_cluster.etcd_config),
        "--etcd-prefix",
        "/not-this-cluster",
    )
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    patch = next(i for i, line in enumerate(lines) if line.startswith("RBAC patch */*"))
    assert "FAIL" in lines[patch]
    assert "ServiceAccount default/preflight-nobody may not patch */*" in lines[patch]
    assert "what to do: grant it in the operator's ClusterRole" in lines[patch + 1]
    assert "FAIL" in _row(result.stdout, "etcd ")
    assert "/not-this-cluster/namespaces/" in _row(result.stdout, "etcd ")
    # Checked with the caller's credentials: the cluster does encrypt with KMS v2.
    assert " OK " in _row(result.stdout, "write format")
