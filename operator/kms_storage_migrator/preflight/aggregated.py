"""Preflight: the aggregated APIs the migration leaves out, and why. Pure.

An aggregated API server (metrics-server, a vendor's own apiserver) keeps its objects in its
own storage, under its own encryption settings, not in this apiserver's etcd; discovery leaves
its resources out. Preflight names them, so that nobody takes their absence from the migration
for an oversight, and says where their encryption is decided instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from kms_storage_migrator.preflight.findings import Finding, Verdict

CHECK = "aggregated APIs"
MAX_NAMED = 8  # a status note is short; the status's `dropped` list names every one


def judge_aggregated(left_out: Sequence[tuple[str, str]]) -> Finding | None:
    """``left_out``: (resource, reason) of each resource served elsewhere; None when there is none.

    Always a pass: their objects are not in this etcd, so nothing here can migrate them or be
    stopped by them, whether their server answers or not.
    """
    if not left_out:
        return None
    by_reason: dict[str, list[str]] = {}
    for name, reason in left_out:
        by_reason.setdefault(reason, []).append(name)
    listed = "; ".join(f"{_named(names)} ({reason})" for reason, names in sorted(by_reason.items()))
    return Finding(
        CHECK,
        Verdict.OK,
        f"{len(left_out)} left out, their objects are not stored in this apiserver's etcd: {listed}",
        "nothing for this migration: each aggregated API server stores its objects itself and "
        "decides their encryption; see that server's documentation",
    )


def _named(names: Sequence[str]) -> str:
    shown = ", ".join(sorted(names)[:MAX_NAMED])
    return shown if len(names) <= MAX_NAMED else f"{shown} and {len(names) - MAX_NAMED} more"
