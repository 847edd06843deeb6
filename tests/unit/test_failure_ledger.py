"""The full failure list: bounded in bytes, each object once, names only, readable back, and
written to its ConfigMap at a bounded pace."""

from __future__ import annotations

import json
from typing import Any

from kms_storage_migrator.kube import ApiError
from kms_storage_migrator.migration.failure_configmap import SUFFIX, FailureConfigMap, list_name
from kms_storage_migrator.migration.failure_ledger import (
    LIST_KEY,
    TRUNCATED_KEY,
    FailureLedger,
    http_code,
)
from kms_storage_migrator.migration.status_parts import Failure


def denied(index: int) -> Failure:
    return Failure(
        "configmaps", "team-a", f"cm-{index:03d}", "HTTP400", "denied by admission webhook deny.test"
    )


def listed(data: dict[str, str | None]) -> list[dict[str, object]]:
    return [json.loads(line) for line in (data[LIST_KEY] or "").splitlines()]


def test_every_failure_is_listed_with_its_code_in_order() -> None:
    ledger = FailureLedger()
    for index in range(25):
        assert ledger.add(denied(index))
    entries = listed(ledger.to_data("m"))
    assert [entry["name"] for entry in entries] == [f"cm-{i:03d}" for i in range(25)]
    assert entries[0] == {
        "resource": "configmaps",
        "namespace": "team-a",
        "name": "cm-000",
        "reason": "HTTP400",
        "code": 400,
        "message": "denied by admission webhook deny.test",
    }
    assert ledger.to_data("m")[TRUNCATED_KEY] is None


def test_a_page_redone_lists_its_failures_once() -> None:
    ledger = FailureLedger()
    assert ledger.add(denied(1))
    version = ledger.version
    assert not ledger.add(denied(1))
    assert ledger.version == version  # nothing new: no write needed
    assert len(listed(ledger.to_data("m"))) == 1


def test_past_the_byte_cap_failures_are_counted_behind_a_marker() -> None:
    ledger = FailureLedger(max_bytes=1000)
    for index in range(50):
        ledger.add(denied(index))
    data = ledger.to_data("m")
    assert len((data[LIST_KEY] or "").encode()) <= 1000
    shown = len(listed(data))
    assert 0 < shown < 50
    assert ledger.not_listed == 50 - shown
    assert (data[TRUNCATED_KEY] or "").startswith(f"{50 - shown} more not listed")
    assert f"truncated: {50 - shown} more" in (data["summary"] or "")


def test_the_default_cap_stays_far_below_a_configmaps_limit() -> None:
    ledger = FailureLedger()
    long_message = "x" * 5000  # capped per entry, like status
    for index in range(10_000):
        ledger.add(Failure("secrets", "n" * 63, f"{index}-" + "s" * 240, "Forbidden", long_message))
    data = ledger.to_data("m" * 253)
    size = sum(len(key) + len((value or "").encode()) for key, value in data.items())
    assert size < 300 * 1024
    assert ledger.not_listed > 0


def test_a_list_read_back_is_continued_not_repeated() -> None:
    first = FailureLedger(max_bytes=1000)
    for index in range(30):
        first.add(denied(index))
    resumed = FailureLedger(max_bytes=1000)
    resumed.restore({key: value for key, value in first.to_data("m").items() if value is not None})
    assert not resumed.add(denied(0))  # already listed before the restart
    assert resumed.listed == first.listed
    assert resumed.not_listed == first.not_listed


def test_a_line_not_written_by_the_ledger_is_ignored() -> None:
    ledger = FailureLedger()
    ledger.restore({LIST_KEY: 'not json\n{"resource": "configmaps"}\n[1]\n'})
    assert ledger.listed == 0


def test_http_codes_of_reasons() -> None:
    assert http_code("Forbidden") == 403
    assert http_code("Invalid") == 422
    assert http_code("CannotDecrypt") == 500
    assert http_code("HTTP403") == 403
    assert http_code("exhausted") is None


