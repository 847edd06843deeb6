"""Which KMS keys still hold objects after verification, and when an old key may be retired."""

from __future__ import annotations

from test_rewrite_engine import STALE, FakeCluster, MemorySink, _runner

from kms_storage_migrator.inventory.command import describe_key_in_use, key_in_use
from kms_storage_migrator.inventory.counts import Inventory
from kms_storage_migrator.migration.key_gate import previous_keys
from kms_storage_migrator.migration.progress import Verification, VerificationResult
from kms_storage_migrator.storage.formats import DEK_SOURCE_HKDF_SEED, FormatKind, StoredFormat
from kms_storage_migrator.storage.keys import StoredKey
from kms_storage_migrator.storage.write_format import WriteFormat


def test_previous_keys_in_use_is_false_only_when_nothing_but_the_current_key_holds_objects() -> None:
    in_use, reason, message = previous_keys({"kek-2": 40, "kek-1": 1}, "kek-2")
    assert in_use
    assert reason == "OlderKeysHoldObjects"
    assert "1 selected object(s) still under older keys (kek-1: 1)" in message
    assert previous_keys({"kek-2": 41}, "kek-2")[:2] == (False, "OnlyCurrentKey")
    assert previous_keys({}, None)[0] is False


def test_keys_in_use_survive_the_status_round_trip() -> None:
    verification = Verification(VerificationResult.VERIFIED, 3, 0, keys_in_use={"kek-2": 2, "kek-1": 1})
    document = verification.to_status()
    assert document["keysInUse"] == [{"keyId": "kek-1", "objects": 1}, {"keyId": "kek-2", "objects": 2}]
    assert Verification.from_status(document).keys_in_use == {"kek-1": 1, "kek-2": 2}


async def test_a_migration_without_kms_objects_reports_no_previous_keys() -> None:
    cluster = FakeCluster({"a": STALE})
    sink = MemorySink()
    await _runner(cluster, sink, {"mode": "Targeted"}).run()
    condition = next(c for c in sink.status["conditions"] if c["type"] == "PreviousKeysInUse")
    assert condition["status"] == "False"
    assert "keysInUse" not in sink.status["verification"]


def test_scan_names_the_objects_an_old_key_still_holds_and_nothing_once_the_last_left() -> None:
    inventory = Inventory(WriteFormat.for_key_id("kek-2"))
    old = StoredFormat(
        FormatKind.KMS_V2, provider="kms", key_id="kek-1", dek_source_type=DEK_SOURCE_HKDF_SEED
    )
    new = StoredFormat(
        FormatKind.KMS_V2, provider="kms", key_id="kek-2", dek_source_type=DEK_SOURCE_HKDF_SEED
    )
    inventory.record_many(StoredKey("", "secrets", "ns", "s", True), old, 2)
    inventory.record_many(StoredKey("apps", "deployments", "ns", "d", True), old, 1)
    inventory.record_many(StoredKey("", "configmaps", "ns", "c", True), new, 5)
    holding = key_in_use(inventory, "kek-1")
    assert holding == {"apps/deployments": 1, "core/secrets": 2}
    assert "kek-1 still holds 3 object(s) (apps/deployments 1, core/secrets 2)" in describe_key_in_use(
        "kek-1", holding
    )
    assert key_in_use(inventory, "kek-0") == {}
