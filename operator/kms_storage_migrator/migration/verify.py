"""Read-back from etcd: how each selected resource is stored now, against how it should be.

Used three ways: Targeted mode's scan (what to rewrite), the final verification, and
VerifyOnly. Values are classified and dropped at once; only keys, labels and counts leave here.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field

from kms_storage_migrator.migration.discovery import ServedResource
from kms_storage_migrator.migration.plan import StaleTally, is_stale
from kms_storage_migrator.migration.progress import MAX_EXAMPLES, Verification, VerificationResult
from kms_storage_migrator.storage.etcd import EtcdReader
from kms_storage_migrator.storage.formats import StoredFormat, classify
from kms_storage_migrator.storage.keys import (
    DEFAULT_ROOT,
    NOT_REWRITABLE_LOCATIONS,
    ResourceIndex,
    StoredKey,
    etcd_prefix,
    parse_key,
)


@dataclass(frozen=True)
class StoredObject:
    """One etcd entry of a selected resource, classified; the value itself is already gone."""

    key: str
    stored_key: StoredKey
    stored_format: StoredFormat
    mod_revision: int


def resource_index(resources: Sequence[ServedResource]) -> ResourceIndex:
    """The custom-resource index keys.py needs, from discovery (built-ins are looked up first)."""
    return {(r.group, r.resource): r.namespaced for r in resources}


def object_key(resource: ServedResource, index: ResourceIndex, namespace: str | None, name: str) -> str:
    prefix = etcd_prefix(resource.group, resource.resource, index)
    return f"{prefix}{namespace}/{name}" if resource.namespaced and namespace else f"{prefix}{name}"


async def stored_objects(
    reader: EtcdReader,
    resource: ServedResource,
    index: ResourceIndex,
    page_size: int,
    *,
    after_key: str | None = None,
) -> AsyncGenerator[list[StoredObject], None]:
    """Pages of one resource's rewritable objects, in key order, optionally after ``after_key``."""
    prefix = etcd_prefix(resource.group, resource.resource, index)
    async for page in reader.scan(prefix, page_size):
        batch = []
        for entry in page:
            key = entry.key.decode("utf-8", errors="replace")
            if after_key is not None and key <= after_key:
                continue
            stored_key = parse_key(entry.key, index)
            if not stored_key.rewritable:
                continue
            batch.append(StoredObject(key, stored_key, classify(entry.value), entry.mod_revision))
        if batch:
            yield batch


async def read_format(reader: EtcdReader, key: str) -> tuple[StoredFormat, int] | None:
    """How one key is stored now, and its mod_revision (None when the key is gone)."""
    entry = await reader.get(key)
    if entry is None:
        return None
    return classify(entry.value), entry.mod_revision


@dataclass
class VerificationReport:
    tally: StaleTally = field(default_factory=StaleTally)
    stale_by_resource: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    unreferenced: list[str] = field(default_factory=list)  # resources with no known write format
    internal_stale: int = 0  # keys no API can rewrite (ranges, masterleases) not in the current format

    def verification(self) -> Verification:
        result = VerificationResult.STALE_FOUND if self.tally.stale else VerificationResult.VERIFIED
        notes = [f"scanned {self.tally.scanned} keys, {self.tally.stale} stale"]
        if self.unreferenced:
            notes.append("not checked (write format unknown): " + ", ".join(self.unreferenced[:5]))
        if self.internal_stale:
            notes.append(
                f"{self.internal_stale} apiserver-internal keys (ranges, masterleases) in an older format: "
                "no API can rewrite them; the apiserver does on its next update of them"
            )
        return Verification(
            result, self.tally.scanned, self.tally.stale, self.examples[:MAX_EXAMPLES], "; ".join(notes)
        )


async def verify_resources(
    reader: EtcdReader,
    resources: Sequence[tuple[ServedResource, str | None]],
    index: ResourceIndex,
    page_size: int,
    *,
    reference_label: str | None,
    should_stop: Callable[[], bool] = lambda: False,
) -> VerificationReport:
    """Scan every selected resource and count what is not in its current write format."""
    report = VerificationReport()
    for resource, label in resources:
        expected = label or reference_label
        if expected is None:
            report.unreferenced.append(resource.name)
            continue
        stale = 0
        async for page in stored_objects(reader, resource, index, page_size):
            if should_stop():
                return report
            for item in page:
                report.tally.scanned += 1
                if is_stale(item.stored_format, expected):
                    stale += 1
                    if len(report.examples) < MAX_EXAMPLES:
                        report.examples.append(
                            f"{resource.name} {_display(item.stored_key)} ({item.stored_format.describe()})"
                        )
        report.tally.stale += stale
        report.stale_by_resource[resource.name] = stale
    if reference_label is not None:
        report.internal_stale = await _internal_stale(reader, reference_label, page_size)
    return report


async def _internal_stale(reader: EtcdReader, reference_label: str, page_size: int) -> int:
    stale = 0
    for location in NOT_REWRITABLE_LOCATIONS:
        async for page in reader.scan(f"{DEFAULT_ROOT}/{location}/", page_size):
            stale += sum(1 for entry in page if is_stale(classify(entry.value), reference_label))
    return stale


def _display(stored_key: StoredKey) -> str:
    return f"{stored_key.namespace}/{stored_key.name}" if stored_key.namespace else stored_key.name
