"""A :class:`MigrationView` as rich renderables (pure: builds objects, prints nothing).

Every string that comes from the cluster goes into a :class:`rich.text.Text`, never through
console markup, so a message containing ``[bold]`` is shown as written.
"""

from __future__ import annotations

import datetime
import io
import json
from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from kms_storage_migrator.migration.failure_configmap import list_selector
from kms_storage_migrator.migration.failure_ledger import LIST_KEY
from kms_storage_migrator.migration.guidance import advice_lines
from kms_storage_migrator.statusview.model import COUNT_FIELDS, MigrationView, ResourceRow

__all__ = ["render", "render_text", "summary_line"]

PHASE_STYLES = {
    "Succeeded": "bold green",
    "Failed": "bold red",
    "Pending": "yellow",
    "WaitingForKey": "yellow",
    "Suspended": "bold yellow",
}
# Conditions worth a colour when they hold this status: something a person should look at.
CONDITION_ALERTS = {
    ("Degraded", "True"): "red",
    ("KeyConverged", "False"): "yellow",
    ("PreviousKeysInUse", "True"): "yellow",
    ("Suspended", "True"): "yellow",
    ("PreflightPassed", "False"): "red",
}
# What a condition means, for the ones whose type alone does not say it.
CONDITION_MEANINGS = {
    ("KeyConverged", "False"): "not every apiserver writes with the KMS's current key yet",
    ("KeyConverged", "True"): "every apiserver writes with the KMS's current key",
    ("PreviousKeysInUse", "True"): "objects are still stored under an older KMS key",
    ("PreviousKeysInUse", "False"): "only the current key holds selected objects",
    ("Suspended", "True"): "paused by spec.suspend",
    ("PreflightPassed", "False"): "a check before the first write failed",
}
PREFLIGHT_STYLES = {"ok": "green", "warn": "yellow", "fail": "red"}
RESOURCE_PHASE_STYLES = {"Done": "green", "Failed": "red", "Migrating": "cyan", "Pending": "dim"}
BAR_WIDTH = 12
UNBOUNDED = 10_000
RESOURCE_NAME_WIDTH = 48  # longer group/resource names fold onto a second line
ESSENTIAL_COUNTS = ("rewritten", "failed")  # shown even when zero, and even on a narrow terminal
MAX_EXTRA_VALUE = 120  # an unknown field's value is shown, but not a page of it
MAX_DROPPED_NAMES = 12


def render(view: MigrationView, now: datetime.datetime | None = None) -> RenderableType:
    """Header, per-resource table, failures, preflight, verification and conditions, in that order."""
    parts: list[RenderableType] = [_header(view, now)]
    if view.resources:
        parts.append(_ResourceTable(view))
    elif view.phase is None:
        parts.append(Text("No status yet: is the operator running?", style="yellow"))
    if view.failures or view.failures_total:
        parts.append(_failures(view))
    if any(finding.verdict != "ok" for finding in view.preflight):
        parts.append(_preflight(view))
    if view.verification is not None:
        parts.append(_verification(view))
    if view.dropped:
        parts.append(_dropped(view))
    if view.conditions:
        parts.append(_conditions(view))
    return Group(*parts)


def render_text(view: MigrationView, *, width: int = 120, now: datetime.datetime | None = None) -> str:
    """The view as plain text (no colours), as a script or a test would read it."""
    console = Console(file=io.StringIO(), width=width, color_system=None, record=True)
    console.print(render(view, now))
    return console.export_text()


def summary_line(view: MigrationView) -> str:
    """One line for a log or a pipe: name, phase, progress, objects done, failures."""
    totals = view.totals or _sum_rows(view.resources)
    done = sum(totals.get(name, 0) for name in COUNT_FIELDS)
    parts = [view.name, view.phase or "no phase yet"]
    if view.progress:
        parts.append(view.progress)
    total = totals.get("objectsTotal")
    parts.append(f"{done}/{total} objects" if total is not None else f"{done} objects")
    failed = view.failures_total if view.failures_total is not None else totals.get("failed", 0)
    parts.append(f"{failed} failed")
    if view.rate is not None:
        parts.append(view.rate)
    if view.eta:
        parts.append(f"eta {view.eta}")
    return "  ".join(parts)


