"""Peak resident memory of a child process and its descendants, from their own ``VmHWM``.

Not ``wait4``'s ``ru_maxrss``: Linux carries the spawning process's high-water mark into the
child across fork and exec, so every child of the benchmark (which holds etcd dumps of its
own) reported the benchmark's ~200 MB instead of its own figure. ``VmHWM`` belongs to the
address space the program got at exec, so it is the program's alone.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

PROC = Path("/proc")


def high_water_kib(pid: int, proc: Path = PROC) -> int:
    """``VmHWM`` in KiB; 0 for a process that is gone or already a zombie (no address space)."""
    try:
        status = (proc / str(pid) / "status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def descendants(pid: int, proc: Path = PROC) -> Iterator[int]:
    """The process and everything below it, from each thread's ``children`` list."""
    pending = [pid]
    while pending:
        current = pending.pop()
        yield current
        try:
            tasks = list((proc / str(current) / "task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                pending += [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                continue


class PeakRss:
    """Samples from a thread until :meth:`stop`; the peak of any one process, in MB.

    The largest single process, not the sum: a pipeline's stages are reported one by one. A
    process whose life falls between two samples is missed, so ``interval`` is short.
    """

    def __init__(self, pid: int, interval: float = 0.1, proc: Path = PROC) -> None:
        self._pid = pid
        self._interval = interval
        self._proc = proc
        self._peak_kib = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while True:
            for pid in descendants(self._pid, self._proc):
                self._peak_kib = max(self._peak_kib, high_water_kib(pid, self._proc))
            if self._done.wait(self._interval):
                return

    def stop(self) -> float:
        self._done.set()
        self._thread.join()
        return self._peak_kib / 1024
