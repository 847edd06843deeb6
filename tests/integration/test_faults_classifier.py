"""The fault suite's own etcd value classifier (fault_tools.classify), on hand-built values.

Pure: no cluster. The suite's "nothing stale" verdicts rest on this walk, which shares no code
with the project's scanner, so it gets its own checks.
"""

from __future__ import annotations

from fault_tools import PLAINTEXT, UNKNOWN, classify, encrypted_object_key


def _field(number: int, payload: bytes) -> bytes:
    assert len(payload) < 128
    return bytes([number << 3 | 2, len(payload)]) + payload


def _encrypted_object(key_id: str, source_type: int | None) -> bytes:
    body = _field(1, b"\x01" * 40) + _field(2, key_id.encode()) + _field(3, b"\x02" * 32)
    body += _field(4, _field(1, b"example.com") + _field(2, b"v"))  # one annotations map entry
    if source_type is not None:
        body += bytes([5 << 3 | 0, source_type])
    return body


def test_kms_v2_values_give_provider_key_id_and_dek_source_type() -> None:
    value = b"k8s:enc:kms:v2:local-kms:" + _encrypted_object("kek-7", 1)
    assert classify(value) == "kms-v2:local-kms:kek-7"
    assert encrypted_object_key(_encrypted_object("kek-7", 1)) == ("kek-7", 1)


def test_a_legacy_dek_is_its_own_form_even_under_the_current_key() -> None:
    # proto3 leaves the zero enum out: no field 5 means source type 0 (AES_GCM_KEY).
    value = b"k8s:enc:kms:v2:local-kms:" + _encrypted_object("kek-7", None)
    assert classify(value) == "kms-v2:local-kms:kek-7:dek-type-0"


def test_other_encrypted_plaintext_and_garbage_forms() -> None:
    assert classify(b"k8s:enc:aescbc:v1:key1:\x00\x01") == "aescbc-v1:key1"
    assert classify(b"k8s:enc:kms:v1:old-kms:\x00\x10") == "kms-v1:old-kms"
    assert classify(b"k8s\x00\x0a\x0cconfigmaps") == PLAINTEXT
    assert classify(b'{"kind":"Gadget"}') == PLAINTEXT
    assert classify(b"\xd9\xd9\xf7\xa1") == PLAINTEXT
    assert classify(b"\x07garbage") == UNKNOWN
    assert classify(b"k8s:enc:kms:v2:no-separator") == UNKNOWN
    assert classify(b"k8s:enc:kms:v2:local-kms:\x0a\xff") == UNKNOWN  # truncated protobuf
