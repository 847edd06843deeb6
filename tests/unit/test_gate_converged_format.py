"""The converged key decides what "current" means; format learning is overruled where it disagrees."""

from __future__ import annotations

from kms_storage_migrator.convergence.keyids import key_id_hash
from kms_storage_migrator.migration.converged_format import converged_key, reconcile
from kms_storage_migrator.storage.formats import FormatKind, StoredFormat
from kms_storage_migrator.storage.write_format import WriteFormat

OLD = WriteFormat.for_key_id("kek-1", "local-kms")
NEW = WriteFormat.for_key_id("kek-2", "local-kms")
CONVERGED = {"local-kms": key_id_hash("kek-2")}


def test_a_learnt_format_under_the_converged_key_stands() -> None:
    assert converged_key(NEW, CONVERGED) is True
    assert reconcile("core/secrets", NEW, OLD, CONVERGED).expected == NEW
    assert reconcile("core/secrets", NEW, OLD, CONVERGED).note == ""


def test_a_learnt_format_under_another_key_is_overruled_by_the_reference_and_said_so() -> None:
    judged = reconcile("core/secrets", OLD, NEW, CONVERGED)
    assert judged.expected == NEW
    assert "core/secrets: a write read back as kms-v2:local-kms:kek-1" in judged.note
    assert "judged against kms-v2:local-kms:kek-2" in judged.note


def test_without_any_format_under_the_converged_key_the_resource_is_not_verifiable() -> None:
    judged = reconcile("core/secrets", OLD, OLD, CONVERGED)
    assert judged.expected is None
    assert "not verifiable" in judged.note


def test_the_gate_says_nothing_about_other_providers_plaintext_or_no_convergence() -> None:
    other = WriteFormat.for_key_id("kek-1", "another-kms")
    plain = WriteFormat.of(StoredFormat(FormatKind.PLAINTEXT_PROTOBUF))
    assert converged_key(other, CONVERGED) is None
    assert converged_key(plain, CONVERGED) is None
    assert converged_key(OLD, {}) is None
    assert reconcile("core/secrets", OLD, None, {}).expected == OLD
