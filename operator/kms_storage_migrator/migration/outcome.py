"""What one no-op write did to one object. Pure."""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    """The final outcome of rewriting one object."""

    REWRITTEN = "rewritten"  # stored anew: resourceVersion moved
    UNCHANGED = "unchanged"  # already current: the apiserver skipped the write
    CONFLICT = "conflict"  # changed by someone else meanwhile; their write re-encrypted it
    GONE = "gone"  # deleted meanwhile
    REFUSED = "refused"  # 403/422/webhook denial: recorded, never retried
    EXHAUSTED = "exhausted"  # still failing after maxAttemptsPerObject tries


FAILED_OUTCOMES = frozenset({Outcome.REFUSED, Outcome.EXHAUSTED})
