"""Which stored objects the engine rewrites, and the tally of one pass over a resource. Pure.

"Current" is :class:`storage.write_format.WriteFormat`, learnt by reading a write back
(``format_learning.py``); the same rule decides for ``scan``.
"""

from __future__ import annotations

from dataclasses import dataclass

from kms_storage_migrator.storage.formats import FormatKind, StoredFormat
from kms_storage_migrator.storage.write_format import WriteFormat


def needs_rewrite(stored: StoredFormat, current: WriteFormat) -> bool:
    """Stale and decodable: what a no-op write would store anew, and may be sent.

    An undecodable value is never current, but it is not written either (:func:`is_rewritable`);
    verification reports it.
    """
    return is_rewritable(stored) and not current.is_current(stored)


def is_rewritable(stored: StoredFormat) -> bool:
    """A value we could classify. An undecodable one is reported, not written: the apiserver
    cannot decrypt it either (500 on every try), and its retries would slow the whole run."""
    return stored.kind is not FormatKind.UNKNOWN


@dataclass
class StaleTally:
    """Counts from one pass over a resource's etcd keys."""

    scanned: int = 0
    stale: int = 0
