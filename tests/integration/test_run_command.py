"""`kms-storage-migrator run` refuses bad settings with one line before the operator starts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from kms_storage_migrator.devcluster.cluster import DevCluster

pytestmark = pytest.mark.integration


def run_operator(*args: str, environment: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kms_storage_migrator", "run", *args],
        capture_output=True,
        text=True,
        timeout=30,  # a refused setting ends at once; kopf starting would run until killed
        env={**os.environ, **(environment or {})},
        check=False,
    )


def assert_one_line_error(completed: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert completed.returncode == 2, completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr  # one clear line, no traceback, no kopf start-up
    for fragment in fragments:
        assert fragment in lines[0]


def test_a_wrong_etcd_prefix_is_named(dev_cluster: DevCluster) -> None:
    completed = run_operator(
        "--kubeconfig",
        str(dev_cluster.kubeconfig),
        "--etcd-config",
        str(dev_cluster.etcd_config),
        "--etcd-prefix",
        "/kubernetes.io",
    )
    assert_one_line_error(completed, "/kubernetes.io/namespaces/", "--etcd-prefix")


def test_an_unreachable_etcd_is_named(dev_cluster: DevCluster, tmp_path: Path) -> None:
    config = dev_cluster.etcd_config.read_text().replace(dev_cluster.etcd_endpoint, "https://127.0.0.1:9")
    (tmp_path / "etcd.json").write_text(config)
    completed = run_operator(
        "--kubeconfig", str(dev_cluster.kubeconfig), "--etcd-config", str(tmp_path / "etcd.json")
    )
    assert_one_line_error(completed, "https://127.0.0.1:9")


def test_a_bad_environment_value_is_a_flag_error(dev_cluster: DevCluster) -> None:
    completed = run_operator(
        "--kubeconfig", str(dev_cluster.kubeconfig), environment={"KMS_STORAGE_MIGRATOR_QPS": "fast"}
    )
    assert completed.returncode == 2
    assert "argument --qps: 'fast' is not a whole number" in completed.stderr


def test_a_busy_metrics_port_is_refused_before_the_operator_starts(dev_cluster: DevCluster) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        completed = run_operator("--kubeconfig", str(dev_cluster.kubeconfig), "--metrics-port", str(port))
    assert_one_line_error(
        completed, f"--metrics-port {port}", "Address already in use", "0 to serve no metrics"
    )
