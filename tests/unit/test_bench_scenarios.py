"""Which contenders the production-scale benchmark runs per scenario, and the nothing-stale table."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from production_scale import CONTENDERS, LARGE_OBJECTS, NOTHING_STALE, applies, default_contenders
from scale_report import ETCDCTL, SCAN, Run, scenario_table, time_ratio


def test_below_the_large_size_every_contender_runs_and_the_scan_only_in_nothing_stale() -> None:
    every = default_contenders("all-stale", LARGE_OBJECTS - 1)
    assert SCAN not in every
    assert ETCDCTL not in every
    assert "ours-full-default" in every
    assert "in-tree-svm" in every
    assert not [c for c in every if c.endswith("-baseline")]  # only on request, with --baseline
    assert SCAN in default_contenders(NOTHING_STALE, 1000)
    assert ETCDCTL in default_contenders(NOTHING_STALE, 1000)  # the read path's reference


def test_at_large_sizes_what_takes_n_over_50_seconds_is_left_out() -> None:
    for scenario in ("all-stale", "ten-percent", NOTHING_STALE):
        chosen = default_contenders(scenario, 50_000)
        assert "ours-full-default" not in chosen
        assert "ours-targeted-default" not in chosen
        assert set(chosen) <= set(CONTENDERS)
        assert all(applies(scenario, c) for c in chosen)
    assert "kubectl-replace" in default_contenders("all-stale", 50_000)  # the fastest peer stays
    assert "ceiling" in default_contenders("all-stale", 50_000)
    assert default_contenders(NOTHING_STALE, 50_000) == [SCAN, ETCDCTL, "ours-targeted-fast"]


def test_nothing_stale_takes_only_readers_of_etcd_and_the_scan_nowhere_else() -> None:
    assert applies(NOTHING_STALE, "ours-targeted-fast")
    assert not applies(NOTHING_STALE, "ceiling")
    assert not applies(NOTHING_STALE, "ours-full-fast")
    assert not applies("all-stale", SCAN)
    assert not applies("all-stale", ETCDCTL)


def _run(contender: str, seconds: float) -> Run:
    return Run(NOTHING_STALE, contender, 50_000, 0, 0, seconds, 0.0, 40, 3, 5, 2.0, 1.0, 70.0, 1.5, 4.0)


def test_nothing_stale_compares_wall_time_with_the_bare_scan() -> None:
    scan, targeted = _run(SCAN, 2.0), _run("ours-targeted-fast", 7.0)
    assert time_ratio(targeted, scan) == 3.5
    assert time_ratio(targeted, None) is None
    table = scenario_table([scan, targeted])
    assert "x scan time" in table
    assert "| ours-targeted-fast | 7.0 | 3.50x |" in table
    assert "1.5-4.0" in table  # the load average over the run
