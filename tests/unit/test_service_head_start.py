"""The start delay of a never-started migration: kept only when another one may want the slot."""

from __future__ import annotations

from typing import Any, cast

from kms_storage_migrator.kube import KubeApi, TransportError
from kms_storage_migrator.migration.plan import RunDefaults
from kms_storage_migrator.migration.service import OperatorContext, _others_unfinished


class ListingApi:
    def __init__(self, items: list[dict[str, Any]] | None) -> None:
        self.items = items
        self.paths: list[str] = []

    async def get_json(self, path: str) -> dict[str, Any]:
        self.paths.append(path)
        if self.items is None:
            raise TransportError("connection refused")
        return {"items": self.items}


def _migration(name: str, phase: str | None) -> dict[str, Any]:
    item: dict[str, Any] = {"metadata": {"name": name}}
    if phase is not None:
        item["status"] = {"phase": phase, "startTime": "2026-12-01T10:00:00Z"}
    return item


def _context(api: ListingApi) -> OperatorContext:
    return OperatorContext(api=cast(KubeApi, api), defaults=RunDefaults())


async def test_alone_or_beside_finished_ones_it_starts_at_once() -> None:
    api = ListingApi([_migration("new", None), _migration("old", "Succeeded"), _migration("bad", "Failed")])
    assert await _others_unfinished(_context(api), "new") is False
    assert api.paths == ["/apis/kms-storage-migrator.io/v1alpha1/storagemigrations"]


async def test_an_interrupted_or_pending_other_keeps_the_head_start() -> None:
    interrupted = ListingApi([_migration("new", None), _migration("old", "Migrating")])
    assert await _others_unfinished(_context(interrupted), "new") is True
    suspended = ListingApi([_migration("new", None), _migration("old", "Suspended")])
    assert await _others_unfinished(_context(suspended), "new") is True
    never_started = ListingApi([_migration("new", None), _migration("other", None)])
    assert await _others_unfinished(_context(never_started), "new") is True


async def test_an_unreadable_list_keeps_the_head_start() -> None:
    assert await _others_unfinished(_context(ListingApi(None)), "new") is True
