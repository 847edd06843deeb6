"""Suspending a migration with ``spec.suspend``: the signal, and what status and events say. Pure.

A suspended migration stops at a page boundary (its checkpoint is the page just committed), so
resuming redoes nothing and counts every object once. The phase it had reached is kept in the
progress; status shows ``Suspended`` with that phase beside it, so a restarted operator knows
where to resume.
"""

from __future__ import annotations

SUSPENDED = "Suspended"
RESUMED = "Resumed"


class MigrationSuspended(Exception):
    """``spec.suspend`` is true: leave at this boundary, after the last committed page."""


def resume_hint(name: str) -> str:
    return f'kubectl patch storagemigration {name} --type=merge -p \'{{"spec":{{"suspend":false}}}}\''


def suspended_message(name: str, phase: str, done: int, total: int) -> str:
    """What a suspended migration's status and event say: where it stopped, how to resume."""
    where = (
        "before it started" if phase == "Pending" else f"in phase {phase}, {done} of ~{total} objects done"
    )
    return (
        f"suspended by spec.suspend {where}; checkpoint kept, nothing is written until resumed. "
        f"To resume, set spec.suspend to false: {resume_hint(name)}"
    )


def resumed_message(phase: str) -> str:
    return f"resumed (spec.suspend is false): continuing in phase {phase} from the checkpoint"
