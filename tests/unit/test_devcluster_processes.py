"""Starting and stopping detached processes, and what their logs show on failure."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from kms_storage_migrator.devcluster import processes
from kms_storage_migrator.errors import UserError


def test_a_started_process_runs_until_stopped(tmp_path: Path) -> None:
    pid = processes.start([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "sleeper.log")
    assert processes.is_running(pid, "time.sleep")
    assert not processes.is_running(pid, "time.sleep", "kube-apiserver")  # another program
    processes.stop(pid, "kube-apiserver", grace_seconds=5)  # not ours to stop: left alone
    assert processes.is_running(pid)
    processes.stop(pid, "time.sleep", grace_seconds=5)
    assert not processes.is_running(pid)


def test_failure_report_shows_only_the_latest_run(tmp_path: Path) -> None:
    log = tmp_path / "component.log"
    for word in ("first", "second"):
        pid = processes.start([sys.executable, "-c", f"print('{word} run'); raise SystemExit(3)"], log)
        with pytest.raises(UserError) as caught:
            processes.wait_until(
                lambda: False, what="component", pid=pid, program=("run",), log_path=log, timeout_seconds=10
            )
    assert "second run" in str(caught.value)
    assert "first run" not in str(caught.value)
    assert not isinstance(caught.value, processes.PortInUse)


def test_a_held_port_is_reported_as_in_use(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(processes.PortInUse, match=str(port)):
            processes.wait_for_port_release(port, timeout_seconds=0.5)
        with pytest.raises(UserError, match=f"127.0.0.1:{port} for etcd is already in use"):
            processes.ensure_port_free(port, "etcd")
    processes.wait_for_port_release(port, timeout_seconds=5)
