"""The production-scale benchmark's results: the record of one run, the table and the chart.

Pure apart from reading JSON and drawing the PNG, so the ratios can be checked by unit tests and
the table redrawn from saved results without running anything again:

    .venv/bin/python benchmarks/scale_report.py benchmarks/results/production-scale-*.json \\
        --chart docs/production-scale.png
"""

from __future__ import annotations

import argparse
import json
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

CEILING = "ceiling"
# A bare `kms-storage-migrator scan` of the same etcd: the reference of the nothing-stale scenario,
# where no contender has anything to write and time, not objects/s, is what compares.
SCAN = "scan"
# `etcdctl get --prefix` of the same keys: what the etcd read path (scan, verification) is judged by.
ETCDCTL = "etcdctl-get"
# The tools a user would otherwise run: every contender of ours is compared with each of them.
PEERS = ("in-tree-svm", "kubectl-replace")


@dataclass
class Run:
    """One contender on one scenario. ``stale_*`` are etcd_truth's counts, not the contender's."""

    scenario: str
    contender: str
    objects: int
    stale_before: int
    stale_after: int
    seconds: float
    objects_per_second: float
    api_requests: float
    api_writes: float
    etcd_puts: float
    apiserver_cpu_seconds: float
    migrator_cpu_seconds: float
    migrator_peak_rss_mb: float
    # The machine's 1-minute load average over the run (lowest, highest): it is shared, and
    # its load moves the figures more than most changes do. 0 in results from before it was kept.
    load_low: float = 0.0
    load_high: float = 0.0

    @property
    def ok(self) -> bool:
        """A run that left anything stale failed, whatever the contender itself reported."""
        return self.stale_after == 0

    def per_stale_object(self, count: float) -> float:
        return count / self.stale_before if self.stale_before else 0.0

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Run:
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING}
        missing = sorted(required - document.keys())
        if missing:
            raise ValueError(f"a result lacks {', '.join(missing)}: is it a production_scale.py result?")
        return cls(**{name: document[name] for name in names if name in document})


def load_runs(paths: list[Path]) -> list[Run]:
    runs = []
    for path in paths:
        runs += [Run.from_json(document) for document in json.loads(path.read_text())]
    return runs


def speed_ratio(run: Run, reference: Run | None) -> float | None:
    """Objects/s as a fraction of the reference's on the same scenario; None when undefined."""
    if reference is None or not reference.objects_per_second or not reference.ok:
        return None
    return run.objects_per_second / reference.objects_per_second


def time_ratio(run: Run, reference: Run | None) -> float | None:
    """Wall time as a multiple of the reference's (nothing-stale: against the bare scan)."""
    if reference is None or not reference.seconds:
        return None
    return run.seconds / reference.seconds


def _ratio_cell(ratio: float | None) -> str:
    return "" if ratio is None else f"{ratio:.2f}x"


