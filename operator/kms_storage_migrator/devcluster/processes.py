"""Starting, watching and stopping the dev cluster's background processes.

Two ways to know a process, and each is used where it is reliable:

- A process this program started is a ``Started`` handle: its exit is what ``waitpid`` says
  (the kernel keeps a child's PID until its parent reaps it, so it cannot be reused behind
  our back, and signalling it is always safe).
- A PID recorded in ``state.json`` by another invocation is judged from ``/proc``
  (``read_snapshot`` + the pure ``judge``): it is ours only while its start time matches the
  one recorded and its command line names what it should.

Reading ``/proc/PID/cmdline`` alone was wrong twice: it is empty for a few milliseconds after
``fork``+``exec`` returns to the parent (the kernel maps the new program's arguments after it
closes the close-on-exec pipe Popen waits on; measured here: 86 of 300 reads right after
starting a static Go binary were empty), and it is empty for a process whose main thread has
exited while other threads still run (how a Go program shuts down). Both were taken for "not
running", which made ``up`` report a starting kube-apiserver as exited and leave it orphaned.
"""

from __future__ import annotations

import contextlib
import enum
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kms_storage_migrator.errors import UserError

LOG_TAIL_LINES = 25
START_MARKER = "==> kms-storage-migrator dev-cluster started"
# How long a process may show no arguments while exec loads its program before we stop waiting.
LOADING_GRACE_SECONDS = 3.0
_DEAD_THREAD_STATES = ("Z", "X")


class PortInUse(UserError):
    """A component could not bind its port: another process took it first."""


class ComponentFailed(UserError):
    """A component exited or did not get ready; the message names it and shows its log."""

    def __init__(self, component: str, message: str) -> None:
        super().__init__(message)
        self.component = component


class PortLost(ComponentFailed, PortInUse):
    """A component exited because another process bound its port first (worth a retry)."""


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


# --- judging a PID from /proc ----------------------------------------------------------------


class Liveness(enum.Enum):
    RUNNING = "running"  # alive and the program we expect
    LOADING = "loading"  # alive, but exec has not mapped its arguments yet: ask again shortly
    GONE = "gone"  # no such process, or only dead threads left
    OTHER = "other"  # alive, but another program: the PID was reused


@dataclass(frozen=True)
class ProcessSnapshot:
    """What ``/proc`` showed of one PID at one moment."""

    exists: bool
    thread_states: tuple[str, ...] = ()
    command_line: bytes = b""  # arguments joined by spaces, read through a live thread
    start_ticks: int | None = None  # field 22 of /proc/PID/stat: start time since boot


def judge(snapshot: ProcessSnapshot, expected: Sequence[str], start_ticks: int | None = None) -> Liveness:
    """Whether a snapshot shows the process we expect (pure).

    ``start_ticks`` is the start time recorded when we launched it: a PID with another start
    time is a reused one, whatever its command line says. An empty command line on a live
    process is not a verdict: exec has not mapped the new program's arguments yet.
    """
    if not snapshot.exists or all(state in _DEAD_THREAD_STATES for state in snapshot.thread_states):
        return Liveness.GONE
    if start_ticks is not None and snapshot.start_ticks is not None and snapshot.start_ticks != start_ticks:
        return Liveness.OTHER
    if not expected:
        return Liveness.RUNNING
    if not snapshot.command_line:
        return Liveness.LOADING
    if all(part.encode() in snapshot.command_line for part in expected):
        return Liveness.RUNNING
    return Liveness.OTHER


def read_snapshot(pid: int) -> ProcessSnapshot:
    """The state of ``pid`` from /proc (reaping it first if it is our own exited child)."""
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return ProcessSnapshot(exists=False)
    except PermissionError:
        pass
    proc = Path(f"/proc/{pid}")
    try:
        tasks = sorted(proc.joinpath("task").iterdir(), key=lambda task: task.name)
    except OSError:
        return ProcessSnapshot(exists=False)
    states = tuple((_stat_fields(task) or ["X"])[0] for task in tasks)
    command_line = b""
    # Through a live thread: the main thread's cmdline is empty once it alone has exited.
    for task, state in zip(tasks, states, strict=True):
        if state not in _DEAD_THREAD_STATES:
            with contextlib.suppress(OSError):
                command_line = task.joinpath("cmdline").read_bytes().rstrip(b"\0").replace(b"\0", b" ")
            if command_line:
                break
    fields = _stat_fields(proc)
    start = int(fields[19]) if len(fields) > 19 else None
    return ProcessSnapshot(exists=True, thread_states=states, command_line=command_line, start_ticks=start)


def start_ticks_of(pid: int) -> int | None:
    """The start time of ``pid`` (clock ticks since boot), to recognise it later."""
    fields = _stat_fields(Path(f"/proc/{pid}"))
    return int(fields[19]) if len(fields) > 19 else None