def _header(view: MigrationView, now: datetime.datetime | None) -> RenderableType:
    title = Text.assemble(
        ("StorageMigration ", "bold"),
        (view.name, "bold"),
        "  ",
        (view.phase or "no phase yet", PHASE_STYLES.get(view.phase or "", "bold cyan")),
    )
    if view.progress:
        title.append(f"  {view.progress}")
    lines: list[RenderableType] = [title]
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="dim")
    facts.add_column()
    mode = view.mode or "not resolved yet"
    if view.spec_mode and view.spec_mode != view.mode:
        mode += f" (spec: {view.spec_mode})"
    facts.add_row("mode", Text(mode))
    facts.add_row("target key", Text(view.key_id or "not known yet"))
    formats = _distinct_write_formats(view)
    if len(formats) == 1:
        facts.add_row("write format", Text(f"{formats[0]} (the same for every resource)"))
    if view.start_time:
        facts.add_row("started", Text(_when(view.start_time, now)))
    if view.completion_time:
        finished = _when(view.completion_time, None)
        took = _duration_between(view.start_time, view.completion_time)
        facts.add_row("finished", Text(f"{finished} (took {took})" if took else finished))
    if view.suspended_phase:
        facts.add_row("resumes in", Text(f"phase {view.suspended_phase} (set spec.suspend to false)"))
    if view.rate is not None:
        facts.add_row("rate", Text(f"{view.rate} (objects, over the last minute)"))
    if view.eta:
        facts.add_row("eta", Text(view.eta))
    if view.message:
        facts.add_row("message", Text(view.message))
    for key, value in sorted(view.extra.items()):
        facts.add_row(key, Text(_short(value)))
    lines.append(facts)
    return Group(*lines)


class _ResourceTable:
    """The per-resource table, shaped to the width it gets: the bars go first when narrow."""

    def __init__(self, view: MigrationView) -> None:
        self.view = view

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        # rich squeezes a table that is too wide until whole columns vanish: choose what to
        # leave out instead, the bars first, then the rarer counts.
        shapes = [(True, False), (False, False), (False, True)]
        for with_bars, essential_only in shapes:
            table = _resource_table(self.view, with_bars=with_bars, essential_only=essential_only)
            # Measured unbounded: a measurement within the width is capped at the width.
            natural = Measurement.get(console, options.update(max_width=UNBOUNDED), table).maximum
            if natural <= options.max_width:
                break
        yield table
        empty = sum(1 for row in self.view.resources if _is_empty_and_done(row))
        if empty:
            yield Text(f"and {empty} resource type(s) with no objects, done", style="dim")


def _resource_table(view: MigrationView, *, with_bars: bool, essential_only: bool) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_footer=True, expand=False, pad_edge=False)
    # The engine's totals when it wrote them, else the sum of the rows.
    totals = view.totals or _sum_rows(view.resources)
    done_total = sum(totals.get(name, 0) for name in COUNT_FIELDS)
    objects_total = totals.get("objectsTotal")
    # Numbers never wrap and long resource names only fold: nothing is cut to "…".
    longest = max((len(row.name) for row in view.resources), default=8)
    table.add_column(
        "RESOURCE",
        footer="TOTAL",
        overflow="fold",
        min_width=min(longest, 24),
        max_width=RESOURCE_NAME_WIDTH,
    )
    table.add_column("PHASE", no_wrap=True, min_width=9)
    if with_bars:
        table.add_column("PROGRESS", no_wrap=True, footer=_bar(done_total, objects_total))
    table.add_column("DONE/TOTAL", justify="right", no_wrap=True, footer=_fraction(done_total, objects_total))
    # Count columns nobody has are left out.
    counts = [name for name in _shown_counts(view) if not essential_only or name in ESSENTIAL_COUNTS]
    for header in counts:
        footer = _number(totals.get(header))
        table.add_column(header.upper(), justify="right", no_wrap=True, min_width=len(header), footer=footer)
    formats = _distinct_write_formats(view)
    if len(formats) > 1:
        table.add_column("WRITE FORMAT", overflow="fold")
    for row in _listed_rows(view.resources):
        cells: list[RenderableType] = [
            Text(row.name),
            Text(row.phase or "?", style=RESOURCE_PHASE_STYLES.get(row.phase or "", "")),
        ]
        if with_bars:
            cells.append(_bar(row.done, _total_of(row)))
        cells.append(_fraction(row.done, _total_of(row)))
        cells += [_number(row.retries if name == "retries" else row.counts.get(name)) for name in counts]
        if len(formats) > 1:
            cells.append(Text(row.write_format or ""))
        table.add_row(*cells)
    return table


def _is_empty_and_done(row: ResourceRow) -> bool:
    return row.phase == "Done" and not row.total and not row.done and not row.message


def _listed_rows(rows: list[ResourceRow]) -> list[ResourceRow]:
    """The rows worth a line: a finished resource that had no objects is only counted."""
    return [row for row in rows if not _is_empty_and_done(row)]


