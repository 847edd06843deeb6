"""Only status documents that show something new are published (each is a `kubectl get -w` row)."""

from __future__ import annotations

import copy
from typing import Any

from kms_storage_migrator.migration.progress import (
    MigrationProgress,
    Phase,
    ResourcePhase,
    ResourceProgress,
    to_status,
)
from kms_storage_migrator.migration.publish_policy import HEARTBEAT_SECONDS, worth_publishing
from kms_storage_migrator.migration.status_publisher import NullObserver, StatusPublisher

NOW = "2026-12-01T13:00:00Z"


def _document(**changes: Any) -> dict[str, Any]:
    progress = MigrationProgress(phase=Phase.MIGRATING, message="rewriting objects")
    entry = ResourceProgress("", "v1", "configmaps", estimate=100)
    entry.counts.rewritten = 40
    entry.commit(continue_token="t1")
    progress.resources = [entry, ResourceProgress("", "v1", "secrets")]
    document = to_status(progress, NOW)
    document.update(changes)
    return document


def test_the_first_document_is_published() -> None:
    assert worth_publishing(None, _document(), 0.0)


def test_an_identical_document_is_never_published_again() -> None:
    assert not worth_publishing(_document(), _document(), HEARTBEAT_SECONDS * 10)


def test_a_change_in_a_printed_column_or_the_message_is_published_at_once() -> None:
    previous = _document()
    assert worth_publishing(previous, _document(progress="41%"), 0.0)
    assert worth_publishing(previous, _document(eta="3m10s"), 0.0)
    assert worth_publishing(previous, _document(message="resuming"), 0.0)


def test_a_hidden_change_waits_for_the_heartbeat() -> None:
    previous = _document()
    current = copy.deepcopy(previous)
    current["resources"][1]["phase"] = "Migrating"  # a resource starts: nothing printed changes
    current["rate"] = 12.5  # wide output only
    assert not worth_publishing(previous, current, HEARTBEAT_SECONDS - 1)
    assert worth_publishing(previous, current, HEARTBEAT_SECONDS)


def test_a_checkpoint_past_new_rewrites_is_published_at_once() -> None:
    """The ticker may already have shown the counts; the checkpoint is what a crash resumes from."""
    previous = _document()
    current = copy.deepcopy(previous)
    current["resources"][0]["checkpoint"]["counts"]["rewritten"] = 60
    current["resources"][0]["checkpoint"]["continue"] = "t2"
    assert worth_publishing(previous, current, 0.0)


class CountingSink:
    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []

    async def publish(self, status: dict[str, Any]) -> None:
        self.published.append(status)

    async def event(self, kind: str, reason: str, message: str) -> None:
        return None


async def test_page_end_publishes_that_change_nothing_shown_are_held_back() -> None:
    """The demo's repeated `kubectl get sm -w` rows: one publish per resource, nothing visible new."""
    progress = MigrationProgress(phase=Phase.MIGRATING, message="rewriting objects")
    progress.resources = [ResourceProgress("", "v1", f"empty{i}") for i in range(5)]
    sink = CountingSink()
    publisher = StatusPublisher(progress, sink, NullObserver(), interval=0.0)
    for entry in progress.resources:
        entry.phase = ResourcePhase.DONE  # an empty resource finished: no printed column moves
        await publisher.publish(force=True)
    assert len(sink.published) == 1
    progress.resources[0].estimate = 10
    progress.resources[0].counts.rewritten = 5  # REWRITTEN and PROGRESS move: shown at once
    await publisher.publish(force=True)
    assert len(sink.published) == 2
