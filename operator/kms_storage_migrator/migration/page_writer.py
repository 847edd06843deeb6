"""One page of targets written: up to ``concurrency`` at once, each outcome recorded once.

Recording is where the per-object rules apply: failures go to status (the first few also as
events), a resource whose first writes are all forbidden is given up as a whole, and the first
successful write of a resource teaches its current write format.

Before a page is written the mutation guard (``migration/mutation_guard.py``) says which of its objects
a mutating webhook may change on our write: with ``spec.mutatingWebhooks: Refuse`` they are not
written (each a ``MutatingWebhook`` failure naming the webhook), with ``Allow`` they are written
and a change seen in the answer is a ``MutatedByWebhook`` failure. Either counts the object once,
as failed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kms_storage_migrator.migration.boundary import MigrationStopped, ResourceAbandoned
from kms_storage_migrator.migration.format_learning import FormatLearner
from kms_storage_migrator.migration.guidance import what_to_do
from kms_storage_migrator.migration.mutation_guard import MUTATED_BY_WEBHOOK, MUTATING_WEBHOOK, MutationGuard
from kms_storage_migrator.migration.outcome import FAILED_OUTCOMES, Outcome
from kms_storage_migrator.migration.progress import MAX_FAILURES, Failure, MigrationProgress, ResourceProgress
from kms_storage_migrator.migration.rewrite import Rewriter, RewriteResult, RewriteTarget
from kms_storage_migrator.migration.status_publisher import (
    FailureList,
    MigrationObserver,
    MigrationSink,
    NoFailureList,
)
from kms_storage_migrator.migration.unreadable import Unreadable
from kms_storage_migrator.migration.verify import object_key
from kms_storage_migrator.storage.formats import FormatKind, StoredFormat
from kms_storage_migrator.storage.keys import EtcdRoot, ResourceIndex

# A resource whose first writes are all forbidden is skipped instead of failing object by object.
FORBIDDEN_STREAK_LIMIT = 10
LEARNABLE = frozenset({Outcome.REWRITTEN, Outcome.UNCHANGED})
UNREADABLE = "StorageReadError"  # the apiserver's reason for a value it cannot decode
# Our reason for a value etcd holds encrypted that the apiserver answers 500 for on every write:
# "StorageError: corrupt object ... not transformable ... no matching prefix found" when its
# provider or key left the EncryptionConfiguration (measured on 1.37.2, see docs/reliability.md).
CANNOT_DECRYPT = "CannotDecrypt"
INTERNAL_ERROR = "InternalError"  # the Status reason of that 500 (kube.py keeps no message for it)
_SHOWN_KEY_ID = 80  # a KMS v2 key id may be 1 KiB; the start of it names the key well enough


@dataclass(frozen=True)
class StoredTarget(RewriteTarget):
    """A target found in etcd (Targeted mode): its key and stored format explain a failure."""

    etcd_key: str = ""
    stored: StoredFormat | None = None


def encrypted_under(stored: StoredFormat) -> str:
    """The provider and key a stored value names in its prefix, for a person to look up."""
    if stored.kind is FormatKind.KMS_V2:
        return f"KMS v2 provider {stored.provider!r}, key id {(stored.key_id or '')[:_SHOWN_KEY_ID]!r}"
    if stored.kind is FormatKind.KMS_V1:
        return f"KMS v1 provider {stored.provider!r}"
    return f"{stored.kind.value} key {stored.key_name!r}"


def cannot_decrypt_message(result: RewriteResult) -> str | None:
    """Why a write failed, when etcd says the value is encrypted and the apiserver kept answering
    500 InternalError for it (it answered other requests: the driver checks before committing)."""
    target = result.target
    if not isinstance(target, StoredTarget) or target.stored is None or not target.stored.is_encrypted:
        return None
    if result.outcome not in FAILED_OUTCOMES or result.reason != INTERNAL_ERROR:
        return None
    answered = result.message or "HTTP 500"
    return (
        f"the apiserver cannot decrypt it ({answered} InternalError on every try): etcd holds it "
        f"under {encrypted_under(target.stored)}, not in the encryption configuration now; add "
        "that key back as a secondary provider and migrate again, or restore or delete the object "
        f"(etcd key {target.etcd_key})"
    )


def mutated(result: RewriteResult, guard: MutationGuard | None) -> RewriteResult:
    """A write admission changed (Allow): a failure naming what changed and the likely webhooks.

    It was written (and re-encrypted), but its content is not what was stored before: counted
    failed, so that a person looks at it, and never used to learn the write format.
    """
    target = result.target
    labels = target.listed.label_map if target.listed is not None else None
    names = (
        [each.webhook.name for each in guard.intercepting(target.resource, target.namespace, labels)]
        if guard is not None
        else []
    )
    by = f"mutating webhook {', '.join(names[:2])}" if names else "admission (a mutating webhook or policy)"
    message = (
        f"changed on the no-op write by {by}: {'; '.join(result.mutations)} "
        "(spec.mutatingWebhooks is Allow; data is not compared)"
    )
    return RewriteResult(
        target,
        Outcome.REFUSED,
        result.attempts,
        new_resource_version=result.new_resource_version,
        reason=MUTATED_BY_WEBHOOK,
        message=message,
        mutations=result.mutations,
    )


@dataclass
class PageResult:
    written: int = 0
    exhausted: int = 0  # objects whose retries ran out: maybe an outage, the driver checks


class PageWriter:
    def __init__(
        self,
        rewriter: Rewriter,
        progress: MigrationProgress,
        sink: MigrationSink,
        observer: MigrationObserver,
        learner: FormatLearner,
        *,
        concurrency: int,
        root: EtcdRoot,
        should_stop: Callable[[], bool],
        failures: FailureList | None = None,
        admission: MutationGuard | None = None,
    ) -> None:
        self._rewriter = rewriter
        self._failures = failures or NoFailureList()  # every failure, beyond the few status keeps
        self._progress = progress
        self._sink = sink
        self._observer = observer
        self._learner = learner
        self._concurrency = concurrency
        self._root = root
        self._should_stop = should_stop
        # None: nothing in the way of writes is looked for (in-memory tests without webhooks).
        self._admission = admission
        self._forbidden_streak: dict[str, int] = {}
        self._unannounced: list[str] = []  # failure events of the page in progress
        self.index: ResourceIndex = {}  # set after discovery: where custom resources are stored

    def check_stop(self) -> None:
        if self._should_stop():
            raise MigrationStopped("stop requested")

    async def write(self, entry: ResourceProgress, targets: Sequence[RewriteTarget]) -> PageResult:
        """Write a page; its failure events wait for :meth:`announce` (the page may be redone)."""
        result = PageResult()
        self._unannounced = []  # a page redone after an outage drops what its first try found
        if not targets:
            return result
        if self._admission is not None:
            await self._admission.prepare(targets[0].resource)
        semaphore = asyncio.Semaphore(self._concurrency)

        async def write_one(target: RewriteTarget) -> None:
            async with semaphore:
                self.check_stop()
                outcome = await self._write(entry, target)
                result.written += 1
                result.exhausted += outcome is Outcome.EXHAUSTED

        try:
            async with asyncio.TaskGroup() as group:
                for target in targets:
                    group.create_task(write_one(target))
        except BaseExceptionGroup as errors:
            raise errors.exceptions[0] from None
        return result

    async def write_one(self, entry: ResourceProgress, target: RewriteTarget) -> Outcome:
        """One object on its own (a format probe), its outcome final at once."""
        self._unannounced = []
        if self._admission is not None:
            await self._admission.prepare(target.resource)
        outcome = await self._write(entry, target)
        await self.announce()
        return outcome

    def walk_restarted(self, entry: ResourceProgress, cause: str) -> None:
        self._observer.walk_restarted(entry.name, cause)

    def record_current(self, entry: ResourceProgress, objects: int) -> None:
        """Objects found already current, so not written: each is an unchanged outcome.

        Counted in one step: a Targeted walk of a cluster with nothing stale passes every key here.
        """
        if objects:
            entry.counts.record(Outcome.UNCHANGED, objects)
            self._observer.outcome(entry.name, Outcome.UNCHANGED, objects)

    def record_unreadable(self, entry: ResourceProgress, objects: Sequence[Unreadable]) -> None:
        """Stored objects the apiserver cannot decode: each a failure, named by its etcd key."""
        for unreadable in objects:
            entry.counts.record(Outcome.REFUSED)
            self._observer.outcome(entry.name, Outcome.REFUSED)
            message = (
                f"the apiserver cannot decode the stored object (etcd key {unreadable.etcd_key}): "
                "restore it from a backup, or delete it"
            )
            self._note_failure(
                Failure(entry.name, unreadable.namespace or "", unreadable.name, UNREADABLE, message)
            )

    async def announce(self) -> None:
        """Send the failure events of the objects written since the last page began."""
        messages, self._unannounced = self._unannounced, []
        for message in messages:
            await self._sink.event("Warning", "ObjectNotRewritten", message)

    async def _write(self, entry: ResourceProgress, target: RewriteTarget) -> Outcome:
        guard = self._admission
        watch = False
        if guard is not None:
            labels = target.listed.label_map if target.listed is not None else None
            refusal = guard.refusal(target.resource, target.namespace, labels)
            if refusal is not None:
                # Not written at all: no admission call, so nothing a webhook could change.
                refused = RewriteResult(target, Outcome.REFUSED, 0, reason=MUTATING_WEBHOOK, message=refusal)
                await self._record(entry, refused)
                return refused.outcome
            # Allow: compare the answer of a write a webhook may change, when there is a listed
            # reference to compare with (Full mode); other writes keep the answer without metadata.
            watch = target.listed is not None and bool(
                guard.intercepting(target.resource, target.namespace, labels)
            )
        rewritten = await self._rewriter.rewrite(target, watch=watch)
        if rewritten.mutations:
            rewritten = mutated(rewritten, guard)
        await self._record(entry, rewritten)
        return rewritten.outcome

    async def _record(self, entry: ResourceProgress, result: RewriteResult) -> None:
        entry.counts.record(result.outcome)
        entry.counts.retries += max(result.attempts - 1, 0)  # 0 attempts: refused before writing
        self._observer.outcome(entry.name, result.outcome)
        if result.outcome in FAILED_OUTCOMES:
            await self._record_failure(entry, result)
            return
        self._forbidden_streak[entry.name] = -1  # one success: the resource is writable
        if result.outcome in LEARNABLE and self._learner.wants(entry):
            target = result.target
            key = object_key(target.resource, self.index, target.namespace, target.name, root=self._root)
            await self._learner.learn_from(entry, key)

    def _note_failure(self, failure: Failure) -> None:
        """Into status (bounded); the first few also as events once the page is final."""
        first_few = self._progress.failures_total < MAX_FAILURES
        self._progress.record_failure(failure)
        self._failures.add(failure)
        if first_few:
            where = f"{failure.namespace}/{failure.name}" if failure.namespace else failure.name
            what = f"{failure.resource} {where}: {failure.reason}: {failure.message}"[:400]
            advice = what_to_do(failure.reason, failure.message, failure.resource)
            self._unannounced.append(f"{what}; what to do: {advice}")

    async def _record_failure(self, entry: ResourceProgress, result: RewriteResult) -> None:
        target = result.target
        reason = result.reason or result.outcome.value
        message = result.message
        undecryptable = cannot_decrypt_message(result)
        if undecryptable is not None:
            reason, message = CANNOT_DECRYPT, undecryptable
        self._note_failure(Failure(entry.name, target.namespace or "", target.name, reason, message))
        streak = self._forbidden_streak.get(entry.name, 0)
        if result.reason == "Forbidden" and streak >= 0:
            self._forbidden_streak[entry.name] = streak + 1
            if streak + 1 >= FORBIDDEN_STREAK_LIMIT:
                raise ResourceAbandoned(f"every write is forbidden ({result.message})")
