"""What the apiserver writes now, and whether a stored value matches it. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from kms_storage_migrator.storage.formats import DEK_SOURCE_HKDF_SEED, FormatKind, StoredFormat

__all__ = ["WriteExpectation"]


@dataclass(frozen=True, slots=True)
class WriteExpectation:
    """The stored format a write through the apiserver produces today.

    A stored value that differs is *stale*: the apiserver's no-op-write check treats it the same
    way (other provider, other KMS v2 key id, or the legacy DEK source type), so an unchanged
    update rewrites exactly these objects.
    """

    expected: StoredFormat
    source: str  # how it was learnt, for the report: "--expect-key-id" or the canary's key

    @classmethod
    def for_key_id(cls, key_id: str, provider: str | None = None) -> WriteExpectation:
        stored = StoredFormat(
            FormatKind.KMS_V2, provider=provider, key_id=key_id, dek_source_type=DEK_SOURCE_HKDF_SEED
        )
        return cls(stored, "--expect-key-id")

    def is_current(self, stored: StoredFormat) -> bool:
        expected = self.expected
        if expected.is_plaintext:
            # Built-ins are protobuf and custom resources JSON: any plaintext is what identity writes.
            return stored.is_plaintext
        if stored.kind is not expected.kind:
            return False
        if expected.kind is FormatKind.KMS_V2:
            return (
                stored.key_id == expected.key_id
                and stored.dek_source_type == expected.dek_source_type
                and (expected.provider is None or stored.provider == expected.provider)
            )
        if expected.kind is FormatKind.KMS_V1:
            return stored.provider == expected.provider
        return stored.key_name == expected.key_name
