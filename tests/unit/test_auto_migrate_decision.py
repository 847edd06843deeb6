"""``--auto-migrate``'s rule, pure: when an automatic StorageMigration is created, named how."""

from __future__ import annotations

from typing import Any

import pytest

from kms_storage_migrator.auto_migrate.decision import (
    AUTOMATIC_LABEL,
    TARGET_KEY_ANNOTATION,
    TRIGGER_ANNOTATION,
    Create,
    ExistingMigration,
    NothingToDo,
    Observation,
    StartScan,
    Trigger,
    Wait,
    combined_key,
    decide,
    migration_name,
    stale_under_other_keys,
)
from kms_storage_migrator.convergence.keyids import key_id_hash
from kms_storage_migrator.inventory.counts import ResourceCounts

KEY_A = key_id_hash("kek-1")
KEY_B = key_id_hash("kek-2")


def finished(name: str, **fields: Any) -> ExistingMigration:
    return ExistingMigration(name, "Succeeded", **fields)


def test_a_new_converged_key_creates_one_migration_named_for_it() -> None:
    decision = decide(Observation(KEY_B, [finished("by-hand")]), last_seen_key=KEY_A)
    assert isinstance(decision, Create)
    assert decision.trigger is Trigger.KEY_CHANGED
    assert decision.name == "auto-to-" + KEY_B.removeprefix("sha256:")[:12]
    assert decision.key_id_hash == KEY_B
    assert KEY_A[:19] in decision.message
    assert KEY_B[:19] in decision.message


def test_the_name_depends_only_on_the_target_key_so_replicas_collide_harmlessly() -> None:
    assert migration_name(KEY_B) == migration_name(KEY_B)
    assert migration_name(KEY_A) != migration_name(KEY_B)
    # A valid object name: lower-case hex after the prefix, well under 253 characters.
    assert migration_name(KEY_B).removeprefix("auto-to-").isalnum()


def test_the_same_key_as_last_time_creates_nothing() -> None:
    decision = decide(Observation(KEY_A, []), last_seen_key=KEY_A)
    assert isinstance(decision, NothingToDo)


def test_the_first_look_without_etcd_only_remembers_the_key() -> None:
    decision = decide(Observation(KEY_A, []), last_seen_key=None)
    assert isinstance(decision, NothingToDo)


def test_apiservers_that_do_not_agree_yet_make_it_wait() -> None:
    assert isinstance(decide(Observation(None, []), last_seen_key=KEY_A), Wait)


@pytest.mark.parametrize("phase", [None, "Pending", "WaitingForKey", "Migrating", "Verifying"])
def test_any_unfinished_migration_makes_it_wait(phase: str | None) -> None:
    users = ExistingMigration("users-own", phase)
    decision = decide(Observation(KEY_B, [users]), last_seen_key=KEY_A)
    assert isinstance(decision, Wait)
    assert "users-own" in decision.reason


def test_an_existing_automatic_migration_for_the_key_is_never_created_again() -> None:
    earlier = ExistingMigration(migration_name(KEY_B), "Failed", automatic=True, target_key_id_hash=KEY_B)
    scan = StartScan(5, {"kek-1": 5})
    decision = decide(Observation(KEY_B, [earlier], scan), last_seen_key=KEY_A)
    assert isinstance(decision, NothingToDo)
    assert "Failed" in decision.reason


def test_a_users_finished_migration_of_everything_to_the_key_did_the_work() -> None:
    done = finished("users-own", key_id="kek-2", covers_everything=True)
    decision = decide(Observation(KEY_B, [done]), last_seen_key=KEY_A)
    assert isinstance(decision, NothingToDo)
    assert "users-own" in decision.reason


def test_a_users_migration_of_part_of_the_cluster_does_not_count() -> None:
    partial = finished("only-secrets", key_id="kek-2", covers_everything=False)
    assert isinstance(decide(Observation(KEY_B, [partial]), last_seen_key=KEY_A), Create)


