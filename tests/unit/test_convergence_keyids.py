"""A key_id_hash from the metrics back to the key id read from etcd or the keyring."""

from __future__ import annotations

import hashlib

from kms_storage_migrator.convergence.keyids import current_key_id, key_id_hash, match_key_id


def test_hash_is_the_apiservers_label_format() -> None:
    assert key_id_hash("kek-3") == "sha256:" + hashlib.sha256(b"kek-3").hexdigest()


def test_current_key_is_the_one_whose_hash_converged() -> None:
    assert current_key_id(key_id_hash("kek-2"), ["kek-1", "kek-2", "kek-1"]) == "kek-2"


def test_no_object_under_the_converged_key_names_none_rather_than_an_old_key() -> None:
    assert current_key_id(key_id_hash("kek-3"), ["kek-1", "kek-2"]) is None
    assert current_key_id(key_id_hash("kek-3"), []) is None


def test_long_cloud_key_ids_match_too() -> None:
    arn = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    assert match_key_id(key_id_hash(arn), ["kek-1", arn]) == arn
