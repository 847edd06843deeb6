"""What ``--auto-migrate`` does on one check, pure: create a StorageMigration, wait, or nothing.

Inputs are what the loop observed: the key the apiservers have converged on (the gate's
verdict, as a key id hash), every StorageMigration in the cluster, and, once at start with etcd
access, how many objects etcd holds under any other key. The rules:

- Nothing is created while any StorageMigration is not finished (never two at once; never
  beside a user's) or while the apiservers disagree (a rotation in progress): wait and retry.
- A new converged key (different from the last one seen, or from the key the newest automatic
  migration went to) creates ``auto-to-<hash>``. So does a start scan finding objects under
  older keys. The name depends only on the target key, so two replicas creating it at once
  collide harmlessly (409) and there is at most one automatic migration per key.
- A finished migration of everything to this key already did the work: nothing to do.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from kms_storage_migrator.convergence.keyids import KEY_ID_HASH_PREFIX, key_id_hash, match_key_id
from kms_storage_migrator.inventory.counts import ResourceCounts

GROUP: Final = "kms-storage-migrator.io"
AUTOMATIC_LABEL: Final = f"{GROUP}/automatic"
TRIGGER_ANNOTATION: Final = f"{GROUP}/auto-migrate-trigger"
TARGET_KEY_ANNOTATION: Final = f"{GROUP}/target-key-id-hash"
NAME_PREFIX: Final = "auto-to-"
# Hex digits of the key hash in the name: enough to tell keys apart, short enough to read.
NAME_HASH_DIGITS: Final = 12
TERMINAL: Final = frozenset({"Succeeded", "Failed"})
EVERYTHING: Final = ("*/*",)


class Trigger(enum.StrEnum):
    """Why an automatic migration was created (its annotation and its event's reason)."""

    KEY_CHANGED = "KeyChanged"
    STALE_AT_START = "StaleAtStart"


@dataclass(frozen=True)
class ExistingMigration:
    """What the rule needs of one StorageMigration (never its status document as a whole)."""

    name: str
    phase: str | None  # None: not picked up yet, so not finished
    automatic: bool = False
    target_key_id_hash: str | None = None  # automatic ones: the key they were created for
    key_id: str | None = None  # status.keyId: the key it migrated to
    covers_everything: bool = False  # every resource type, in a mode that writes
    created_at: str = ""  # RFC 3339, sorts by time

    @property
    def finished(self) -> bool:
        return self.phase in TERMINAL

    @classmethod
    def from_object(cls, document: Mapping[str, Any]) -> ExistingMigration:
        metadata = document.get("metadata") or {}
        spec = document.get("spec") or {}
        status = document.get("status") or {}
        labels = metadata.get("labels") or {}
        annotations = metadata.get("annotations") or {}
        resources = spec.get("resources") or {}
        include = tuple(resources.get("include") or EVERYTHING)
        everything = include == EVERYTHING and not resources.get("exclude")
        writes = spec.get("mode", "Auto") != "VerifyOnly"
        return cls(
            name=str(metadata.get("name", "")),
            phase=status.get("phase") or None,
            automatic=labels.get(AUTOMATIC_LABEL) == "true",
            target_key_id_hash=annotations.get(TARGET_KEY_ANNOTATION),
            key_id=status.get("keyId") or None,
            covers_everything=everything and writes,
            created_at=str(metadata.get("creationTimestamp", "")),
        )


@dataclass(frozen=True)
class StartScan:
    """The start scan's finding: rewritable objects under a key other than the converged one."""

    stale: int
    by_key: Mapping[str, int]  # older KMS v2 key id -> objects ("other encryption" for the rest)


@dataclass(frozen=True)
class Observation:
    converged_key: str | None  # the converged key id hash; None: not converged or not visible
    migrations: Sequence[ExistingMigration]
    start_scan: StartScan | None = None  # only at start, only with etcd access


@dataclass(frozen=True)
class Create:
    name: str
    trigger: Trigger
    key_id_hash: str
    message: str

    def manifest(self) -> dict[str, Any]:
        """The StorageMigration: everything, mode Auto (Targeted with etcd, else Full)."""
        return {
            "apiVersion": f"{GROUP}/v1alpha1",
            "kind": "StorageMigration",
            "metadata": {
                "name": self.name,
                "labels": {AUTOMATIC_LABEL: "true"},
                "annotations": {
                    TRIGGER_ANNOTATION: self.trigger.value,
                    TARGET_KEY_ANNOTATION: self.key_id_hash,
                },
            },
            "spec": {"mode": "Auto"},
        }


@dataclass(frozen=True)
class Wait:
    """Not now; decide again at the next check (a start scan still pending stays pending)."""

    reason: str


@dataclass(frozen=True)
class NothingToDo:
    """This key needs no migration; it counts as seen."""

    reason: str


Decision = Create | Wait | NothingToDo


def migration_name(key_hash: str) -> str:
    """``auto-to-`` and the first hex digits of the key hash: the same on every replica."""
    return NAME_PREFIX + key_hash.removeprefix(KEY_ID_HASH_PREFIX)[:NAME_HASH_DIGITS]


def combined_key(key_id_hashes: Mapping[str, str]) -> str:
    """One value for the converged keys: the hash itself for one provider, else a hash of all."""
    if len(key_id_hashes) == 1:
        return next(iter(key_id_hashes.values()))
    joined = ",".join(f"{provider}={value}" for provider, value in sorted(key_id_hashes.items()))
    return KEY_ID_HASH_PREFIX + hashlib.sha256(joined.encode("utf-8")).hexdigest()


def decide(observation: Observation, last_seen_key: str | None) -> Decision:
    """One check's decision. ``last_seen_key``: the converged key this process saw last, if any."""
    active = [migration for migration in observation.migrations if not migration.finished]
    if active:
        listed = ", ".join(f"{m.name} ({m.phase or 'new'})" for m in active[:3])
        return Wait(f"StorageMigration {listed} not finished: one migration at a time")
    key = observation.converged_key
    if key is None:
        return Wait("the apiservers do not write with one key yet")
    name = migration_name(key)
    existing = next((m for m in observation.migrations if m.name == name), None)
    if existing is not None:
        return NothingToDo(f"{name} for key {_short(key)} exists ({existing.phase})")
    done_by = next((m for m in observation.migrations if _migrated_everything_to(m, key)), None)
    if done_by is not None:
        return NothingToDo(f"{done_by.name} already migrated everything to key {_short(key)}")
    previous = last_seen_key or _newest_automatic_target(observation.migrations)
    if previous is not None and previous != key:
        return Create(
            name,
            Trigger.KEY_CHANGED,
            key,
            f"the apiservers switched from key {_short(previous)} to {_short(key)}: "
            "re-encrypting every object under the new key",
        )
    scan = observation.start_scan
    if scan is not None and scan.stale > 0:
        listed = ", ".join(f"{key_id}: {count}" for key_id, count in sorted(scan.by_key.items()))
        return Create(
            name,
            Trigger.STALE_AT_START,
            key,
            f"etcd holds {scan.stale} object(s) under keys other than the current {_short(key)} "
            f"({listed}): re-encrypting them",
        )
    return NothingToDo(f"the apiservers write with key {_short(key)}; nothing under older keys known")


def stale_under_other_keys(rows: Iterable[ResourceCounts], converged_key: str) -> StartScan:
    """Objects etcd holds encrypted under anything but the converged key, in rewritable resources.

    Plaintext is not counted: without writing, the operator cannot tell a resource the encryption
    configuration leaves unencrypted from one not yet encrypted (create a migration by hand for
    the first encryption). Resources with no rewritable object (apiserver-internal keys) are
    skipped, since a migration cannot rewrite them.
    """
    rows = [row for row in rows if row.not_rewritable < row.total]
    key_ids = {key_id for row in rows for key_id in row.kmsv2}
    current = match_key_id(converged_key, key_ids)
    by_key: dict[str, int] = {}
    for row in rows:
        for key_id, count in row.kmsv2.items():
            if key_id != current:
                by_key[key_id] = by_key.get(key_id, 0) + count
        if row.other:
            by_key["other encryption"] = by_key.get("other encryption", 0) + row.other
    return StartScan(sum(by_key.values()), by_key)


def _migrated_everything_to(migration: ExistingMigration, key: str) -> bool:
    return (
        migration.phase == "Succeeded"
        and migration.covers_everything
        and migration.key_id is not None
        and key_id_hash(migration.key_id) == key
    )


def _newest_automatic_target(migrations: Sequence[ExistingMigration]) -> str | None:
    """The key the newest automatic migration went to: what a restarted operator saw last."""
    automatic = [m for m in migrations if m.automatic and m.target_key_id_hash]
    if not automatic:
        return None
    return max(automatic, key=lambda m: m.created_at).target_key_id_hash


def _short(key_hash: str) -> str:
    return key_hash[: len(KEY_ID_HASH_PREFIX) + NAME_HASH_DIGITS]
