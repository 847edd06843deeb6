"""The benchmark's memory figure is the contender's own, not the benchmark's carried over."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from peak_rss import descendants, high_water_kib
from production_scale import spawn, wait_child

MIB = 1024 * 1024
# The child stays a second after its peak: a sampler that polls every 0.1 s must see it alive
# (exiting at once, it fell between two samples on a loaded machine, and read 2 MB).
TOUCH = "[b.__setitem__(i, 1) for i in range(0, len(b), 4096)]"
CHILD = "import time; b = bytearray({size}); " + TOUCH + "; time.sleep(1)"


def test_a_child_reports_its_own_peak_not_its_parents() -> None:
    # wait4's ru_maxrss reported the spawning process's high-water mark for every child.
    ballast = bytearray(250 * MIB)
    for at in range(0, len(ballast), 4096):
        ballast[at] = 1
    process, memory = spawn([sys.executable, "-c", CHILD.format(size=40 * MIB)])
    _, rss_mb = wait_child(process, memory)
    assert process.returncode == 0
    assert 40 <= rss_mb < 150, f"{rss_mb:.0f} MB: not the child's 40 MB plus an interpreter"


def test_descendants_are_found_and_a_vanished_process_counts_zero(tmp_path: Path) -> None:
    for pid, children in ((10, "11 12"), (11, "13"), (12, ""), (13, "")):
        task = tmp_path / str(pid) / "task" / str(pid)
        task.mkdir(parents=True)
        (task / "children").write_text(children)
        (tmp_path / str(pid) / "status").write_text(f"Name:\tx\nVmHWM:\t  {pid * 100} kB\n")
    assert sorted(descendants(10, tmp_path)) == [10, 11, 12, 13]
    assert high_water_kib(13, tmp_path) == 1300
    assert high_water_kib(99, tmp_path) == 0


def test_a_pipeline_is_sampled_below_its_shell() -> None:
    command = f"{sys.executable} -c '{CHILD.format(size=60 * MIB)}; import time; time.sleep(0.5)' | cat"
    process, memory = spawn(["bash", "-c", command], stdout=subprocess.DEVNULL)
    _, rss_mb = wait_child(process, memory)
    assert rss_mb >= 60  # the python stage, not bash's few MB
