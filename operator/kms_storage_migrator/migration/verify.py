"""Read-back from etcd: how each selected resource is stored now, against how it should be.

Used by the Targeted walk (what to rewrite), the final verification, and VerifyOnly. Values
are classified and dropped at once; only keys, formats and counts leave here.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field

from kms_storage_migrator.inventory.counts import ClassifiedObject
from kms_storage_migrator.inventory.scan import classify_page
from kms_storage_migrator.migration.ports import EtcdPort
from kms_storage_migrator.migration.progress import MAX_EXAMPLES, Verification, VerificationResult
from kms_storage_migrator.migration.resource_choice import ServedResource
from kms_storage_migrator.migration.staleness import StaleTally, is_rewritable
from kms_storage_migrator.storage.formats import FormatKind, StoredFormat, classify
from kms_storage_migrator.storage.keys import (
    DEFAULT_ROOT,
    NOT_REWRITABLE_LOCATIONS,
    EtcdRoot,
    ResourceIndex,
    StoredKey,
    etcd_prefix,
)
from kms_storage_migrator.storage.write_format import WriteFormat


def resource_index(resources: Sequence[ServedResource]) -> ResourceIndex:
    """The custom-resource index keys.py needs, from discovery (built-ins are looked up first)."""
    return {(r.group, r.resource): r.namespaced for r in resources}


def object_key(
    resource: ServedResource,
    index: ResourceIndex,
    namespace: str | None,
    name: str,
    *,
    root: EtcdRoot = DEFAULT_ROOT,
) -> str:
    prefix = etcd_prefix(resource.group, resource.resource, index, root=root)
    return f"{prefix}{namespace}/{name}" if resource.namespaced and namespace else f"{prefix}{name}"


async def stored_objects(
    reader: EtcdPort,
    resource: ServedResource,
    index: ResourceIndex,
    page_size: int,
    *,
    after_key: str | None = None,
    root: EtcdRoot = DEFAULT_ROOT,
) -> AsyncGenerator[list[ClassifiedObject], None]:
    """Pages of one resource's rewritable objects, in key order, optionally after ``after_key``.

    ``root`` is the apiserver's ``--etcd-prefix``. Resuming after a key is etcd's job (the range
    starts there), so a resumed walk does not read the keys it has already done.
    """
    prefix = etcd_prefix(resource.group, resource.resource, index, root=root)
    start_after = after_key.encode() if after_key is not None else None
    async for page in reader.scan(prefix, page_size, start_after=start_after):
        # The scan's record of a stored object: one definition for scan, walk and verification.
        batch = [obj for obj in classify_page(page, index, root=root) if obj.stored_key.rewritable]
        if batch:
            yield batch


async def read_format(reader: EtcdPort, key: str) -> tuple[StoredFormat, int] | None:
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
    failed: list[str] = field(default_factory=list)  # resources the migration gave up on
    undecodable: int = 0  # values in no known format: never rewritten, need a human
    undecodable_examples: list[str] = field(default_factory=list)  # key names only
    keys_in_use: dict[str, int] = field(default_factory=dict)  # KMS v2 key id -> objects under it
    internal_stale: int = 0  # keys no API can rewrite (ranges, masterleases) not in the current format

    @property
    def needs_attention(self) -> list[str]:
        """Why the result cannot be Verified although nothing counted as stale."""
        reasons = []
        if self.unreferenced:
            reasons.append("not checked (write format unknown): " + _names(self.unreferenced))
        if self.failed:
            reasons.append("not migrated (resource failed): " + _names(self.failed))
        if self.undecodable:
            reasons.append(
                f"{self.undecodable} value(s) in no known format, not rewritten, e.g. "
                + ", ".join(self.undecodable_examples[:3])
            )
        return reasons

    def verification(self) -> Verification:
        if self.tally.stale:
            result = VerificationResult.STALE_FOUND
        elif self.needs_attention:
            # Nothing stale among what was checked, but not everything was checked or migrated.
            result = VerificationResult.UNVERIFIED
        else:
            result = VerificationResult.VERIFIED
        notes = [f"scanned {self.tally.scanned} keys, {self.tally.stale} stale", *self.needs_attention]
        if self.internal_stale:
            notes.append(
                f"{self.internal_stale} apiserver-internal keys (ranges, masterleases) in an older format: "
                "no API can rewrite them; the apiserver does on its next update of them"
            )
        return Verification(
            result,
            self.tally.scanned,
            self.tally.stale,
            self.examples[:MAX_EXAMPLES],
            "; ".join(notes),
            dict(self.keys_in_use),
        )


async def verify_resources(
    reader: EtcdPort,
    resources: Sequence[tuple[ServedResource, WriteFormat | None]],
    index: ResourceIndex,
    page_size: int,
    *,
    reference: WriteFormat | None,
    failed: Sequence[str] = (),
    should_stop: Callable[[], bool] = lambda: False,
    root: EtcdRoot = DEFAULT_ROOT,
) -> VerificationReport:
    """Scan every selected resource and count what is not in its current write format.

    ``failed`` names resources the migration gave up on: they are scanned like the others,
    and the report is never Verified while any is listed.
    """
    report = VerificationReport(failed=list(failed))
    for resource, current in resources:
        expected = current or reference
        if expected is None:
            report.unreferenced.append(resource.name)
            continue
        is_current = expected.judge()
        stale = 0
        async for page in stored_objects(reader, resource, index, page_size, root=root):
            if should_stop():
                return report
            for item in page:
                report.tally.scanned += 1
                if item.format.kind is FormatKind.KMS_V2 and item.format.key_id:
                    key_id = item.format.key_id
                    report.keys_in_use[key_id] = report.keys_in_use.get(key_id, 0) + 1
                if not is_rewritable(item.format):
                    report.undecodable += 1
                    if len(report.undecodable_examples) < MAX_EXAMPLES:
                        report.undecodable_examples.append(f"{resource.name} {_display(item.stored_key)}")
                elif not is_current(item.format):
                    stale += 1
                    if len(report.examples) < MAX_EXAMPLES:
                        report.examples.append(
                            f"{resource.name} {_display(item.stored_key)} ({item.format.describe()})"
                        )
        report.tally.stale += stale
        report.stale_by_resource[resource.name] = stale
    if reference is not None:
        report.internal_stale = await _internal_stale(reader, reference, page_size, root)
    return report


async def _internal_stale(reader: EtcdPort, reference: WriteFormat, page_size: int, root: EtcdRoot) -> int:
    is_current = reference.judge()
    stale = 0
    for location in NOT_REWRITABLE_LOCATIONS:
        async for page in reader.scan(root.location(location), page_size):
            stale += sum(1 for entry in page if not is_current(classify(entry.value)))
    return stale


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:5])
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _display(stored_key: StoredKey) -> str:
    return f"{stored_key.namespace}/{stored_key.name}" if stored_key.namespace else stored_key.name
