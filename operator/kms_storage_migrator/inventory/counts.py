"""Per-resource counts of stored formats: the inventory's data, built one object at a time. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from kms_storage_migrator.inventory.expectation import WriteExpectation
from kms_storage_migrator.storage.formats import FormatKind, StoredFormat
from kms_storage_migrator.storage.keys import GroupResource, StoredKey

__all__ = ["ClassifiedObject", "Inventory", "ResourceCounts"]


class ClassifiedObject(NamedTuple):
    """One stored object: where it is, what it is, how it is stored. Never holds the value.

    A named tuple rather than a frozen dataclass: one is built per key, and this is 3x cheaper.
    """

    etcd_key: str
    stored_key: StoredKey
    format: StoredFormat
    mod_revision: int  # equals the object's resourceVersion

    def is_stale(self, expectation: WriteExpectation) -> bool:
        """Rewritable and not stored the way the apiserver writes now."""
        return self.stored_key.rewritable and not expectation.is_current(self.format)


@dataclass(slots=True)
class ResourceCounts:
    """The four format columns (plaintext, kmsv2, other, unknown) partition ``total``."""

    group: str
    resource: str
    total: int = 0
    plaintext: int = 0
    kmsv2: dict[str, int] = field(default_factory=dict)  # key id → objects
    other: int = 0  # aescbc, aesgcm, secretbox, KMS v1
    unknown: int = 0
    not_rewritable: int = 0
    stale: int = 0  # rewritable objects not in the expected format (0 when nothing is expected)

    def add(self, stored: StoredFormat, *, rewritable: bool, stale: bool) -> None:
        self.total += 1
        if stored.is_plaintext:
            self.plaintext += 1
        elif stored.kind is FormatKind.KMS_V2 and stored.key_id is not None:
            self.kmsv2[stored.key_id] = self.kmsv2.get(stored.key_id, 0) + 1
        elif stored.kind is FormatKind.UNKNOWN:
            self.unknown += 1
        else:
            self.other += 1
        if not rewritable:
            self.not_rewritable += 1
        if stale:
            self.stale += 1

    def absorb(self, other: ResourceCounts) -> None:
        self.total += other.total
        self.plaintext += other.plaintext
        for key_id, count in other.kmsv2.items():
            self.kmsv2[key_id] = self.kmsv2.get(key_id, 0) + count
        self.other += other.other
        self.unknown += other.unknown
        self.not_rewritable += other.not_rewritable
        self.stale += other.stale


@dataclass(slots=True)
class Inventory:
    expectation: WriteExpectation | None
    resources: dict[GroupResource, ResourceCounts] = field(default_factory=dict)
    revision: int = 0  # etcd revision the scan was pinned to (the last one, after compactions)
    compaction_restarts: int = 0
    # A scan sees a handful of distinct formats among millions of objects: decide each once.
    _current: dict[StoredFormat, bool] = field(default_factory=dict, repr=False, compare=False)

    def record(self, obj: ClassifiedObject) -> None:
        key = obj.stored_key
        counts = self.resources.get(key.group_resource)
        if counts is None:
            counts = self.resources[key.group_resource] = ResourceCounts(key.group, key.resource)
        stale = False
        if self.expectation is not None and key.rewritable:
            current = self._current.get(obj.format)
            if current is None:
                current = self._current[obj.format] = self.expectation.is_current(obj.format)
            stale = not current
        counts.add(obj.format, rewritable=key.rewritable, stale=stale)

    def rows(self) -> list[ResourceCounts]:
        """Resources in a stable order: by group, then resource."""
        return [self.resources[key] for key in sorted(self.resources)]

    @property
    def summary(self) -> ResourceCounts:
        total = ResourceCounts("", "*")
        for counts in self.resources.values():
            total.absorb(counts)
        return total

    @property
    def stale(self) -> int:
        return sum(counts.stale for counts in self.resources.values())
