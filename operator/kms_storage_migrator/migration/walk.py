"""What the driver needs of a walk (Full or Targeted): an estimate, then pages of targets.

A walk owns its checkpoint's meaning (a list position, an etcd key); the driver only commits
what a page says once the page's writes are recorded, so a crash redoes at most that page.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from kms_storage_migrator.migration.progress import ResourceProgress
from kms_storage_migrator.migration.resource_choice import ServedResource
from kms_storage_migrator.migration.rewrite import RewriteTarget
from kms_storage_migrator.migration.unreadable import Unreadable


@dataclass(frozen=True)
class Page:
    targets: Sequence[RewriteTarget]
    last_key: str | None  # the checkpoint once written: resume after this key
    continue_token: str | None = None  # Full: the list page to resume at
    final: bool = False  # the resource is done after this page
    # Targeted: objects of the page already in the current format, counted unchanged at commit.
    # Counted, not skipped silently: after a restart these include what the killed process
    # rewrote after its last checkpoint, and every object must still be counted once.
    current: int = 0
    # Full: stored objects the apiserver cannot decode, stepped past; each is a failure.
    unreadable: Sequence[Unreadable] = ()


class Walk(Protocol):
    # Whether redoing a committed but unpublished page costs writes. Full lists again and writes
    # every object, so each written page is stored at once; Targeted reads etcd again and writes
    # only what is still stale, so its pages go out with the publisher's interval.
    redo_writes: bool

    async def prepare(self, pending: list[tuple[ResourceProgress, ServedResource]]) -> None:
        """Estimate each resource before the first write (and, Targeted, learn its format)."""

    def pages(self, entry: ResourceProgress, served: ServedResource) -> AsyncIterator[Page]:
        """The resource's pages after its checkpoint, in key order."""
        ...
