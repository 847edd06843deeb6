"""Render an :class:`Inventory` as a table or as the documented JSON (schema in docs/inventory.md)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kms_storage_migrator.inventory.counts import Inventory, ResourceCounts
from kms_storage_migrator.storage.keys import GroupResource
from kms_storage_migrator.storage.write_format import WriteFormat

__all__ = ["SCHEMA_VERSION", "print_table", "summary_line", "to_json"]

SCHEMA_VERSION = 1


def _counts_json(counts: ResourceCounts, *, with_stale: bool) -> dict[str, Any]:
    return {
        "total": counts.total,
        "plaintext": counts.plaintext,
        "kmsv2": dict(sorted(counts.kmsv2.items())),
        "other": counts.other,
        "unknown": counts.unknown,
        "not_rewritable": counts.not_rewritable,
        "stale": counts.stale if with_stale else None,
    }


def _expectation_json(expectation: WriteFormat | None) -> dict[str, Any] | None:
    if expectation is None:
        return None
    expected = expectation.expected
    return {
        "format": expected.kind.value,
        "provider": expected.provider,
        "key_id": expected.key_id,
        "key_name": expected.key_name,
        "dek_source_type": expected.dek_source_type,
        "source": expectation.source,
    }


def to_json(inventory: Inventory) -> dict[str, Any]:
    with_stale = inventory.expectation is not None
    return {
        "schema_version": SCHEMA_VERSION,
        "revision": inventory.revision,
        "expected": _expectation_json(inventory.expectation),
        "resources": [
            {"group": row.group, "resource": row.resource, **_counts_json(row, with_stale=with_stale)}
            for row in inventory.rows()
        ],
        "summary": _counts_json(inventory.summary, with_stale=with_stale),
    }


def _key_ids(kmsv2: dict[str, int]) -> str:
    return ", ".join(f"{key_id}: {count}" for key_id, count in sorted(kmsv2.items())) or "-"


def summary_line(inventory: Inventory) -> str:
    total = inventory.summary
    line = (
        f"{total.total} objects in {len(inventory.resources)} resources at revision {inventory.revision}: "
        f"{total.plaintext} plaintext, {sum(total.kmsv2.values())} KMS v2 ({_key_ids(total.kmsv2)}), "
        f"{total.other} other providers, {total.unknown} unknown, {total.not_rewritable} not rewritable"
    )
    if inventory.expectation is None:
        return line + "; stale not assessed (give --expect-key-id or --kubeconfig)"
    expected = inventory.expectation.expected
    return (
        line + f"; {total.stale} stale (expected {expected.describe()}, from {inventory.expectation.source})"
    )


def print_table(inventory: Inventory, console: Console) -> None:
    with_stale = inventory.expectation is not None
    rows = inventory.rows()
    names = [str(GroupResource(row.group, row.resource)) for row in rows]
    table = Table(box=None, pad_edge=False, header_style="bold")
    # On a narrow terminal long names fold onto a second line rather than being cut short.
    table.add_column("RESOURCE", overflow="fold")
    for title in ("TOTAL", "PLAIN"):
        table.add_column(title, justify="right")
    table.add_column("KMS V2 BY KEY ID", overflow="fold")
    # NO API: keys no API serves (allocator state, endpoint leases, orphaned custom resources).
    for title in ("OTHER", "UNKNOWN", "NO API", "STALE"):
        table.add_column(title, justify="right")
    for name, row in zip(names, rows, strict=True):
        table.add_row(
            escape(name),
            str(row.total),
            str(row.plaintext),
            escape(_key_ids(row.kmsv2)),
            str(row.other),
            str(row.unknown),
            str(row.not_rewritable),
            str(row.stale) if with_stale else "-",
        )
    console.print(table)
    console.print(summary_line(inventory), markup=False, highlight=False, soft_wrap=True)