def _sum_rows(rows: list[ResourceRow]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for row in rows:
        for name in (*COUNT_FIELDS, "retries"):
            value = row.retries if name == "retries" else row.counts.get(name)
            if value is not None:
                totals[name] = totals.get(name, 0) + value
        if row.total is not None:
            totals["objectsTotal"] = totals.get("objectsTotal", 0) + (_total_of(row) or 0)
    return totals


def _shown_counts(view: MigrationView) -> list[str]:
    """Rewritten and failed always; the other counts only when some resource has one."""
    shown = []
    for name in (*COUNT_FIELDS, "retries"):
        values = [view.totals.get(name)]
        values += [row.retries if name == "retries" else row.counts.get(name) for row in view.resources]
        if name in ESSENTIAL_COUNTS or any(values):
            shown.append(name)
    return shown


def _distinct_write_formats(view: MigrationView) -> list[str]:
    return sorted({row.write_format for row in view.resources if row.write_format})


def _failures(view: MigrationView) -> RenderableType:
    total = view.failures_total if view.failures_total is not None else len(view.failures)
    title = f"Failures: {total}"
    if total > len(view.failures):
        title += f" (the first {len(view.failures)} shown)"
    table = Table(title=title, title_justify="left", title_style="bold red")
    for column in ("RESOURCE", "OBJECT", "REASON", "MESSAGE"):
        table.add_column(column)
    for failure in view.failures:
        table.add_row(
            Text(failure.resource), Text(failure.object_name), Text(failure.reason), Text(failure.message)
        )
    if not view.failures:
        return Text(title, style="bold red")
    advice = advice_lines((f.reason, f.message, f.resource) for f in view.failures)
    steps = [Text("What to do:", style="bold")] + [Text(f"  {line}") for line in advice]
    if total > len(view.failures):
        steps.append(Text(f"Every failed object (names only): {full_list_command(view.name)}"))
    return Group(table, *steps)


def full_list_command(migration: str) -> str:
    # The operator writes the list in its own namespace, which this machine need not know.
    key = LIST_KEY.replace(".", "\\.")  # a dot in a jsonpath key is escaped
    return (
        f"kubectl get configmap -A -l {list_selector(migration)} -o jsonpath='{{.items[0].data.{key}}}' "
        "(or the operator's log, when it runs outside a pod)"
    )


def _preflight(view: MigrationView) -> RenderableType:
    """The warnings and failures of the checks before the first write (passes are not news)."""
    shown = [finding for finding in view.preflight if finding.verdict != "ok"]
    table = Table(title=f"Preflight: {len(shown)} finding(s)", title_justify="left", title_style="bold")
    for column in ("CHECK", "RESULT", "MESSAGE"):
        table.add_column(column)
    for finding in shown:
        style = PREFLIGHT_STYLES.get(finding.verdict, "")
        table.add_row(Text(finding.check), Text(finding.verdict.upper(), style=style), Text(finding.message))
    return table


def _verification(view: MigrationView) -> RenderableType:
    verification = view.verification
    assert verification is not None
    result = verification.result or "?"
    style = {"Verified": "green", "StaleFound": "red"}.get(result, "yellow")
    line = Text.assemble(("Verification: ", "bold"), (result, style))
    if verification.scanned is not None:
        line.append(f", {verification.scanned} keys read back from etcd")
    if verification.stale is not None:
        line.append(f", {verification.stale} stale")
    lines: list[RenderableType] = [line]
    if verification.examples:
        lines.append(Text("  still stale: " + ", ".join(verification.examples)))
    if verification.message:
        lines.append(Text("  " + verification.message))
    if verification.keys_in_use:
        keys = ", ".join(f"{key} ({objects} objects)" for key, objects in verification.keys_in_use)
        lines.append(Text("  KMS keys holding selected objects: " + keys))
    return Group(*lines)


def _dropped(view: MigrationView) -> Text:
    names = [name for name, _ in view.dropped]
    shown = ", ".join(names[:MAX_DROPPED_NAMES])
    more = f", and {len(names) - MAX_DROPPED_NAMES} more" if len(names) > MAX_DROPPED_NAMES else ""
    return Text(f"Not migrated: {len(names)} resource type(s): {shown}{more}", style="dim")


def _conditions(view: MigrationView) -> RenderableType:
    table = Table.grid(padding=(0, 2))
    for _ in range(3):
        table.add_column()
    for condition in view.conditions:
        state = (condition.type, condition.status)
        meaning = CONDITION_MEANINGS.get(state)
        message = condition.message or ""
        if meaning and meaning not in message:
            message = f"{meaning}: {message}" if message else meaning
        table.add_row(
            Text(f"{condition.type}={condition.status}", style=CONDITION_ALERTS.get(state, "")),
            Text(condition.reason or ""),
            Text(message),
        )
    return Group(Text("Conditions", style="bold"), table)


def _total_of(row: ResourceRow) -> int | None:
    # An estimate can trail reality (objects created meanwhile): never below what is done.
    return max(row.total, row.done) if row.total is not None else None


def _bar(done: int, total: int | None) -> RenderableType:
    if not total:
        return Text("")
    return ProgressBar(total=total, completed=min(done, total), width=BAR_WIDTH)


def _fraction(done: int, total: int | None) -> Text:
    return Text(f"{done}/{total}" if total is not None else str(done))


def _number(value: int | None) -> Text:
    return Text("" if value is None else str(value))


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= MAX_EXTRA_VALUE else text[: MAX_EXTRA_VALUE - 1] + "…"


def _parse_time(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def _when(text: str, now: datetime.datetime | None) -> str:
    moment = _parse_time(text)
    if moment is None or now is None:
        return text
    return f"{text} ({_duration(now - moment)} ago)"


def _duration_between(start: str | None, end: str | None) -> str | None:
    first, last = _parse_time(start), _parse_time(end)
    if first is None or last is None:
        return None
    return _duration(last - first)


def _duration(delta: datetime.timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{seconds:02d}s"
    return f"{seconds}s"
