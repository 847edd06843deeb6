"""Which status documents are worth publishing: a visible change, or a checkpoint that saves writes. Pure.

Every publish is a watch event, and ``kubectl get sm -w`` prints a row for each: a run over
many small resource types used to print the same row dozens of times (per-resource phases and
checkpoints changed, nothing shown did). A document is published when what people see changes
(the printer columns, the message, the conditions), when the committed checkpoint moved past
objects rewritten since the last publish (a crash would otherwise write them again), and
otherwise at most every heartbeat, so per-resource progress and checkpoints still land.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

HEARTBEAT_SECONDS = 30.0


def visible_part(document: Mapping[str, Any]) -> tuple[Any, ...]:
    """What ``kubectl get sm`` (default and wide, but the rate) and ``describe`` show at a glance."""
    totals = document.get("totals") or {}
    verification = document.get("verification") or {}
    conditions = tuple(
        (c.get("type"), c.get("status"), c.get("reason")) for c in document.get("conditions") or []
    )
    return (
        document.get("phase"),
        document.get("progress"),
        totals.get("rewritten"),
        totals.get("failed"),
        verification.get("stale"),
        document.get("eta"),
        document.get("mode"),
        document.get("keyId"),
        document.get("message"),
        conditions,
    )


def committed_rewrites(document: Mapping[str, Any]) -> int:
    """Objects rewritten up to the checkpoints: what a resumed run would not write again."""
    total = 0
    for resource in document.get("resources") or []:
        # A finished resource has no checkpoint: all its counts are committed.
        counts = (resource["checkpoint"].get("counts") or {}) if "checkpoint" in resource else resource
        total += int(counts.get("rewritten") or 0)
    return total


def worth_publishing(
    previous: Mapping[str, Any] | None, current: Mapping[str, Any], seconds_since_previous: float
) -> bool:
    """Publish ``current`` given the last document published ``seconds_since_previous`` ago."""
    if previous is None:
        return True
    if visible_part(current) != visible_part(previous):
        return True
    if committed_rewrites(current) != committed_rewrites(previous):
        return True
    if current == previous:
        return False
    return seconds_since_previous >= HEARTBEAT_SECONDS
