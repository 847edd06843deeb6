"""The operator's side of a migration: one at a time, status in the CR, events on the CR.

Kept free of kopf so handlers.py stays a list of thin handlers: everything here takes plain
values (name, uid, spec, status) and a stop predicate, and says "run me again later" with the
domain exception :class:`RunAgainLater` (handlers.py maps it to kopf's retry).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kms_storage_migrator.kube import MERGE_PATCH, ApiError, KubeApi, TransportError
from kms_storage_migrator.migration.boundary import MigrationStopped, RunAgainLater
from kms_storage_migrator.migration.failure_configmap import FailureConfigMap, operator_namespace
from kms_storage_migrator.migration.key_gate import ApiserverKeyGate
from kms_storage_migrator.migration.metrics import OperatorMetrics
from kms_storage_migrator.migration.plan import MigrationSpec, PlanError, RunDefaults
from kms_storage_migrator.migration.progress import (
    TERMINAL_PHASES,
    MigrationProgress,
    Phase,
    from_status,
    to_status,
)
from kms_storage_migrator.migration.runner import MigrationRunner
from kms_storage_migrator.migration.status_publisher import MigrationSink, utc_now
from kms_storage_migrator.migration.suspension import (
    RESUMED,
    SUSPENDED,
    MigrationSuspended,
    resumed_message,
    suspended_message,
)
from kms_storage_migrator.storage.etcd import EtcdConfig, EtcdReader
from kms_storage_migrator.storage.keys import DEFAULT_ROOT, EtcdRoot, etcd_prefix

__all__ = ["GROUP", "PLURAL", "VERSION", "OperatorContext", "RunAgainLater", "cr_key", "run_migration"]

log = logging.getLogger(__name__)

GROUP = "kms-storage-migrator.io"
VERSION = "v1alpha1"
PLURAL = "storagemigrations"
KIND = "StorageMigration"
COMPONENT = "kms-storage-migrator"
# Cluster-scoped objects have no namespace; their events go where kubectl looks for them.
EVENT_NAMESPACE = "default"
# A migration that never started waits this long when kopf has just started (and spawned every
# daemon at once), so an interrupted one (which already holds progress) takes the single slot
# first. One created while the operator runs starts at once, and so does one with no other
# unfinished StorageMigration beside it: there is nothing to give a head start to.
NEW_MIGRATION_HEAD_START = 3.0
# How often a suspended migration looks at spec.suspend (kopf keeps the spec live) and its stop flag.
SUSPENDED_POLL_SECONDS = 0.5


@dataclass
class OperatorContext:
    """What every migration shares: one API client, one etcd reader, one slot, the metrics."""

    api: KubeApi
    defaults: RunDefaults
    etcd_config: EtcdConfig | None = None
    etcd: EtcdReader | None = None
    metrics: OperatorMetrics | None = None
    etcd_prefix: EtcdRoot = DEFAULT_ROOT  # the apiserver's --etcd-prefix: where its keys are in etcd
    slot: asyncio.Lock = field(default_factory=asyncio.Lock)
    running: str | None = None
    kopf_started: float = field(default_factory=time.monotonic)  # set again at each kopf start

    def just_started(self) -> bool:
        return time.monotonic() - self.kopf_started < NEW_MIGRATION_HEAD_START


def status_path(name: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/{PLURAL}/{name}/status"


def cr_key(name: str, root: EtcdRoot = DEFAULT_ROOT) -> str:
    """The etcd key of a StorageMigration: its own status writes show the current write format."""
    return etcd_prefix(GROUP, PLURAL, {(GROUP, PLURAL): False}, root=root) + name


class CustomResourceSink:
    """Publishes the status document to the CR's /status and records events on the CR."""

    def __init__(self, api: KubeApi, name: str, uid: str) -> None:
        self._api = api
        self._name = name
        self._uid = uid
        self._host = socket.gethostname()

    async def publish(self, status: dict[str, Any]) -> None:
        try:
            await self._api.patch(status_path(self._name), {"status": status}, content_type=MERGE_PATCH)
        except ApiError as error:
            if error.status == 404:
                raise MigrationStopped(f"StorageMigration {self._name} no longer exists") from error
            raise

    async def event(self, kind: str, reason: str, message: str) -> None:
        now = utc_now().replace("Z", ".000000Z")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{self._name}.", "namespace": EVENT_NAMESPACE},
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": KIND,
                "name": self._name,
                "uid": self._uid,
            },
            "type": kind,
            "reason": reason,
            "message": message[:1000],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self._host,
            "firstTimestamp": utc_now(),
            "lastTimestamp": utc_now(),
            "eventTime": now,
            "action": reason,
            "count": 1,
        }
        try:
            await self._api.create_event(EVENT_NAMESPACE, event)
        except (ApiError, TransportError) as error:
            # Events are a courtesy: a refused event must never stop a migration.
            log.warning("cannot record event %s on %s: %s", reason, self._name, error)


