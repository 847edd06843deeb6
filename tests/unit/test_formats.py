"""The stored-format classifier: every known prefix, hostile KMS v2 payloads, and fuzzing."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kms_storage_migrator.storage import formats
from kms_storage_migrator.storage.formats import (
    DEK_SOURCE_AES_GCM_KEY,
    DEK_SOURCE_HKDF_SEED,
    FormatKind,
    StoredFormat,
    classify,
)


def varint(number: int) -> bytes:
    out = bytearray()
    while True:
        byte = number & 0x7F
        number >>= 7
        if number:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def length_field(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def varint_field(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def encrypted_object(
    key_id: bytes = b"key-1",
    dek_source_type: int | None = DEK_SOURCE_HKDF_SEED,
    data: bytes = b"\x01" * 60,
    dek_source: bytes = b"\x02" * 48,
    annotations: dict[bytes, bytes] | None = None,
) -> bytes:
    """EncryptedObject as the apiserver's Go protobuf marshals it (fields in number order)."""
    body = length_field(1, data) + length_field(2, key_id) + length_field(3, dek_source)
    for name, value in (annotations or {}).items():
        body += length_field(4, length_field(1, name) + length_field(2, value))
    if dek_source_type:  # proto3 omits the zero value
        body += varint_field(5, dek_source_type)
    return body


def kms_v2(provider: bytes = b"local-kms", **fields: object) -> bytes:
    return b"k8s:enc:kms:v2:" + provider + b":" + encrypted_object(**fields)  # type: ignore[arg-type]


class TestPlaintext:
    def test_protobuf_envelope(self) -> None:
        assert classify(b"k8s\x00\n\x0c\n\x02v1\x12\x06Secret").kind is FormatKind.PLAINTEXT_PROTOBUF

    def test_json(self) -> None:
        assert classify(b'{"apiVersion":"example.com/v1"}').kind is FormatKind.PLAINTEXT_JSON

    def test_cbor_self_described(self) -> None:
        assert classify(b"\xd9\xd9\xf7\xa1\x01\x02").kind is FormatKind.PLAINTEXT_CBOR

    @pytest.mark.parametrize("value", [b"k8s\x00x", b"{}", b"\xd9\xd9\xf7"])
    def test_plaintext_kinds_report_plaintext(self, value: bytes) -> None:
        stored = classify(value)
        assert stored.is_plaintext
        assert not stored.is_encrypted


class TestAesProviders:
    @pytest.mark.parametrize(
        ("tag", "kind"),
        [
            (b"aescbc", FormatKind.AESCBC),
            (b"aesgcm", FormatKind.AESGCM),
            (b"secretbox", FormatKind.SECRETBOX),
        ],
    )
    def test_key_name_is_read_from_the_prefix(self, tag: bytes, kind: FormatKind) -> None:
        stored = classify(b"k8s:enc:" + tag + b":v1:key2:" + os.urandom(48))
        assert stored == StoredFormat(kind, key_name="key2")
        assert stored.is_encrypted

    def test_missing_ciphertext_is_unknown(self) -> None:
        stored = classify(b"k8s:enc:aescbc:v1:key1:")
        assert stored.kind is FormatKind.UNKNOWN
        assert stored.reason is not None
        assert "ciphertext" in stored.reason

    def test_unterminated_key_name_is_unknown(self) -> None:
        assert classify(b"k8s:enc:aesgcm:v1:" + b"k" * 300).kind is FormatKind.UNKNOWN


class TestKmsV1:
    def test_provider_is_read(self) -> None:
        dek = os.urandom(32)
        value = b"k8s:enc:kms:v1:vault:" + len(dek).to_bytes(2, "big") + dek + os.urandom(40)
        assert classify(value) == StoredFormat(FormatKind.KMS_V1, provider="vault")

    def test_dek_length_past_the_end_is_unknown(self) -> None:
        value = b"k8s:enc:kms:v1:vault:" + (500).to_bytes(2, "big") + b"short"
        assert classify(value).kind is FormatKind.UNKNOWN


