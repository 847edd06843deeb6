"""Raw etcd value → how kube-apiserver stored it. Pure: no I/O, never raises on bad input.

The apiserver tags every encrypted value with a ``k8s:enc:<provider>:...:`` prefix; plaintext
is recognised by its serializer's magic bytes. KMS v2 values carry a protobuf
``EncryptedObject`` that we walk by hand (fields 2 and 5 are all we need), treating every
length in it as hostile: anything truncated, oversized or malformed is ``UNKNOWN`` with a reason.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["DEK_SOURCE_AES_GCM_KEY", "DEK_SOURCE_HKDF_SEED", "FormatKind", "StoredFormat", "classify"]


class FormatKind(enum.StrEnum):
    PLAINTEXT_PROTOBUF = "plaintext-protobuf"
    PLAINTEXT_JSON = "plaintext-json"
    PLAINTEXT_CBOR = "plaintext-cbor"
    AESCBC = "aescbc"
    AESGCM = "aesgcm"
    SECRETBOX = "secretbox"
    KMS_V1 = "kms-v1"
    KMS_V2 = "kms-v2"
    UNKNOWN = "unknown"


_PLAINTEXT_KINDS = frozenset(
    {FormatKind.PLAINTEXT_PROTOBUF, FormatKind.PLAINTEXT_JSON, FormatKind.PLAINTEXT_CBOR}
)

# EncryptedObject.encryptedDEKSourceType values (k8s.io/kms api.proto).
DEK_SOURCE_AES_GCM_KEY = 0  # legacy: a per-write DEK; always stale on current apiservers
DEK_SOURCE_HKDF_SEED = 1


@dataclass(frozen=True, slots=True)
class StoredFormat:
    """How one value is stored. Only the fields that apply to ``kind`` are set."""

    kind: FormatKind
    provider: str | None = None  # KMS v1/v2 provider name from the prefix
    key_name: str | None = None  # aescbc/aesgcm/secretbox key name from the prefix
    key_id: str | None = None  # KMS v2 KEK id from the EncryptedObject
    dek_source_type: int | None = None  # KMS v2 only
    reason: str | None = None  # why it is UNKNOWN

    @property
    def is_plaintext(self) -> bool:
        return self.kind in _PLAINTEXT_KINDS

    @property
    def is_encrypted(self) -> bool:
        return not self.is_plaintext and self.kind is not FormatKind.UNKNOWN

    def describe(self) -> str:
        """A short, value-free label for logs and tables, e.g. ``kms-v2:local-kms:key-1``."""
        if self.kind is FormatKind.KMS_V2:
            return f"kms-v2:{self.provider or '*'}:{self.key_id}"
        if self.kind is FormatKind.KMS_V1:
            return f"kms-v1:{self.provider}"
        if self.key_name is not None:
            return f"{self.kind.value}:{self.key_name}"
        if self.kind is FormatKind.UNKNOWN:
            return f"unknown ({self.reason})"
        return self.kind.value


_ENCRYPTED_PREFIX = b"k8s:enc:"
_PROTOBUF_MAGIC = b"k8s\x00"
_CBOR_SELF_DESCRIBED = b"\xd9\xd9\xf7"
_AES_KINDS = {b"aescbc": FormatKind.AESCBC, b"aesgcm": FormatKind.AESGCM, b"secretbox": FormatKind.SECRETBOX}

# Limits the apiserver itself enforces (k8s.io/apiserver envelope/kmsv2 validation).
_MAX_NAME_LENGTH = 256  # provider and key names are short config strings; bounds the ':' search
_MAX_KEY_ID_LENGTH = 1024
_MAX_DEK_SOURCE_LENGTH = 1024
_MAX_VARINT_BYTES = 10


_PLAINTEXT_PROTOBUF = StoredFormat(FormatKind.PLAINTEXT_PROTOBUF)
_PLAINTEXT_JSON = StoredFormat(FormatKind.PLAINTEXT_JSON)
_PLAINTEXT_CBOR = StoredFormat(FormatKind.PLAINTEXT_CBOR)
# A keyspace holds a handful of distinct KMS v2 formats; reusing them spares an allocation per key.
_KMS_V2_FORMATS: dict[tuple[str, str, int], StoredFormat] = {}
# Many values share the bytes that decide their format (see _kms_v2_deciding_bytes). Bounded: with
# per-write DEKs (legacy) every value differs, and the cache then simply stops growing.
_KMS_V2_BY_DECIDING_BYTES: dict[bytes, StoredFormat] = {}
_MAX_CACHED_FORMATS = 4096
_TAG_ENCRYPTED_DATA = 1 << 3 | 2  # field 1, length-delimited


def classify(value: bytes) -> StoredFormat:
    """Classify one raw etcd value. Total: returns ``UNKNOWN`` with a reason instead of raising."""
    if not value:
        return _unknown("empty value")
    if value.startswith(_ENCRYPTED_PREFIX):
        return _classify_encrypted(value)
    if value.startswith(_PROTOBUF_MAGIC):
        return _PLAINTEXT_PROTOBUF
    if value.startswith(b"{"):
        return _PLAINTEXT_JSON
    if value.startswith(_CBOR_SELF_DESCRIBED):
        return _PLAINTEXT_CBOR
    return _unknown("no known prefix")


def _unknown(reason: str) -> StoredFormat:
    return StoredFormat(FormatKind.UNKNOWN, reason=reason)


def _split_field(data: bytes, start: int, what: str) -> tuple[str, int] | str:
    """Read a ``name:`` field at ``start``; returns (name, offset after ':') or an error reason."""
    end = data.find(b":", start, start + _MAX_NAME_LENGTH + 1)
    if end < 0:
        return f"{what} not terminated by ':' within {_MAX_NAME_LENGTH} bytes"
    if end == start:
        return f"empty {what}"
    try:
        return data[start:end].decode("utf-8"), end + 1
    except UnicodeDecodeError:
        return f"{what} is not UTF-8"


def _classify_encrypted(value: bytes) -> StoredFormat:
    rest = len(_ENCRYPTED_PREFIX)
    if value.startswith(b"kms:v2:", rest):
        return _classify_kms_v2(value, rest + len(b"kms:v2:"))
    if value.startswith(b"kms:v1:", rest):
        return _classify_kms_v1(value, rest + len(b"kms:v1:"))
    for tag, kind in _AES_KINDS.items():
        if value.startswith(tag + b":v1:", rest):
            parsed = _split_field(value, rest + len(tag) + len(b":v1:"), "key name")
            if isinstance(parsed, str):
                return _unknown(f"{kind.value}: {parsed}")
            key_name, payload_start = parsed
            if payload_start >= len(value):
                return _unknown(f"{kind.value}: no ciphertext after the prefix")
            return StoredFormat(kind, key_name=key_name)
    return _unknown("unrecognised k8s:enc: provider")


def _classify_kms_v1(value: bytes, start: int) -> StoredFormat:
    parsed = _split_field(value, start, "provider name")
    if isinstance(parsed, str):
        return _unknown(f"kms-v1: {parsed}")
    provider, offset = parsed
    # Layout after the prefix: 2-byte big-endian DEK length, the encrypted DEK, then the data.
    if offset + 2 > len(value):
        return _unknown("kms-v1: truncated before the DEK length")
    dek_length = int.from_bytes(value[offset : offset + 2], "big")
    if dek_length == 0 or offset + 2 + dek_length >= len(value):
        return _unknown("kms-v1: DEK length exceeds the value")
    return StoredFormat(FormatKind.KMS_V1, provider=provider)


def _classify_kms_v2(value: bytes, start: int) -> StoredFormat:
    cache_key = _kms_v2_deciding_bytes(value, start)
    if cache_key is None:
        return _walk_kms_v2(value, start)
    stored = _KMS_V2_BY_DECIDING_BYTES.get(cache_key)
    if stored is None:
        stored = _walk_kms_v2(value, start)
        if len(_KMS_V2_BY_DECIDING_BYTES) < _MAX_CACHED_FORMATS:
            _KMS_V2_BY_DECIDING_BYTES[cache_key] = stored
    return stored


def _kms_v2_deciding_bytes(value: bytes, start: int) -> bytes | None:
    """The bytes that decide a KMS v2 value's format: the provider name and everything after
    encryptedData, or None when the value does not open with encryptedData (then it is walked).

    The apiserver writes encryptedData (field 1) first, and it is nearly all of the value; what
    follows (keyID, the DEK source, annotations, the DEK source type) is the same for every
    object written under one DEK seed. The walk's outcome, including every error reason, is a
    function of the provider, of encryptedData being non-empty and of these trailing bytes, so a
    cache keyed by them gives exactly the walk's answer for one slice and one dict lookup.
    """
    colon = value.find(b":", start, start + _MAX_NAME_LENGTH + 1)
    offset = colon + 1
    if colon < 0 or offset + 2 >= len(value) or value[offset] != _TAG_ENCRYPTED_DATA:
        return None
    # encryptedData's length: one or two varint bytes below 16 KiB, the general reader above.
    length = value[offset + 1]
    offset += 2
    if length >= 0x80:
        if value[offset] < 0x80:
            length = (length & 0x7F) | value[offset] << 7
            offset += 1
        else:
            varint = _read_varint(value, offset - 1)
            if varint is None:
                return None
            length, offset = varint
    if length == 0 or length > len(value) - offset:
        return None
    # The provider name holds no ':', so the first ':' separates it from the trailing bytes.
    return value[start:colon] + b":" + value[offset + length :]


def _walk_kms_v2(value: bytes, start: int) -> StoredFormat:
    parsed = _split_field(value, start, "provider name")
    if isinstance(parsed, str):
        return _unknown(f"kms-v2: {parsed}")
    provider, offset = parsed
    fields = _walk_encrypted_object(value, offset)
    if isinstance(fields, str):
        return _unknown(f"kms-v2: {fields}")
    cache_key = (provider, fields.key_id, fields.dek_source_type)
    stored = _KMS_V2_FORMATS.get(cache_key)
    if stored is None:
        stored = StoredFormat(
            FormatKind.KMS_V2, provider=provider, key_id=fields.key_id, dek_source_type=fields.dek_source_type
        )
        if len(_KMS_V2_FORMATS) < _MAX_CACHED_FORMATS:
            _KMS_V2_FORMATS[cache_key] = stored
    return stored


@dataclass(frozen=True, slots=True)
class _EncryptedObjectFields:
    key_id: str
    dek_source_type: int


_WIRE_VARINT, _WIRE_FIXED64, _WIRE_LENGTH, _WIRE_FIXED32 = 0, 1, 2, 5
_FIELD_DATA, _FIELD_KEY_ID, _FIELD_DEK_SOURCE, _FIELD_ANNOTATIONS, _FIELD_DEK_SOURCE_TYPE = 1, 2, 3, 4, 5
_EXPECTED_WIRE_TYPES = {
    _FIELD_DATA: _WIRE_LENGTH,
    _FIELD_KEY_ID: _WIRE_LENGTH,
    _FIELD_DEK_SOURCE: _WIRE_LENGTH,
    _FIELD_ANNOTATIONS: _WIRE_LENGTH,
    _FIELD_DEK_SOURCE_TYPE: _WIRE_VARINT,
}


def _read_varint(buffer: bytes, offset: int) -> tuple[int, int] | None:
    result = 0
    for index in range(_MAX_VARINT_BYTES):
        position = offset + index
        if position >= len(buffer):
            return None
        byte = buffer[position]
        result |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            return result, position + 1
    return None


def _walk_encrypted_object(buffer: bytes, offset: int) -> _EncryptedObjectFields | str:
    """Walk the protobuf wire format of EncryptedObject from ``offset`` to the end of ``buffer``;
    returns its fields or an error reason. Indexes into the value: nothing large is copied."""
    key_id: bytes | None = None
    dek_source_type = DEK_SOURCE_AES_GCM_KEY  # proto3 default when the field is absent
    data_length = 0
    dek_source_length = 0
    end = len(buffer)
    while offset < end:
        # One-byte varints (every tag and length here but encryptedData's) skip the general reader.
        tag_value = buffer[offset]
        if tag_value < 0x80:
            offset += 1
        else:
            tag = _read_varint(buffer, offset)
            if tag is None:
                return "truncated field tag"
            tag_value, offset = tag
        field_number, wire_type = tag_value >> 3, tag_value & 0x7
        if field_number == 0:
            return "field number 0"
        if wire_type != _EXPECTED_WIRE_TYPES.get(field_number, wire_type):
            return f"field {field_number} has wire type {wire_type}"
        if wire_type in (_WIRE_VARINT, _WIRE_LENGTH):
            if offset < end and buffer[offset] < 0x80:
                number = buffer[offset]
                offset += 1
            else:
                varint = _read_varint(buffer, offset)
                if varint is None:
                    return "truncated varint" if wire_type == _WIRE_VARINT else "truncated length"
                number, offset = varint
            if wire_type == _WIRE_VARINT:
                if field_number == _FIELD_DEK_SOURCE_TYPE:
                    dek_source_type = number
                continue
            if number > end - offset:
                return f"field {field_number} claims {number} bytes, {end - offset} remain"
            if field_number == _FIELD_KEY_ID:
                key_id = buffer[offset : offset + number]
            elif field_number == _FIELD_DATA:
                data_length = number
            elif field_number == _FIELD_DEK_SOURCE:
                dek_source_length = number
            offset += number
        elif wire_type in (_WIRE_FIXED64, _WIRE_FIXED32):
            offset += 8 if wire_type == _WIRE_FIXED64 else 4
            if offset > end:
                return "truncated fixed-width field"
        else:
            return f"unsupported wire type {wire_type}"
    return _validate(key_id, dek_source_type, data_length, dek_source_length)


def _validate(
    key_id: bytes | None, dek_source_type: int, data_length: int, dek_source_length: int
) -> _EncryptedObjectFields | str:
    # The same checks the apiserver applies before it trusts an EncryptedObject.
    if not key_id:
        return "missing keyID"
    if len(key_id) > _MAX_KEY_ID_LENGTH:
        return f"keyID longer than {_MAX_KEY_ID_LENGTH} bytes"
    try:
        key_id_text = key_id.decode("utf-8")
    except UnicodeDecodeError:
        return "keyID is not UTF-8"
    if data_length == 0:
        return "missing encryptedData"
    if dek_source_length == 0:
        return "missing encryptedDEKSource"
    if dek_source_length > _MAX_DEK_SOURCE_LENGTH:
        return f"encryptedDEKSource longer than {_MAX_DEK_SOURCE_LENGTH} bytes"
    if dek_source_type not in (DEK_SOURCE_AES_GCM_KEY, DEK_SOURCE_HKDF_SEED):
        return f"unknown encryptedDEKSourceType {dek_source_type}"
    return _EncryptedObjectFields(key_id=key_id_text, dek_source_type=dek_source_type)