async def run_migration(
    context: OperatorContext,
    *,
    name: str,
    uid: str,
    spec: Mapping[str, Any],
    status: Mapping[str, Any] | None,
    generation: int | None,
    should_stop: Callable[[], bool],
    created_at: str | None = None,
    is_suspended: Callable[[], bool] = lambda: False,
) -> None:
    """Run (or resume) one StorageMigration until it finishes or is asked to stop.

    ``is_suspended`` reads the live ``spec.suspend``: a suspended migration leaves the slot at a
    page boundary and waits here, holding only its checkpoint, until it is resumed or deleted.
    Raises :class:`RunAgainLater` when the final status could not be stored: the migration
    resumes from its last stored checkpoint when run again.
    """
    sink = CustomResourceSink(context.api, name, uid)
    progress = from_status(status)
    if progress.phase in TERMINAL_PHASES:
        return
    try:
        migration_spec = MigrationSpec.from_spec(spec, context.defaults)
    except PlanError as error:
        await _finish_invalid(sink, progress, str(error))
        return
    try:
        while True:
            if is_suspended() and not await _hold(sink, progress, name, is_suspended, should_stop):
                return  # deleted (or the operator exits) while suspended
            if progress.suspended:
                await _resume(sink, progress)
            if (
                progress.start_time is None
                and context.just_started()
                and await _others_unfinished(context, name)
            ):
                await asyncio.sleep(NEW_MIGRATION_HEAD_START)
            if context.slot.locked():
                await _wait_pending(sink, progress, context.running)
            async with context.slot:
                suspended = await _run_once(
                    context,
                    progress,
                    name=name,
                    uid=uid,
                    spec=migration_spec,
                    sink=sink,
                    should_stop=should_stop,
                    is_suspended=is_suspended,
                    generation=generation,
                    created_at=created_at,
                )
            if not suspended:
                return
    except MigrationStopped as reason:
        log.info("migration %s stopped: %s", name, reason)


async def _others_unfinished(context: OperatorContext, name: str) -> bool:
    """Whether a StorageMigration other than ``name`` is not finished yet (so might be interrupted).

    When the list cannot be read, the answer is yes: the head start is then kept, as before.
    """
    try:
        listed = await context.api.get_json(f"/apis/{GROUP}/{VERSION}/{PLURAL}")
    except (ApiError, TransportError) as error:
        log.info("cannot list StorageMigrations (%s): keeping the start delay", error)
        return True
    for item in listed.get("items") or []:
        other = str((item.get("metadata") or {}).get("name") or "")
        if other != name and from_status(item.get("status")).phase not in TERMINAL_PHASES:
            return True
    return False


async def _run_once(
    context: OperatorContext,
    progress: MigrationProgress,
    *,
    name: str,
    uid: str,
    spec: MigrationSpec,
    sink: MigrationSink,
    should_stop: Callable[[], bool],
    is_suspended: Callable[[], bool],
    generation: int | None,
    created_at: str | None,
) -> bool:
    """One run holding the slot; True when it left because it was suspended (run it again later)."""
    context.running = name
    try:
        runner = MigrationRunner(
            context.api,
            spec,
            progress,
            sink,
            etcd=context.etcd,
            observer=context.metrics.for_migration(name) if context.metrics else None,
            cr_key=cr_key(name, context.etcd_prefix),
            should_stop=should_stop,
            should_suspend=is_suspended,
            generation=generation,
            etcd_prefix=context.etcd_prefix,
            gate=ApiserverKeyGate(context.api),
            created_at=_timestamp(created_at),
            failures=FailureConfigMap(
                context.api,
                migration=name,
                uid=uid,
                namespace=operator_namespace(),
                api_version=f"{GROUP}/{VERSION}",
                kind=KIND,
            ),
        )
        await runner.run()
        return False
    except MigrationSuspended:
        return True
    finally:
        context.running = None


async def _hold(
    sink: MigrationSink,
    progress: MigrationProgress,
    name: str,
    is_suspended: Callable[[], bool],
    should_stop: Callable[[], bool],
) -> bool:
    """Show Suspended and wait while spec.suspend holds; False when stopped meanwhile."""
    if not progress.suspended:
        totals = progress.totals()
        progress.suspended = True
        progress.rate = progress.eta = None
        progress.message = suspended_message(
            name, progress.phase.value, totals.counts.done, totals.objects_total
        )
        await _publish(sink, progress)
        await sink.event("Normal", SUSPENDED, progress.message)
    while is_suspended():
        if should_stop():
            return False
        await asyncio.sleep(SUSPENDED_POLL_SECONDS)
    return True


async def _resume(sink: MigrationSink, progress: MigrationProgress) -> None:
    """Leave Suspended: the run that follows publishes its own progress from the checkpoint."""
    progress.suspended = False
    progress.message = resumed_message(progress.phase.value)
    await _publish(sink, progress)
    await sink.event("Normal", RESUMED, progress.message)


async def _publish(sink: MigrationSink, progress: MigrationProgress) -> None:
    """Best effort: a lost Suspended/Resumed status is shown again by the next publish."""
    try:
        await sink.publish(to_status(progress, utc_now()))
    except (ApiError, TransportError) as error:
        log.warning("status update failed: %s", error)


def _timestamp(text: str | None) -> datetime.datetime | None:
    """The apiserver's RFC 3339 stamp (creationTimestamp), or None when absent or unreadable."""
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


async def _wait_pending(sink: MigrationSink, progress: MigrationProgress, running: str | None) -> None:
    waiting = f"waiting for StorageMigration {running or 'another'} to finish: one migration runs at a time"
    if progress.phase is Phase.PENDING:
        progress.message = waiting
    else:
        # An interrupted migration keeps its phase: the phase says where to resume (a Pending
        # one would scan and send canaries again, and count them twice).
        progress.message = f"interrupted in phase {progress.phase.value}; {waiting}"
    await sink.publish(to_status(progress, utc_now()))
    await sink.event("Normal", "Pending", progress.message)


async def _finish_invalid(sink: MigrationSink, progress: MigrationProgress, message: str) -> None:
    progress.phase = Phase.FAILED
    progress.message = message
    progress.completion_time = utc_now()
    await sink.event("Warning", "InvalidSpec", message)
    await sink.publish(to_status(progress, utc_now()))
