"""The ``--auto-migrate`` loop's control flow against a fake apiserver (what it sends, when).

That the real apiserver, gate and engine turn a rotation into one Succeeded migration is
proven in tests/integration/test_auto_migrate.py; here only: what each check requests, what is
remembered between checks, and how a 409 or an outage is taken.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, cast

from kms_storage_migrator.auto_migrate.decision import AUTOMATIC_LABEL, Create, NothingToDo, StartScan, Wait
from kms_storage_migrator.auto_migrate.loop import COLLECTION_PATH, AutoMigrator, run_auto_migrate
from kms_storage_migrator.convergence.keyids import key_id_hash
from kms_storage_migrator.kube import ApiError, ApiResponse, KubeApi, TransportError

KEY_A = key_id_hash("kek-1")
KEY_B = key_id_hash("kek-2")


@dataclass
class FakeApi:
    """StorageMigrations in memory; POSTs of migrations and events recorded."""

    migrations: list[dict[str, Any]] = field(default_factory=list)
    created: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    fail_next: list[Exception] = field(default_factory=list)
    conflict_on_create: bool = False

    async def request(self, method: str, path: str, *, body: Any = None, **_: Any) -> ApiResponse:
        if self.fail_next:
            raise self.fail_next.pop(0)
        if method == "GET" and path == COLLECTION_PATH:
            return ApiResponse(200, {"items": list(self.migrations)})
        if method == "POST" and path == COLLECTION_PATH:
            if self.conflict_on_create:
                raise ApiError(409, "AlreadyExists", "storagemigrations exists")
            self.created.append(body)
            stored = {**body, "metadata": {**body["metadata"], "uid": "uid-1"}}
            self.migrations.append(stored)
            return ApiResponse(201, stored)
        raise AssertionError(f"unexpected {method} {path}")

    async def create_event(self, namespace: str, event: dict[str, Any]) -> None:
        self.events.append(event)


class Keys:
    """What the gate reports, one value per check (the last one repeats)."""

    def __init__(self, *keys: str | None) -> None:
        self.keys = list(keys)
        self.looks = 0

    async def __call__(self) -> str | None:
        self.looks += 1
        return self.keys.pop(0) if len(self.keys) > 1 else self.keys[0]


def migrator(api: FakeApi, keys: Keys, scan: StartScan | None = None) -> tuple[AutoMigrator, list[str]]:
    scanned: list[str] = []

    async def scan_etcd(key: str) -> StartScan:
        scanned.append(key)
        assert scan is not None
        return scan

    return AutoMigrator(cast(KubeApi, api), keys, scan_etcd if scan is not None else None), scanned


def finish(api: FakeApi, phase: str = "Succeeded") -> None:
    for item in api.migrations:
        item["status"] = {"phase": phase}


async def test_a_rotation_creates_one_labelled_migration_with_an_event_and_then_nothing() -> None:
    api = FakeApi()
    auto, _ = migrator(api, Keys(KEY_A, None, KEY_B))
    assert isinstance(await auto.check(), NothingToDo)  # first look: key A remembered
    assert isinstance(await auto.check(), Wait)  # rotation under way: apiservers disagree
    created = await auto.check()
    assert isinstance(created, Create)
    assert [body["metadata"]["name"] for body in api.created] == [created.name]
    assert api.created[0]["metadata"]["labels"] == {AUTOMATIC_LABEL: "true"}
    (event,) = api.events
    assert event["reason"] == "AutomaticMigrationCreated"
    assert event["involvedObject"]["name"] == created.name
    assert event["involvedObject"]["uid"] == "uid-1"
    assert "KeyChanged" in event["message"]
    assert isinstance(await auto.check(), Wait)  # it runs: one at a time
    finish(api)
    assert isinstance(await auto.check(), NothingToDo)
    assert isinstance(await auto.check(), NothingToDo)
    assert len(api.created) == 1


async def test_while_a_migration_runs_the_apiservers_are_not_scraped() -> None:
    running = {"metadata": {"name": "users-own"}, "status": {"phase": "Verifying"}}
    api = FakeApi(migrations=[running])
    keys = Keys(KEY_B)
    auto, _ = migrator(api, keys)
    auto.last_seen_key = KEY_A
    assert isinstance(await auto.check(), Wait)
    assert keys.looks == 0
    assert auto.last_seen_key == KEY_A  # the key change is still to be acted on
    finish(api)
    assert isinstance(await auto.check(), Create)
    assert keys.looks == 1


async def test_a_conflict_means_another_replica_created_it_first() -> None:
    api = FakeApi(conflict_on_create=True)
    auto, _ = migrator(api, Keys(KEY_B))
    auto.last_seen_key = KEY_A
    assert isinstance(await auto.check(), Create)
    assert api.events == []  # the replica that created it posts the event
    assert auto.last_seen_key == KEY_B


async def test_the_start_scan_runs_once_and_only_when_no_migration_runs() -> None:
    running = {"metadata": {"name": "users-own"}, "status": {"phase": "Migrating"}}
    api = FakeApi(migrations=[running])
    auto, scanned = migrator(api, Keys(KEY_B), StartScan(3, {"kek-1": 3}))
    assert isinstance(await auto.check(), Wait)
    assert scanned == []  # a scan now would be stale before it could be acted on
    finish(api)
    decision = await auto.check()
    assert isinstance(decision, Create)
    assert "StaleAtStart" in api.events[0]["message"]
    finish(api)
    assert isinstance(await auto.check(), NothingToDo)
    assert scanned == [KEY_B]


async def test_the_start_scan_waits_for_convergence() -> None:
    api = FakeApi()
    auto, scanned = migrator(api, Keys(None, KEY_B), StartScan(0, {}))
    assert isinstance(await auto.check(), Wait)
    assert scanned == []
    assert isinstance(await auto.check(), NothingToDo)
    assert scanned == [KEY_B]


async def test_an_unreachable_apiserver_is_retried_at_the_next_poll() -> None:
    api = FakeApi(
        fail_next=[TransportError("GET: connection refused"), ApiError(503, "ServiceUnavailable", "")]
    )
    auto, _ = migrator(api, Keys(KEY_B))
    auto.last_seen_key = KEY_A
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            raise _Done

    with contextlib.suppress(_Done):
        await run_auto_migrate(auto, 7.0, sleep=sleep)
    assert sleeps == [7.0, 7.0, 7.0]
    assert len(api.created) == 1  # the third check got through


class _Done(Exception):
    pass
