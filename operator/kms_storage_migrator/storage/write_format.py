"""How the apiserver writes now: the one definition of a *current* stored value. Pure.

A stored value that is not current is *stale*: the apiserver's no-op-write check treats it the
same way (another provider, another KMS v2 key id, or a DEK source type it no longer writes),
so a no-op write stores exactly those anew. ``scan``, the Targeted walk and verification all
ask :meth:`WriteFormat.is_current`; status carries :attr:`WriteFormat.label` and reads it back
with :meth:`WriteFormat.parse`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from kms_storage_migrator.storage.formats import (
    DEK_SOURCE_AES_GCM_KEY,
    DEK_SOURCE_HKDF_SEED,
    FormatKind,
    StoredFormat,
)

__all__ = ["PLAINTEXT_LABEL", "WriteFormat"]

PLAINTEXT_LABEL = "plaintext"
_LEGACY_DEK = "+legacy-dek"
_DEK_SOURCE = "+dek-source-"
_KEY_NAMED = {FormatKind.AESCBC, FormatKind.AESGCM, FormatKind.SECRETBOX}


@dataclass(frozen=True, slots=True)
class WriteFormat:
    """The stored form a write through the apiserver produces today.

    ``expected.provider`` None (from ``--expect-key-id`` alone) accepts any provider; any
    plaintext serialisation is current when the apiserver writes plaintext (built-ins are
    protobuf, custom resources JSON). ``source`` says how it was learnt, for reports.
    """

    expected: StoredFormat
    source: str = field(default="", compare=False)

    @classmethod
    def of(cls, stored: StoredFormat, source: str = "") -> WriteFormat:
        """The format of a value just written (read back from etcd)."""
        return cls(stored, source)

    @classmethod
    def for_key_id(cls, key_id: str, provider: str | None = None) -> WriteFormat:
        stored = StoredFormat(
            FormatKind.KMS_V2, provider=provider, key_id=key_id, dek_source_type=DEK_SOURCE_HKDF_SEED
        )
        return cls(stored, "--expect-key-id")

    def is_current(self, stored: StoredFormat) -> bool:
        expected = self.expected
        if expected.is_plaintext:
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

    def judge(self) -> Callable[[StoredFormat], bool]:
        """:meth:`is_current` remembering each answer: a scan meets a handful of distinct
        formats among millions of values (``classify`` hands out one object per format)."""
        verdicts: dict[StoredFormat, bool] = {}

        def is_current(stored: StoredFormat) -> bool:
            verdict = verdicts.get(stored)
            if verdict is None:
                verdict = verdicts[stored] = self.is_current(stored)
            return verdict

        return is_current

    @property
    def label(self) -> str:
        """A short, value-free name: ``plaintext``, ``kms-v2:<provider>:<keyID>``, ``aescbc:<key>``...

        The per-write DEK seed never shows; a DEK source type other than the seed does, since
        the apiserver treats it as stale.
        """
        expected = self.expected
        if expected.is_plaintext:
            return PLAINTEXT_LABEL
        label = expected.describe()
        if expected.kind is FormatKind.KMS_V2 and expected.dek_source_type != DEK_SOURCE_HKDF_SEED:
            legacy = expected.dek_source_type == DEK_SOURCE_AES_GCM_KEY
            label += _LEGACY_DEK if legacy else f"{_DEK_SOURCE}{expected.dek_source_type}"
        return label

    @classmethod
    def parse(cls, label: str) -> WriteFormat | None:
        """The format a :attr:`label` names (from a stored status), or None if it names none."""
        if label == PLAINTEXT_LABEL:
            return cls(StoredFormat(FormatKind.PLAINTEXT_JSON))
        kind_text, _, rest = label.partition(":")
        if kind_text == FormatKind.KMS_V2.value:
            provider, _, key_id = rest.partition(":")
            dek = DEK_SOURCE_HKDF_SEED
            if key_id.endswith(_LEGACY_DEK):
                key_id, dek = key_id.removesuffix(_LEGACY_DEK), DEK_SOURCE_AES_GCM_KEY
            elif _DEK_SOURCE in key_id:
                key_id, _, number = key_id.rpartition(_DEK_SOURCE)
                dek = int(number) if number.isdigit() else -1
            if not key_id:
                return None
            named = None if provider in ("", "*") else provider
            return cls(StoredFormat(FormatKind.KMS_V2, provider=named, key_id=key_id, dek_source_type=dek))
        if kind_text == FormatKind.KMS_V1.value and rest:
            return cls(StoredFormat(FormatKind.KMS_V1, provider=rest))
        kind = FormatKind._value2member_map_.get(kind_text)
        if isinstance(kind, FormatKind) and kind in _KEY_NAMED and rest:
            return cls(StoredFormat(kind, key_name=rest))
        return None