def scenario_table(runs: list[Run]) -> str:
    """One markdown table per scenario (in first-seen order), each run with its ratios."""
    lines: list[str] = []
    for scenario in dict.fromkeys(r.scenario for r in runs):
        rows = [r for r in runs if r.scenario == scenario]
        by_name = {r.contender: r for r in rows}
        peers = [p for p in PEERS if p in by_name]
        first = rows[0]
        lines.append(
            f"**{scenario}**: {first.objects:,} seeded objects, {first.stale_before:,} stale before "
            "(etcd read by etcd_truth.py)"
        )
        lines.append("")
        scan = by_name.get(SCAN)
        if scan is not None:
            lines += _time_table(rows, scan)
            continue
        header = ["contender", "s", "stale obj/s", "x ceiling", *(f"x {p}" for p in peers)]
        header += ["API req / stale obj", "API writes / stale obj", "etcd puts / stale obj"]
        header += ["apiserver CPU s", "migrator CPU s", "migrator / apiserver CPU", "peak RSS MB", "load"]
        header.append("verdict")
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|---|" + "---:|" * (len(header) - 2) + "---|")
        for r in rows:
            cpu_share = r.migrator_cpu_seconds / r.apiserver_cpu_seconds if r.apiserver_cpu_seconds else 0.0
            verdict = "0 stale" if r.ok else f"FAILED: {r.stale_after:,} stale"
            cells = [r.contender, f"{r.seconds:.1f}", f"{r.objects_per_second:.1f}"]
            cells.append(_ratio_cell(speed_ratio(r, by_name.get(CEILING))))
            cells += [_ratio_cell(speed_ratio(r, by_name[p])) for p in peers]
            cells += [f"{r.per_stale_object(n):.2f}" for n in (r.api_requests, r.api_writes, r.etcd_puts)]
            cells += [f"{r.apiserver_cpu_seconds:.1f}", f"{r.migrator_cpu_seconds:.1f}", f"{cpu_share:.2f}"]
            cells += [f"{r.migrator_peak_rss_mb:.0f}", _load_cell(r), verdict]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _time_table(rows: list[Run], scan: Run) -> list[str]:
    """Nothing to rewrite: each contender's wall time against the bare scan's."""
    header = ["contender", "s", "x scan time", "API requests", "API writes", "etcd puts"]
    header += ["apiserver CPU s", "migrator CPU s", "peak RSS MB", "load", "verdict"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 2) + "---|"]
    for r in rows:
        verdict = "0 stale" if r.ok else f"FAILED: {r.stale_after:,} stale"
        cells = [r.contender, f"{r.seconds:.1f}", _ratio_cell(time_ratio(r, scan))]
        cells += [f"{n:.0f}" for n in (r.api_requests, r.api_writes, r.etcd_puts)]
        cells += [f"{r.apiserver_cpu_seconds:.1f}", f"{r.migrator_cpu_seconds:.1f}"]
        cells += [f"{r.migrator_peak_rss_mb:.0f}", _load_cell(r), verdict]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _load_cell(run: Run) -> str:
    return f"{run.load_low:.1f}-{run.load_high:.1f}" if run.load_high else ""


def draw_chart(runs: list[Run], path: Path, memory_runs: list[Run] | None = None) -> None:
    """Objects/s per contender per scenario, and peak RSS against the number of objects.

    ``memory_runs``: where the RSS panel's points come from, if not ``runs`` (results measured
    before peak_rss.py carry the benchmark's own high-water mark, not the contender's).
    """
    import matplotlib  # noqa: PLC0415 (the `bench` extra; only for --chart)

    matplotlib.use("Agg")
    from matplotlib import pyplot  # noqa: PLC0415

    scenarios = list(dict.fromkeys(r.scenario for r in runs))
    largest = max(r.objects for r in runs)
    figure, axes = pyplot.subplots(1, len(scenarios) + 1, figsize=(5.5 * (len(scenarios) + 1), 4.5))
    for axis, scenario in zip(axes, scenarios, strict=False):
        rows = [r for r in runs if r.scenario == scenario and r.objects == largest]
        colours = ["tab:grey" if r.contender in (CEILING, SCAN, ETCDCTL) else "tab:blue" for r in rows]
        # The load each ran under, in the label: it moves the bars more than most changes do,
        # and it tells apart two runs of one contender.
        labels = [
            f"{r.contender} (load {r.load_low:.0f}-{r.load_high:.0f})" if r.load_high else r.contender
            for r in rows
        ]
        if any(r.contender == SCAN for r in rows):  # nothing to rewrite: time is the figure
            axis.barh(labels, [r.seconds for r in rows], color=colours)
            axis.set_title(f"{scenario}, {largest:,} objects: seconds (less is better)")
        else:
            axis.barh(labels, [r.objects_per_second for r in rows], color=colours)
            axis.set_title(f"{scenario}, {largest:,} objects: stale objects/s")
        axis.invert_yaxis()
    memory = axes[-1]
    memory_runs = runs if memory_runs is None else memory_runs
    for contender in dict.fromkeys(r.contender for r in memory_runs):
        points = sorted(
            {(r.objects, r.migrator_peak_rss_mb) for r in memory_runs if r.contender == contender}
        )
        memory.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=contender)
    memory.set_title("migrator peak RSS (MB) against objects")
    memory.set_xlabel("seeded objects")
    memory.set_ylim(bottom=0)
    memory.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", type=Path, help="production_scale.py results JSON files")
    parser.add_argument("--chart", type=Path, help="write a PNG chart here (needs the `bench` extra)")
    parser.add_argument("--memory-from", nargs="+", type=Path, help="results for the chart's RSS panel")
    args = parser.parse_args()
    runs = load_runs(args.results)
    print(scenario_table(runs))
    if args.chart:
        draw_chart(runs, args.chart, load_runs(args.memory_from) if args.memory_from else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
