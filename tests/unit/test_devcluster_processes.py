"""Starting and stopping detached processes, judging recorded PIDs, and what failures report."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest

from kms_storage_migrator.devcluster import processes
from kms_storage_migrator.devcluster.processes import Liveness, ProcessSnapshot, judge
from kms_storage_migrator.errors import UserError

SLEEPER = "import time; time.sleep(60)"
# The main thread exits (pthread_exit) while another thread keeps running: how a Go program
# shuts down, and a state in which /proc/PID/cmdline reads empty.
LEADER_EXITS = """
import ctypes, threading, time
threading.Thread(target=time.sleep, args=(60,)).start()
ctypes.CDLL(None).pthread_exit(None)
"""
EXPECTED = ("kube-apiserver", "/clusters/a/")


def test_judge_an_empty_command_line_of_a_live_process_is_not_a_verdict() -> None:
    # Right after fork+exec returns, the kernel has not mapped the arguments yet: this was
    # taken for "exited" and left a starting kube-apiserver orphaned.
    loading = ProcessSnapshot(exists=True, thread_states=("R",), command_line=b"", start_ticks=100)
    assert judge(loading, EXPECTED) is Liveness.LOADING
    assert judge(loading, EXPECTED, start_ticks=100) is Liveness.LOADING


def test_judge_recognises_our_process_and_reused_pids() -> None:
    ours = ProcessSnapshot(
        exists=True,
        thread_states=("Z", "S", "S"),  # a zombie main thread, live others: still running
        command_line=b"/bin/kube-apiserver --etcd-cafile=/clusters/a/pki/ca.crt",
        start_ticks=100,
    )
    assert judge(ours, EXPECTED) is Liveness.RUNNING
    assert judge(ours, EXPECTED, start_ticks=100) is Liveness.RUNNING
    assert judge(ours, EXPECTED, start_ticks=99) is Liveness.OTHER  # same PID, started later
    other_cluster = ProcessSnapshot(
        exists=True, thread_states=("S",), command_line=b"/bin/kube-apiserver --x=/clusters/b/", start_ticks=1
    )
    assert judge(other_cluster, EXPECTED) is Liveness.OTHER


def test_judge_dead_processes_are_gone() -> None:
    assert judge(ProcessSnapshot(exists=False), EXPECTED) is Liveness.GONE
    zombie = ProcessSnapshot(exists=True, thread_states=("Z", "X"), command_line=b"", start_ticks=5)
    assert judge(zombie, EXPECTED, start_ticks=5) is Liveness.GONE
    assert judge(zombie, ()) is Liveness.GONE


def test_a_started_process_runs_until_stopped(tmp_path: Path) -> None:
    started = processes.start([sys.executable, "-c", SLEEPER], tmp_path / "sleeper.log")
    assert processes.is_running(started.pid, "time.sleep", start_ticks=started.start_ticks)
    assert not processes.is_running(started.pid, "time.sleep", "kube-apiserver")  # another program
    assert started.start_ticks is not None
    assert not processes.is_running(started.pid, "time.sleep", start_ticks=started.start_ticks + 1)
    processes.stop(started.pid, "kube-apiserver", grace_seconds=5)  # not ours to stop: left alone
    assert processes.is_running(started.pid)
    processes.stop(started.pid, "time.sleep", start_ticks=started.start_ticks, grace_seconds=5)
    assert not processes.is_running(started.pid)


def test_a_process_whose_main_thread_exited_is_still_ours_and_is_stopped(tmp_path: Path) -> None:
    marker = str(tmp_path)
    started = processes.start([sys.executable, "-c", LEADER_EXITS, marker], tmp_path / "go-like.log")
    deadline = time.monotonic() + 10
    while processes.read_snapshot(started.pid).thread_states[:1] != ("Z",):
        assert time.monotonic() < deadline, "the main thread did not exit"
        time.sleep(0.05)
    assert processes.is_running(started.pid, "pthread_exit", marker)
    processes.stop(started.pid, "pthread_exit", marker, grace_seconds=5)
    assert started.exit_code() is not None
    assert not processes.group_alive(started.pid)


def test_an_exiting_component_is_named_with_its_status_and_log(tmp_path: Path) -> None:
    log = tmp_path / "component.log"
    for word in ("first", "second"):
        started = processes.start(
            [sys.executable, "-c", f"print('{word} run'); raise SystemExit(3)"], log, component="etcd"
        )
        with pytest.raises(processes.ComponentFailed) as caught:
            processes.wait_until(lambda: False, what="etcd", process=started, timeout_seconds=10)
    message = str(caught.value)
    assert message.startswith(f"etcd (pid {started.pid}) exited before it was ready (exit status 3)")
    assert "second run" in message
    assert "first run" not in message
    assert caught.value.component == "etcd"
    assert not isinstance(caught.value, processes.PortInUse)


def test_the_component_that_died_is_blamed_not_the_one_waited_for(tmp_path: Path) -> None:
    dying = processes.start(
        [sys.executable, "-c", "raise SystemExit('keyring unreadable')"],
        tmp_path / "kms.log",
        component="kms-plugin",
    )
    waiting = processes.start(
        [sys.executable, "-c", SLEEPER], tmp_path / "api.log", component="kube-apiserver"
    )
    try:
        with pytest.raises(processes.ComponentFailed) as caught:
            processes.wait_until(
                lambda: False, what="kube-apiserver", process=waiting, timeout_seconds=10, also_watch=[dying]
            )
        assert caught.value.component == "kms-plugin"
        assert "while kube-apiserver was starting (exit status 1)" in str(caught.value)
        assert "keyring unreadable" in str(caught.value)
    finally:
        assert waiting.kill_and_check(grace_seconds=5)


def test_kill_and_check_leaves_nothing_of_the_process_group(tmp_path: Path) -> None:
    # The leader forks a child that keeps running: killing the leader alone would orphan it.
    script = "import os, time\nif os.fork() == 0:\n    time.sleep(60)\nelse:\n    time.sleep(60)\n"
    started = processes.start([sys.executable, "-c", script], tmp_path / "forker.log")
    time.sleep(0.3)
    assert started.kill_and_check(grace_seconds=5)
    assert not processes.group_alive(started.pid)


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