def _stat_fields(directory: Path) -> list[str]:
    """Fields 3.. of a stat file (after the parenthesised command name, which may hold spaces)."""
    try:
        return directory.joinpath("stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def is_running(
    pid: int | None,
    *expected: str,
    start_ticks: int | None = None,
    loading_grace_seconds: float = LOADING_GRACE_SECONDS,
) -> bool:
    """Whether ``pid`` is alive and is the process we expect.

    ``expected`` strings must all be in its command line (PIDs are reused: pid_max is often
    32768), ``start_ticks`` must match when given. A process caught while exec loads its
    program is asked again for up to ``loading_grace_seconds``.
    """
    if not pid:
        return False
    deadline = time.monotonic() + loading_grace_seconds
    while True:
        verdict = judge(read_snapshot(pid), expected, start_ticks)
        if verdict is not Liveness.LOADING:
            return verdict is Liveness.RUNNING
        if time.monotonic() >= deadline:
            # Still no arguments: ours only if the recorded start time says so.
            return start_ticks is not None
        time.sleep(0.02)


def stop(
    pid: int | None, *expected: str, start_ticks: int | None = None, grace_seconds: float = 20.0
) -> None:
    """SIGTERM, then SIGKILL after ``grace_seconds``; returns once the process is gone.

    Does nothing unless ``pid`` still runs a command line holding every ``expected`` string
    (and, when given, started at ``start_ticks``).
    """
    if not expected:
        raise ValueError("stop() needs strings that identify the process, or it could kill a reused PID")
    if not is_running(pid, *expected, start_ticks=start_ticks):
        return
    assert pid is not None
    _terminate(pid, lambda: judge(read_snapshot(pid), ()) is Liveness.GONE, grace_seconds)


def _terminate(pid: int, gone: Callable[[], bool], grace_seconds: float) -> None:
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        if gone():
            return
        time.sleep(0.1)
    _signal_group(pid, signal.SIGKILL)
    for _ in range(100):
        if gone():
            return
        time.sleep(0.05)


def _signal_group(pid: int, signum: signal.Signals) -> None:
    # Each component runs in its own session, so its whole process group goes with it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def group_alive(pgid: int) -> bool:
    """Whether any process is left in process group ``pgid`` (zombies count until reaped)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


# --- processes this program started ------------------------------------------------------------


@dataclass
class Started:
    """A component this program launched: its exit is known from waitpid, never guessed."""

    component: str
    pid: int
    start_ticks: int | None
    popen: subprocess.Popen[bytes]
    log_path: Path

    def exit_code(self) -> int | None:
        """The exit status once it has exited (negative: killed by that signal), else None."""
        return self.popen.poll()

    def kill_and_check(self, grace_seconds: float = 10.0) -> bool:
        """Stop it and everything in its process group; True once nothing of it is left."""
        if self.exit_code() is None:
            _terminate(self.pid, lambda: self.exit_code() is not None, grace_seconds)
        # The leader may be gone while a child it forked still holds the group (and a port).
        if group_alive(self.pid):
            _signal_group(self.pid, signal.SIGKILL)
            for _ in range(100):
                if not group_alive(self.pid):
                    break
                time.sleep(0.05)
        return self.exit_code() is not None and not group_alive(self.pid)


def start(
    command: Sequence[str],
    log_path: Path,
    *,
    component: str = "",
    environment: dict[str, str] | None = None,
) -> Started:
    """Start ``command`` detached from this process (it outlives the CLI), logging to ``log_path``."""
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
    # The start time exists from fork on, unlike the arguments (see the module docstring).
    name = component or Path(command[0]).name
    return Started(name, process.pid, start_ticks_of(process.pid), process, log_path)


def log_tail(log_path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines the latest start of a component wrote to its log."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    latest_run = text.rsplit(START_MARKER, 1)[-1].splitlines()[1:]
    return "\n".join(latest_run[-lines:]) or "(the process wrote nothing)"


def exit_description(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit status {code}"


def first_exited(processes: Sequence[Started]) -> tuple[Started, int] | None:
    """The first of ``processes`` that has exited, with its exit status (pure over poll())."""
    for process in processes:
        code = process.exit_code()
        if code is not None:
            return process, code
    return None


def wait_until(
    ready: Callable[[], bool],
    *,
    what: str,
    process: Started,
    timeout_seconds: float,
    also_watch: Sequence[Started] = (),
) -> None:
    """Poll ``ready`` every 100 ms; fail early, naming the component, if one that it needs dies.

    ``also_watch`` are the components started before it: when one of those exits, it is the
    one that failed, and the error says so rather than blaming the one being waited for.
    """
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if ready():
            return
        exited = first_exited([*also_watch, process])
        if exited is not None:
            failed, code = exited
            tail = log_tail(failed.log_path)
            error = PortLost if "address already in use" in tail else ComponentFailed
            context = "before it was ready" if failed is process else f"while {what} was starting"
            raise error(
                failed.component,
                f"{failed.component} (pid {failed.pid}) exited {context} ({exit_description(code)}); "
                f"last lines of {failed.log_path}:\n{tail}",
            )
        time.sleep(0.1)
    raise ComponentFailed(
        process.component,
        f"{what} was not ready within {timeout_seconds:.0f}s; last lines of {process.log_path}:\n"
        f"{log_tail(process.log_path)}",
    )