def test_the_list_is_named_after_its_migration_and_always_a_valid_name() -> None:
    assert list_name("to-kek-2") == "to-kek-2-failures"
    long = "a." * 126 + "b"  # 253 characters, the longest StorageMigration name
    name = list_name(long)
    assert len(name) <= 253
    assert name.endswith(SUFFIX)
    assert ".-" not in name
    assert name[0].isalnum()
    assert list_name(long) != list_name("a." * 126 + "c")


class RecordingApi:
    """What the ConfigMap writer sends, and an apiserver that holds at most one ConfigMap."""

    def __init__(self, existing: dict[str, Any] | None = None) -> None:
        self.existing = existing
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def get_json(self, path: str) -> dict[str, Any]:
        if self.existing is None:
            raise ApiError(404, "NotFound", "configmaps not found")
        return self.existing

    async def request(self, method: str, path: str, *, body: dict[str, Any]) -> None:
        self.sent.append((method, body))

    async def patch(self, path: str, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        self.sent.append(("PATCH", body))
        return {}


def writer(api: RecordingApi, clock: list[float], uid: str = "uid-1") -> FailureConfigMap:
    return FailureConfigMap(
        api,  # type: ignore[arg-type]
        migration="m",
        uid=uid,
        namespace="ops",
        api_version="kms-storage-migrator.io/v1alpha1",
        kind="StorageMigration",
        interval=10.0,
        clock=lambda: clock[0],
    )


async def test_the_list_is_written_at_most_every_interval_and_at_the_end() -> None:
    api, clock = RecordingApi(), [100.0]
    failures = writer(api, clock)
    await failures.flush()
    assert api.sent == []  # nothing failed yet: nothing to write
    failures.add(denied(0))
    await failures.flush()
    ((method, created),) = api.sent
    assert method == "POST"
    assert created["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    failures.add(denied(1))
    clock[0] += 9
    await failures.flush()
    assert len(api.sent) == 1  # within the interval: held back
    clock[0] += 1
    await failures.flush()
    assert [method for method, _ in api.sent] == ["POST", "PATCH"]
    failures.add(denied(2))
    await failures.flush(final=True)  # the end: at once
    assert len(listed(api.sent[-1][1]["data"])) == 3
    await failures.flush(final=True)
    assert len(api.sent) == 3  # unchanged since: no write


async def test_a_resumed_migration_continues_its_own_list_only() -> None:
    earlier = FailureLedger()
    earlier.add(denied(0))
    data = {key: value for key, value in earlier.to_data("m").items() if value is not None}
    owned = {"metadata": {"ownerReferences": [{"uid": "uid-1"}]}, "data": data}
    api = RecordingApi(owned)
    failures = writer(api, [0.0])
    failures.add(denied(1))
    await failures.flush(final=True)
    assert [entry["name"] for entry in listed(api.sent[-1][1]["data"])] == ["cm-000", "cm-001"]

    # A list left by an earlier migration of the same name is replaced, and its owner too.
    api = RecordingApi({**owned, "metadata": {"ownerReferences": [{"uid": "gone"}]}})
    failures = writer(api, [0.0])
    failures.add(denied(1))
    await failures.flush(final=True)
    _, body = api.sent[-1]
    assert [entry["name"] for entry in listed(body["data"])] == ["cm-001"]
    assert body["metadata"]["ownerReferences"][0]["uid"] == "uid-1"


async def test_without_a_namespace_of_its_own_the_list_is_only_logged(caplog: Any) -> None:
    api = RecordingApi()
    failures = FailureConfigMap(
        api,  # type: ignore[arg-type]
        migration="m",
        uid="uid-1",
        namespace=None,
        api_version="kms-storage-migrator.io/v1alpha1",
        kind="StorageMigration",
    )
    with caplog.at_level("WARNING"):
        failures.add(denied(0))
        await failures.flush(final=True)
    assert api.sent == []
    assert "not rewritten: configmaps team-a/cm-000 (HTTP400)" in caplog.text
    assert "listed in this log only" in caplog.text