def test_a_restarted_operator_learns_the_previous_key_from_the_newest_automatic_migration() -> None:
    older = finished(
        "auto-to-0", automatic=True, target_key_id_hash=key_id_hash("kek-0"), created_at="2026-01"
    )
    newer = finished("auto-to-1", automatic=True, target_key_id_hash=KEY_A, created_at="2026-06")
    decision = decide(Observation(KEY_B, [newer, older]), last_seen_key=None)
    assert isinstance(decision, Create)
    assert decision.trigger is Trigger.KEY_CHANGED
    assert isinstance(decide(Observation(KEY_A, [newer, older]), last_seen_key=None), NothingToDo)


def test_a_start_scan_finding_objects_under_older_keys_creates_one() -> None:
    scan = StartScan(7, {"kek-1": 7})
    decision = decide(Observation(KEY_B, [], scan), last_seen_key=None)
    assert isinstance(decision, Create)
    assert decision.trigger is Trigger.STALE_AT_START
    assert "7 object(s)" in decision.message
    assert "kek-1: 7" in decision.message


def test_a_clean_start_scan_creates_nothing() -> None:
    assert isinstance(decide(Observation(KEY_B, [], StartScan(0, {})), last_seen_key=None), NothingToDo)


def test_the_manifest_is_labelled_automatic_and_says_why() -> None:
    decision = decide(Observation(KEY_B, []), last_seen_key=KEY_A)
    assert isinstance(decision, Create)
    manifest = decision.manifest()
    metadata = manifest["metadata"]
    assert manifest["kind"] == "StorageMigration"
    assert metadata["name"] == decision.name
    assert metadata["labels"] == {AUTOMATIC_LABEL: "true"}
    assert metadata["annotations"] == {TRIGGER_ANNOTATION: "KeyChanged", TARGET_KEY_ANNOTATION: KEY_B}
    assert manifest["spec"] == {"mode": "Auto"}


def test_an_object_is_read_back_as_the_rule_needs_it() -> None:
    document = {
        "metadata": {
            "name": "auto-to-abc",
            "creationTimestamp": "2026-12-01T10:00:00Z",
            "labels": {AUTOMATIC_LABEL: "true"},
            "annotations": {TARGET_KEY_ANNOTATION: KEY_B},
        },
        "spec": {"mode": "Auto", "resources": {"include": ["*/*"]}},
        "status": {"phase": "Succeeded", "keyId": "kek-2"},
    }
    seen = ExistingMigration.from_object(document)
    assert seen == ExistingMigration(
        "auto-to-abc",
        "Succeeded",
        True,
        KEY_B,
        "kek-2",
        covers_everything=True,
        created_at="2026-12-01T10:00:00Z",
    )
    assert not ExistingMigration.from_object({"metadata": {"name": "new"}}).finished
    verify_only = {"metadata": {"name": "v"}, "spec": {"mode": "VerifyOnly"}}
    assert not ExistingMigration.from_object(verify_only).covers_everything
    excluding = {"metadata": {"name": "x"}, "spec": {"resources": {"exclude": ["core/events"]}}}
    assert not ExistingMigration.from_object(excluding).covers_everything


def test_the_start_scan_counts_older_keys_and_other_encryption_but_not_plaintext() -> None:
    configmaps = ResourceCounts(
        "", "configmaps", total=10, plaintext=2, kmsv2={"kek-1": 3, "kek-2": 4}, other=1
    )
    internal = ResourceCounts("", "ranges", total=2, kmsv2={"kek-1": 2}, not_rewritable=2)
    scan = stale_under_other_keys([configmaps, internal], KEY_B)
    assert scan == StartScan(4, {"kek-1": 3, "other encryption": 1})


def test_the_start_scan_counts_every_key_when_none_is_the_converged_one() -> None:
    secrets = ResourceCounts("", "secrets", total=3, kmsv2={"kek-1": 3})
    assert stale_under_other_keys([secrets], KEY_B).stale == 3


def test_one_value_for_several_providers_and_the_hash_itself_for_one() -> None:
    assert combined_key({"kms": KEY_B}) == KEY_B
    both = combined_key({"a": KEY_A, "b": KEY_B})
    assert both.startswith("sha256:")
    assert both == combined_key({"b": KEY_B, "a": KEY_A})
    assert both != combined_key({"a": KEY_B, "b": KEY_A})
