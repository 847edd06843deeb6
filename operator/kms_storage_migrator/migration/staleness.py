"""Which stored objects are stale: the one rule, shared by the Targeted walk and verification. Pure.

"Current" means stored the way the apiserver writes now, learnt by reading a write back
(``format_learning.py``); anything else a no-op write would store anew.
"""

from __future__ import annotations

from dataclasses import dataclass

from kms_storage_migrator.storage.formats import (
    DEK_SOURCE_AES_GCM_KEY,
    DEK_SOURCE_HKDF_SEED,
    FormatKind,
    StoredFormat,
)

PLAINTEXT_LABEL = "plaintext"


def write_format_label(stored: StoredFormat) -> str:
    """What "current" means for comparison: the provider and key, never the per-write DEK seed.

    Every plaintext serialisation is one label (a resource left unencrypted by the config is
    current whether it is JSON or protobuf); a legacy KMS v2 DEK source is its own label because
    the apiserver treats it as stale.
    """
    if stored.is_plaintext:
        return PLAINTEXT_LABEL
    label = stored.describe()
    if stored.kind is FormatKind.KMS_V2 and stored.dek_source_type != DEK_SOURCE_HKDF_SEED:
        # Only the seed (type 1) is what the apiserver writes now; any other type is stale.
        legacy = stored.dek_source_type == DEK_SOURCE_AES_GCM_KEY
        label += "+legacy-dek" if legacy else f"+dek-source-{stored.dek_source_type}"
    return label


def is_stale(stored: StoredFormat, current_label: str) -> bool:
    """Whether the apiserver would store this value anew on a no-op write.

    Current means: the same provider and key (``kms-v2:<provider>:<keyID>``), with the DEK
    source type the apiserver writes (type 1, the seed; type 0, a per-write DEK, is stale), or
    any plaintext when the resource is left unencrypted. This matches
    ``inventory.expectation.WriteExpectation.is_current`` except that the label always
    compares the provider (an expectation from ``--expect-key-id`` may leave it open). An
    ``UNKNOWN`` value (undecodable) is never "current", but the runner does not rewrite it
    either: see :func:`is_rewritable`.
    """
    return write_format_label(stored) != current_label


def is_rewritable(stored: StoredFormat) -> bool:
    """A value we could classify. An undecodable one is reported, not written: the apiserver
    cannot decrypt it either (500 on every try), and its retries would slow the whole run."""
    return stored.kind is not FormatKind.UNKNOWN


@dataclass
class StaleTally:
    """Counts from one pass over a resource's etcd keys."""

    scanned: int = 0
    stale: int = 0
    not_rewritable: int = 0

    def add(self, other: StaleTally) -> None:
        self.scanned += other.scanned
        self.stale += other.stale
        self.not_rewritable += other.not_rewritable
