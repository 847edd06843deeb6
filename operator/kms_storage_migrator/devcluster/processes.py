"""Starting, watching and stopping the dev cluster's background processes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from kms_storage_migrator.errors import UserError

LOG_TAIL_LINES = 25
START_MARKER = "==> kms-storage-migrator dev-cluster started"


class PortInUse(UserError):
    """A component could not bind its port: another process took it first."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def ensure_port_free(port: int, owner: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as error:
            raise UserError(
                f"port 127.0.0.1:{port} for {owner} is already in use ({error.strerror}); "
                "stop whatever listens there or choose another port"
            ) from error


def wait_for_port_release(port: int, *, timeout_seconds: float) -> None:
    """Return once 127.0.0.1:``port`` can be bound again, or after ``timeout_seconds``."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            # The same option Go's listeners set, so a TIME_WAIT remnant does not count as taken.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                time.sleep(0.2)
                continue
            return
    raise PortInUse(f"port 127.0.0.1:{port} is still in use {timeout_seconds:.0f}s after its owner stopped")


def start(command: Sequence[str], log_path: Path, *, environment: dict[str, str] | None = None) -> int:
    """Start ``command`` detached from this process (it outlives the CLI); return its PID."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        # A marker per start, so an error report shows this run's lines, not an earlier one's.
        log.write(f"{START_MARKER} {time.strftime('%Y-%m-%dT%H:%M:%S')}: {' '.join(command)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=environment,
        )
    return process.pid


def is_running(pid: int | None, *expected: str) -> bool:
    """Whether ``pid`` is alive and its command line holds every ``expected`` string.

    PIDs are reused (pid_max is often 32768), so a recorded PID is only ours while its command
    line still says so; callers pass strings no other process has, such as their own directory.
    """
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    _reap(pid)
    try:
        # Alive while any thread is: a Go program's main thread can be a zombie (Z) while its
        # other threads still shut down and hold its ports. Our own children stay zombies
        # until reaped, so a zombie leader alone does not mean alive.
        if not any(_thread_state(task) not in ("Z", "X") for task in Path(f"/proc/{pid}/task").iterdir()):
            return False
        if expected:
            command_line = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            return all(part.encode() in command_line for part in expected)
    except (OSError, IndexError):
        return False
    return True


def _thread_state(task: Path) -> str:
    try:
        return (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "X"


def stop(pid: int | None, *expected: str, grace_seconds: float = 20.0) -> None:
    """SIGTERM, then SIGKILL after ``grace_seconds``; returns once the process is gone.

    Does nothing unless ``pid`` still runs a command line holding every ``expected`` string.
    """
    if not expected:
        raise ValueError("stop() needs strings that identify the process, or it could kill a reused PID")
    if not is_running(pid, *expected):
        return
    assert pid is not None
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        if not is_running(pid):
            return
        time.sleep(0.1)
    _signal_group(pid, signal.SIGKILL)
    for _ in range(100):
        if not is_running(pid):
            return
        time.sleep(0.05)


def _signal_group(pid: int, signum: signal.Signals) -> None:
    # Each component runs in its own session, so its whole process group goes with it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def log_tail(log_path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines the latest start of a component wrote to its log."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    latest_run = text.rsplit(START_MARKER, 1)[-1].splitlines()[1:]
    return "\n".join(latest_run[-lines:]) or "(the process wrote nothing)"


def wait_until(
    ready: Callable[[], bool],
    *,
    what: str,
    pid: int,
    program: Sequence[str],
    log_path: Path,
    timeout_seconds: float,
) -> None:
    """Poll ``ready`` every 100 ms; fail early with the log's tail if the process dies."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if ready():
            return
        if not is_running(pid, *program):
            tail = log_tail(log_path)
            error = PortInUse if "address already in use" in tail else UserError
            raise error(f"{what} exited before it was ready; last lines of {log_path}:\n{tail}")
        time.sleep(0.1)
    raise UserError(
        f"{what} was not ready within {timeout_seconds:.0f}s; last lines of {log_path}:\n{log_tail(log_path)}"
    )
