"""The ``--auto-migrate`` loop: every poll, observe the cluster and carry out ``decision.decide``.

One check: the gate's look at the apiservers (identity Leases and /metrics, passive: no
/readyz nudge), the list of StorageMigrations, and at start, with etcd access, one scan of
etcd. A created migration is an ordinary StorageMigration the operator's daemon then runs, gate
included. RBAC beyond the operator's: ``create`` on storagemigrations.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

from kms_storage_migrator.auto_migrate.decision import (
    Create,
    Decision,
    ExistingMigration,
    NothingToDo,
    Observation,
    StartScan,
    Wait,
    combined_key,
    decide,
    stale_under_other_keys,
)
from kms_storage_migrator.convergence.gate import Converged, NoMetricsAccess
from kms_storage_migrator.convergence.scrape import assess_once
from kms_storage_migrator.errors import UserError
from kms_storage_migrator.inventory.scan import crd_index_from_etcd, scan_inventory
from kms_storage_migrator.kube import ApiCredentials, ApiError, KubeApi, TransportError
from kms_storage_migrator.migration.service import GROUP, PLURAL, VERSION, CustomResourceSink
from kms_storage_migrator.storage.etcd import EtcdConfig, EtcdReader
from kms_storage_migrator.storage.keys import DEFAULT_ROOT, EtcdRoot

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_SECONDS: Final = 30.0
COLLECTION_PATH: Final = f"/apis/{GROUP}/{VERSION}/{PLURAL}"
CREATED_EVENT: Final = "AutomaticMigrationCreated"

StartScanner = Callable[[str], Awaitable[StartScan]]
KeyObserver = Callable[[], Awaitable[str | None]]


@dataclass
class AutoMigrator:
    """State across checks: the last converged key seen and whether the start scan is due."""

    api: KubeApi
    converged_key: KeyObserver
    scan_etcd: StartScanner | None = None  # None: no etcd access, act on key changes only
    last_seen_key: str | None = None
    start_scan_due: bool = True
    _last_said: str = field(default="", repr=False)

    async def check(self) -> Decision:
        """One observation and its decision, carried out."""
        migrations = await self._migrations()
        # While a migration runs nothing is created: no need to scrape every apiserver's
        # /metrics (megabytes each), and a scan would be stale before it could be acted on.
        idle = all(migration.finished for migration in migrations)
        key = await self.converged_key() if idle else None
        scan = None
        if self.start_scan_due and self.scan_etcd is not None and key is not None:
            scan = await self.scan_etcd(key)
        decision = decide(Observation(key, migrations, scan), self.last_seen_key)
        if isinstance(decision, Create):
            await self._create(decision)
        if not isinstance(decision, Wait):
            self.last_seen_key = key
            self.start_scan_due = False
        self._say(decision)
        return decision

    async def _migrations(self) -> list[ExistingMigration]:
        reply = await self.api.request("GET", COLLECTION_PATH)
        return [ExistingMigration.from_object(item) for item in reply.body.get("items") or []]

    async def _create(self, decision: Create) -> None:
        try:
            reply = await self.api.request("POST", COLLECTION_PATH, body=decision.manifest())
        except ApiError as error:
            if error.status == 409:  # another replica, or an earlier run, created it first
                log.info("auto-migrate: %s exists already", decision.name)
                return
            if error.status == 403:
                raise UserError(
                    f"auto-migrate cannot create StorageMigration {decision.name} ({error.message}): "
                    "grant create on storagemigrations.kms-storage-migrator.io, or run without --auto-migrate"
                ) from None
            raise
        uid = str((reply.body.get("metadata") or {}).get("uid", ""))
        log.info("auto-migrate: created StorageMigration %s: %s", decision.name, decision.message)
        sink = CustomResourceSink(self.api, decision.name, uid)
        await sink.event("Normal", CREATED_EVENT, f"{decision.trigger.value}: {decision.message}")

    def _say(self, decision: Decision) -> None:
        if isinstance(decision, Create):
            self._say_once(f"auto-migrate: create {decision.name}: {decision.message}")
        elif isinstance(decision, Wait):
            self._say_once(f"auto-migrate: wait: {decision.reason}")
        else:
            self._say_once(f"auto-migrate: nothing to do: {decision.reason}")

    def _say_once(self, text: str) -> None:
        # Every check logs at debug; a changed verdict at info, so an idle operator stays quiet.
        log.log(logging.INFO if text != self._last_said else logging.DEBUG, "%s", text)
        self._last_said = text


def gate_observer(api: KubeApi) -> KeyObserver:
    """The gate's single look at the apiservers: the key they all write with, or None."""

    warned: list[str] = []

    async def converged_key() -> str | None:
        # Any Status poll counts (start 0): the question is which key they all write with now.
        result = await assess_once(api, 0.0)
        if isinstance(result, Converged):
            return combined_key(result.key_id_hashes) if result.key_id_hashes else None
        if isinstance(result, NoMetricsAccess):
            # Said once at warning level: it holds until someone changes the ClusterRole.
            level = logging.DEBUG if warned else logging.WARNING
            log.log(level, "auto-migrate cannot see which key the apiservers use: %s", result.message)
            warned.append(result.message)
        return None

    return converged_key


def etcd_scanner(config: EtcdConfig, root: EtcdRoot = DEFAULT_ROOT) -> StartScanner:
    """A start scan over its own read-only etcd connection, opened for the scan only."""

    async def scan(converged_key: str) -> StartScan:
        async with EtcdReader(config) as reader:
            index = await crd_index_from_etcd(reader, root=root)
            inventory = await scan_inventory(reader, index, None, root=root)
        return stale_under_other_keys(inventory.rows(), converged_key)

    return scan


async def run_auto_migrate(
    migrator: AutoMigrator,
    interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Check every ``interval_seconds`` until cancelled. A check that cannot reach the apiserver
    or etcd, or lacks a permission (the message names it), is logged and tried again at the next
    poll: the operator's migrations go on meanwhile."""
    while True:
        try:
            await migrator.check()
        except (ApiError, TransportError, UserError) as error:
            log.error("auto-migrate: check failed, next try in %.0f s: %s", interval_seconds, error)
        await sleep(interval_seconds)


async def beside_operator(
    operator: Awaitable[None],
    credentials: ApiCredentials,
    *,
    etcd_config: EtcdConfig | None,
    etcd_root: EtcdRoot = DEFAULT_ROOT,
    interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
) -> None:
    """Run ``operator`` (kopf) with the auto-migrate loop beside it, on a client of its own;
    the loop ends when the operator does."""
    async with KubeApi(credentials) as api:
        scan = etcd_scanner(etcd_config, etcd_root) if etcd_config is not None else None
        migrator = AutoMigrator(api, gate_observer(api), scan)
        loop = asyncio.create_task(run_auto_migrate(migrator, interval_seconds), name="auto-migrate")
        loop.add_done_callback(_report_end)
        try:
            await operator
        finally:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop


def _report_end(task: asyncio.Task[None]) -> None:
    # The loop catches what a check may meet; anything else is a bug and must not pass unseen.
    if not task.cancelled() and task.exception() is not None:
        log.critical("auto-migrate stopped: no more automatic migrations", exc_info=task.exception())


__all__ = [
    "DEFAULT_INTERVAL_SECONDS",
    "AutoMigrator",
    "NothingToDo",
    "beside_operator",
    "etcd_scanner",
    "gate_observer",
    "run_auto_migrate",
]
