"""`dev-cluster up` on real processes: it is ready when it says so, and a failed start names the
component that really failed and leaves no process behind.

"Nothing left" is judged from /proc directly (every process whose command line names the
cluster's directory), not through the cluster's own bookkeeping.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kms_storage_migrator.devcluster import processes
from kms_storage_migrator.devcluster.cluster import DevCluster

pytestmark = pytest.mark.integration


def processes_naming(directory: Path) -> list[str]:
    """Every live process whose command line names ``directory`` (zombies excluded)."""
    found = []
    marker = f"{directory.resolve()}/".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        snapshot = processes.read_snapshot(int(entry.name))
        if processes.judge(snapshot, ()) is processes.Liveness.RUNNING and marker in snapshot.command_line:
            found.append(f"{entry.name}: {snapshot.command_line[:120].decode(errors='replace')}")
    return found


def test_a_plugin_that_exits_at_start_is_named_and_nothing_is_left(tmp_path: Path) -> None:
    cluster = DevCluster(tmp_path / "broken-kms")
    cluster.keyring.parent.mkdir(parents=True)
    cluster.keyring.write_text("this is not a keyring\n")
    cluster.keyring.chmod(0o600)
    try:
        with pytest.raises(processes.ComponentFailed) as caught:
            cluster.up("kms")
        assert caught.value.component == "kms-plugin"
        assert str(caught.value).startswith("kms-plugin (pid ")
        assert "exited before it was ready (exit status" in str(caught.value)
        assert str(cluster.keyring) in str(caught.value)  # the plugin's own error, from its log
        assert processes_naming(cluster.directory) == []  # etcd, started first, was stopped too
        assert cluster.load_state().pids == {}
    finally:
        cluster.down()


def test_a_cluster_is_up_when_up_returns_and_down_leaves_nothing(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "kms_storage_migrator", "dev-cluster", "up", "--dir", str(tmp_path / "c")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    cluster = DevCluster(tmp_path / "c")
    try:
        assert completed.returncode == 0, completed.stderr
        assert cluster.is_up()
        state = cluster.load_state()
        assert set(state.pids) == {"etcd", "kms-plugin", "kube-apiserver"}
        assert set(state.start_ticks) == set(state.pids)
        assert cluster.kubectl("get", "--raw", "/readyz") == "ok"
    finally:
        cluster.down()
    assert processes_naming(cluster.directory) == []


def test_an_apiserver_that_exits_at_start_is_named_and_nothing_is_left(tmp_path: Path) -> None:
    policy = tmp_path / "bad-audit-policy.yaml"
    policy.write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Everything\n")
    cluster = DevCluster(tmp_path / "broken-apiserver")
    try:
        with pytest.raises(processes.ComponentFailed) as caught:
            cluster.up("kms", audit_policy=policy)
        message = str(caught.value)
        assert caught.value.component == "kube-apiserver"
        assert message.startswith("kube-apiserver (pid ")
        assert "exited before it was ready (exit status" in message
        assert "Everything" in message  # kube-apiserver's own complaint, from its log
        assert processes_naming(cluster.directory) == []
    finally:
        cluster.down()