class TestKmsV2:
    def test_provider_key_id_and_dek_source_type(self) -> None:
        stored = classify(kms_v2(key_id=b"kek-2026-11"))
        assert stored == StoredFormat(
            FormatKind.KMS_V2,
            provider="local-kms",
            key_id="kek-2026-11",
            dek_source_type=DEK_SOURCE_HKDF_SEED,
        )

    def test_absent_dek_source_type_is_the_legacy_zero(self) -> None:
        stored = classify(kms_v2(dek_source_type=None))
        assert stored.dek_source_type == DEK_SOURCE_AES_GCM_KEY

    def test_annotations_and_unknown_fields_are_skipped(self) -> None:
        extra = varint_field(9, 7) + varint(10 << 3 | 1) + b"8bytes!!" + varint(11 << 3 | 5) + b"4byt"
        value = kms_v2(annotations={b"version.encryption.example.com": b"2"}) + extra
        assert classify(value).key_id == "key-1"

    def test_last_key_id_wins_like_protobuf(self) -> None:
        value = kms_v2(key_id=b"first") + length_field(2, b"second")
        assert classify(value).key_id == "second"

    @pytest.mark.parametrize(
        ("value", "reason_part"),
        [
            (kms_v2(key_id=b""), "missing keyID"),
            (kms_v2(key_id=b"k" * 1025), "keyID longer"),
            (kms_v2(key_id=b"\xff\xfe"), "not UTF-8"),
            (kms_v2(data=b""), "missing encryptedData"),
            (kms_v2(dek_source=b""), "missing encryptedDEKSource"),
            (kms_v2(dek_source=b"d" * 1025), "encryptedDEKSource longer"),
            (kms_v2(dek_source_type=7), "unknown encryptedDEKSourceType"),
            (b"k8s:enc:kms:v2:local-kms:" + varint(2 << 3 | 2) + varint(1 << 40), "claims"),
            (b"k8s:enc:kms:v2:local-kms:" + b"\x80" * 11, "truncated"),
            (b"k8s:enc:kms:v2:local-kms:" + varint(2 << 3 | 0) + b"\x01", "wire type"),
            (b"k8s:enc:kms:v2:local-kms:" + varint(6 << 3 | 3), "unsupported wire type"),
            (b"k8s:enc:kms:v2:local-kms:" + varint(0) + b"\x00", "field number 0"),
            (b"k8s:enc:kms:v2:local-kms:", "missing keyID"),
            (b"k8s:enc:kms:v2::" + encrypted_object(), "empty provider"),
            (b"k8s:enc:kms:v2:" + b"p" * 400, "not terminated"),
        ],
    )
    def test_malformed_encrypted_object_is_unknown_with_reason(self, value: bytes, reason_part: str) -> None:
        stored = classify(value)
        assert stored.kind is FormatKind.UNKNOWN
        assert stored.reason is not None
        assert reason_part in stored.reason

    def test_every_truncation_of_a_valid_value_is_unknown_or_valid(self) -> None:
        value = kms_v2(annotations={b"a.example.com": b"x"})
        for cut in range(len(value)):
            stored = classify(value[:cut])
            assert stored.kind in (FormatKind.UNKNOWN, FormatKind.KMS_V2)
            if stored.kind is FormatKind.KMS_V2:
                assert stored.key_id == "key-1"


class TestUnknown:
    @pytest.mark.parametrize(
        ("value", "reason"),
        [
            (b"", "empty value"),
            (b"\x00\x01", "no known prefix"),
            (b"k8s:enc:rot13:v1:k:abc", "unrecognised k8s:enc: provider"),
        ],
    )
    def test_reason(self, value: bytes, reason: str) -> None:
        assert classify(value) == StoredFormat(FormatKind.UNKNOWN, reason=reason)

    def test_describe_never_contains_the_value(self) -> None:
        secret = b"hunter2-hunter2"
        for value in (secret, b"k8s\x00" + secret, b"k8s:enc:aescbc:v1:k:" + secret, kms_v2(data=secret)):
            assert "hunter2" not in classify(value).describe()


key_ids = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=80).filter(
    lambda text: 0 < len(text.encode()) <= 1024
)
providers = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=40)


@given(
    provider=providers,
    key_id=key_ids,
    dek_source_type=st.sampled_from([DEK_SOURCE_AES_GCM_KEY, DEK_SOURCE_HKDF_SEED]),
    data=st.binary(min_size=1, max_size=300),
    dek_source=st.binary(min_size=1, max_size=1024),
    annotations=st.dictionaries(st.binary(min_size=1, max_size=30), st.binary(max_size=30), max_size=3),
)
def test_well_formed_kms_v2_round_trips(
    provider: str,
    key_id: str,
    dek_source_type: int,
    data: bytes,
    dek_source: bytes,
    annotations: dict[bytes, bytes],
) -> None:
    value = (
        b"k8s:enc:kms:v2:"
        + provider.encode()
        + b":"
        + encrypted_object(
            key_id=key_id.encode(),
            dek_source_type=dek_source_type,
            data=data,
            dek_source=dek_source,
            annotations=annotations,
        )
    )
    assert classify(value) == StoredFormat(
        FormatKind.KMS_V2, provider=provider, key_id=key_id, dek_source_type=dek_source_type
    )


