"""Stepping a Full walk past values the apiserver cannot decode (pure parts)."""

from __future__ import annotations

import base64
import json

from kms_storage_migrator.kube import api_error
from kms_storage_migrator.migration.unreadable import token_after, token_revision, unreadable_object

# What kube-apiserver 1.37 answers for a list that reaches a value it cannot decode.
STORAGE_READ_ERROR = {
    "reason": "StorageReadError",
    "message": "failed to read one or more configmaps from the storage: StorageError: corrupt object, "
    "Code: 7, Key: /registry/configmaps/default/c2, ResourceVersion: 0, AdditionalErrorMsg: object not "
    "decodable revision=215: illegal base64 data at input byte 0",
}


def test_the_error_names_the_keys_and_keeps_no_other_text() -> None:
    error = api_error(500, STORAGE_READ_ERROR)
    assert error.corrupt_keys == ("/registry/configmaps/default/c2",)
    assert error.message == "the apiserver cannot decode stored object(s): /registry/configmaps/default/c2"
    assert "base64" not in str(error)


def test_several_bad_values_are_each_named_once_in_key_order() -> None:
    message = (
        "failed to read: [StorageError: corrupt object, Code: 7, Key: /registry/secrets/b/x, "
        "ResourceVersion: 0, AdditionalErrorMsg: y, StorageError: corrupt object, Code: 7, "
        "Key: /registry/secrets/a/z, "
        "ResourceVersion: 0, AdditionalErrorMsg: y]"
    )
    error = api_error(500, {"reason": "StorageReadError", "message": message})
    assert error.corrupt_keys == ("/registry/secrets/a/z", "/registry/secrets/b/x")


def test_other_errors_name_no_corrupt_keys() -> None:
    assert (
        api_error(
            500, {"reason": "InternalError", "message": "Key: /registry/x, ResourceVersion"}
        ).corrupt_keys
        == ()
    )


def test_an_etcd_key_names_the_object_by_scope() -> None:
    namespaced = unreadable_object("/registry/configmaps/default/c2", namespaced=True)
    assert (namespaced.namespace, namespaced.name, namespaced.list_key) == ("default", "c2", "default/c2")
    cluster = unreadable_object("/custom/prefix/clusterroles/admin", namespaced=False)
    assert (cluster.namespace, cluster.name, cluster.list_key) == (None, "admin", "admin")


def test_the_token_starts_just_after_the_key_at_the_revision() -> None:
    token = token_after("default/c2", 217)
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert json.loads(raw) == {"v": "meta.k8s.io/v1", "rv": 217, "start": "default/c2\x00"}
    assert token_revision(token) == 217


def test_the_revision_of_an_apiserver_token_is_read_and_of_garbage_is_none() -> None:
    # A token kube-apiserver 1.37 returned (limit=1 on configmaps at revision 217).
    assert token_revision("eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6MjE3LCJzdGFydCI6ImMxXHUwMDAwIn0") == 217
    assert token_revision("not a token") is None
    assert token_revision(base64.urlsafe_b64encode(b'{"rv": 0}').decode()) is None
    assert token_revision(None) is None
