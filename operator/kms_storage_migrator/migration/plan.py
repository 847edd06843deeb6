"""What a migration will do: the validated spec, the effective mode, and which stored objects are stale.

Pure: the runner feeds it etcd entries and discovery results and acts on the answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from kms_storage_migrator.migration.selection import Selection, SelectionError, parse_selection
from kms_storage_migrator.storage.formats import (
    DEK_SOURCE_AES_GCM_KEY,
    DEK_SOURCE_HKDF_SEED,
    FormatKind,
    StoredFormat,
)

DEFAULT_CONCURRENCY = 8
DEFAULT_QPS = 50
DEFAULT_PAGE_SIZE = 100
DEFAULT_MAX_ATTEMPTS = 5
# Limits mirrored by the CRD schema; checked here too so the engine is safe without admission.
MAX_CONCURRENCY = 256
MAX_QPS = 10_000
MAX_PAGE_SIZE = 5_000
MAX_ATTEMPTS = 100

PLAINTEXT_LABEL = "plaintext"


class Mode(StrEnum):
    AUTO = "Auto"  # Targeted with etcd access, Full without
    FULL = "Full"  # rewrite every object through the API
    TARGETED = "Targeted"  # rewrite only what the etcd scan finds stale
    VERIFY_ONLY = "VerifyOnly"  # scan and report; write nothing


@dataclass(frozen=True)
class RunDefaults:
    """Operator-wide defaults (``run --concurrency/--qps``) for what a spec leaves unset."""

    concurrency: int = DEFAULT_CONCURRENCY
    qps: int = DEFAULT_QPS


class PlanError(ValueError):
    """The migration cannot run as specified; the message names the field or the cause."""


@dataclass(frozen=True)
class MigrationSpec:
    selection: Selection
    mode: Mode
    concurrency: int
    qps: int
    page_size: int
    max_attempts: int

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], defaults: RunDefaults | None = None) -> MigrationSpec:
        defaults = defaults or RunDefaults()
        resources = spec.get("resources") or {}
        try:
            selection = parse_selection(resources.get("include"), resources.get("exclude"))
        except SelectionError as error:
            raise PlanError(str(error)) from error
        mode_text = spec.get("mode") or Mode.AUTO.value
        if mode_text not in Mode._value2member_map_:
            allowed = ", ".join(m.value for m in Mode)
            raise PlanError(f"spec.mode: {mode_text!r} is not one of {allowed}")
        return cls(
            selection=selection,
            mode=Mode(mode_text),
            concurrency=_bounded(spec, "concurrency", defaults.concurrency, MAX_CONCURRENCY),
            qps=_bounded(spec, "qps", defaults.qps, MAX_QPS),
            page_size=_bounded(spec, "pageSize", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE),
            max_attempts=_bounded(spec, "maxAttemptsPerObject", DEFAULT_MAX_ATTEMPTS, MAX_ATTEMPTS),
        )


def _bounded(spec: Mapping[str, Any], name: str, default: int, maximum: int) -> int:
    value = spec.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise PlanError(f"spec.{name}: must be a whole number from 1 to {maximum}, got {value!r}")
    return value


def resolve_mode(requested: Mode, etcd_available: bool) -> Mode:
    """The mode a migration really runs in; Targeted and VerifyOnly need etcd access."""
    if requested is Mode.AUTO:
        return Mode.TARGETED if etcd_available else Mode.FULL
    if requested in (Mode.TARGETED, Mode.VERIFY_ONLY) and not etcd_available:
        raise PlanError(
            f"spec.mode: {requested.value} needs read access to etcd; start the operator with "
            "--etcd-config (or the --etcd-* flags), or use mode Full"
        )
    return requested


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