@given(st.binary(max_size=2048))
@settings(max_examples=3000, suppress_health_check=[HealthCheck.too_slow])
def test_arbitrary_bytes_never_raise(value: bytes) -> None:
    assert isinstance(classify(value), StoredFormat)


@pytest.mark.parametrize(
    "prefix",
    [b"k8s:enc:kms:v2:p:", b"k8s:enc:kms:v1:p:", b"k8s:enc:aescbc:v1:", b"k8s:enc:", b"k8s:enc:kms:v2:"],
)
@given(tail=st.binary(max_size=1024))
@settings(
    max_examples=1500, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
def test_arbitrary_payload_after_a_known_prefix_never_raises(prefix: bytes, tail: bytes) -> None:
    stored = classify(prefix + tail)
    assert stored.kind is FormatKind.UNKNOWN or stored.is_encrypted
    if stored.kind is FormatKind.UNKNOWN:
        assert stored.reason


@given(
    tail=st.lists(
        st.one_of(
            st.builds(length_field, st.integers(1, 6), st.binary(max_size=40)),
            st.builds(varint_field, st.integers(1, 6), st.integers(0, 2**64 - 1)),
            st.binary(max_size=6),
        ),
        max_size=8,
    ).map(b"".join)
)
@settings(max_examples=3000)
def test_structured_fuzz_of_encrypted_object_never_raises(tail: bytes) -> None:
    stored = classify(b"k8s:enc:kms:v2:local-kms:" + tail)
    assert stored.kind in (FormatKind.KMS_V2, FormatKind.UNKNOWN)
    if stored.kind is FormatKind.KMS_V2:
        assert stored.key_id
        assert stored.dek_source_type in (DEK_SOURCE_AES_GCM_KEY, DEK_SOURCE_HKDF_SEED)


def test_bounded_random_fuzz_run() -> None:
    """A plain fuzz loop over random bytes and random mutations of valid values (seeded, bounded)."""
    rng = random.Random(20261130)
    seeds = [kms_v2(), kms_v2(dek_source_type=None), b"k8s:enc:kms:v1:p:\x00\x02ab" + b"c" * 10]
    for _ in range(20_000):
        if rng.random() < 0.5:
            value = rng.randbytes(rng.randrange(0, 200))
        else:
            mutated = bytearray(rng.choice(seeds))
            for _ in range(rng.randrange(1, 4)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            value = bytes(mutated[: rng.randrange(1, len(mutated) + 1)])
        assert isinstance(classify(value), StoredFormat)


# The cache of KMS v2 formats keyed by the bytes after encryptedData must give exactly the walk's
# answer: valid or not, whatever follows, asked once (filling the cache) or again (hitting it).
@given(
    provider=st.sampled_from([b"local-kms", b"other", b"", b"\xff\xfe"]),
    data=st.binary(min_size=0, max_size=300),
    tail=st.one_of(
        st.binary(max_size=64),
        st.builds(
            lambda key_id, source, kind: length_field(2, key_id) + length_field(3, source) + kind,
            st.sampled_from([b"key-1", b"key-2", b"", b"\xff"]),
            st.sampled_from([b"\x02" * 48, b""]),
            st.sampled_from([b"", varint_field(5, 1), varint_field(5, 7), b"\x28"]),
        ),
    ),
)
@settings(max_examples=300)
def test_cached_kms_v2_formats_equal_the_walk(provider: bytes, data: bytes, tail: bytes) -> None:
    value = b"k8s:enc:kms:v2:" + provider + b":" + length_field(1, data) + tail
    start = len(b"k8s:enc:kms:v2:")
    walked = formats._walk_kms_v2(value, start)
    assert classify(value) == walked
    assert classify(value) == walked
    other_data = b"\x07" * (len(data) + 130)  # another object (and a longer length varint)
    other = b"k8s:enc:kms:v2:" + provider + b":" + length_field(1, other_data) + tail
    assert classify(other) == formats._walk_kms_v2(other, start)


def test_kms_v2_formats_are_shared_between_objects_of_one_dek_seed() -> None:
    first, second = kms_v2(data=b"\x01" * 200), kms_v2(data=b"\x09" * 20)
    assert classify(first) is classify(second)
