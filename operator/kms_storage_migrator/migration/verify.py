"""Read-back from etcd: how each selected resource is stored now, against how it should be.

Used by the Targeted walk (what to rewrite), the final verification, and VerifyOnly. Values
are classified and dropped at once; only keys, formats and counts leave here.

A resource the Targeted walk found entirely current (a :class:`CleanWalk`) is not read in full
again: etcd's MVCC says a key whose mod_revision is at most the walk's revision still holds the
value the walk read and judged, so verification lists keys and revisions only (no values) and
reads back the values of the keys changed since, and of those the walk did not read. With
nothing stale, that halves what a Targeted run reads from etcd.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from kms_storage_migrator.inventory.counts import ClassifiedObject
from kms_storage_migrator.inventory.scan import classify_page, rewritable_flags
from kms_storage_migrator.migration.ports import EtcdPort
from kms_storage_migrator.migration.progress import MAX_EXAMPLES, Verification, VerificationResult
from kms_storage_migrator.migration.resource_choice import ServedResource
from kms_storage_migrator.migration.staleness import StaleTally, is_rewritable
from kms_storage_migrator.storage.etcd import namespace_names
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
    namespaces: Sequence[bytes] = (),
) -> AsyncGenerator[list[ClassifiedObject], None]:
    """Pages of one resource's rewritable objects, in key order, optionally after ``after_key``.

    ``root`` is the apiserver's ``--etcd-prefix``. Resuming after a key is etcd's job (the range
    starts there), so a resumed walk does not read the keys it has already done. ``namespaces``
    (storage/etcd.namespace_names) cut a large resource into ranges etcd pages through cheaply.
    """
    prefix = etcd_prefix(resource.group, resource.resource, index, root=root)
    start_after = after_key.encode() if after_key is not None else None
    async for page in reader.scan(prefix, page_size, start_after=start_after, namespaces=namespaces):
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


# Beyond this many keys to read back one by one, reading the whole resource again is cheaper.
MAX_CHANGED_READS = 500


@dataclass(frozen=True)
class CleanWalk:
    """A resource a Targeted walk read in full at one etcd revision and found entirely current.

    Every key after ``start_after`` (the walk's starting checkpoint: the format probes come
    before it) whose mod_revision is at most ``revision`` was read by the walk and judged
    current under ``expected``; etcd has not changed its value since.
    """

    start_after: str | None
    revision: int
    expected: WriteFormat


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
    unchanged_since_walk: int = 0  # keys judged by revision alone: the walk read them, etcd kept them

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
        scanned = f"scanned {self.tally.scanned} keys, {self.tally.stale} stale"
        if self.unchanged_since_walk:
            scanned += (
                f" ({self.unchanged_since_walk} unchanged since the walk read them current: "
                "judged by etcd revision, the rest read back)"
            )
        notes = [scanned, *self.needs_attention]
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
    clean: Mapping[str, CleanWalk] | None = None,
) -> VerificationReport:
    """Scan every selected resource and count what is not in its current write format.

    ``failed`` names resources the migration gave up on: they are scanned like the others,
    and the report is never Verified while any is listed. ``clean``: resources a Targeted walk
    found entirely current, by name; only what changed since is read back (module docstring).
    """
    report = VerificationReport(failed=list(failed))
    clean_walks = clean or {}
    namespaces = await namespace_names(reader, root)
    for resource, current in resources:
        expected = current or reference
        if expected is None:
            report.unreferenced.append(resource.name)
            continue
        judge = _Judge(report, resource.name, expected)
        walk = clean_walks.get(resource.name)
        # The walk's verdicts hold only under the format judged now (a key rotated since: no).
        if walk is not None and walk.expected == expected:
            changed = await _changed_since(
                reader, resource, walk, index=index, page_size=page_size, root=root, namespaces=namespaces
            )
            if changed is not None:
                unchanged, keys = changed
                judge.unchanged(unchanged)
                for item in await _read_back(reader, keys, index, root):
                    judge.add(item)
                report.stale_by_resource[resource.name] = judge.stale
                continue
        pages = stored_objects(reader, resource, index, page_size, root=root, namespaces=namespaces)
        async for page in pages:
            if should_stop():
                return report
            for item in page:
                judge.add(item)
        report.stale_by_resource[resource.name] = judge.stale
    if reference is not None:
        report.internal_stale = await _internal_stale(reader, reference, page_size, root)
    return report


class _Judge:
    """One resource's keys counted into the report: stale, undecodable, and keys in use."""

    def __init__(self, report: VerificationReport, resource: str, expected: WriteFormat) -> None:
        self._report = report
        self._resource = resource
        self._expected = expected
        self._is_current = expected.judge()
        self.stale = 0

    def add(self, item: ClassifiedObject) -> None:
        report = self._report
        report.tally.scanned += 1
        self._count_key(item.format, 1)
        if not is_rewritable(item.format):
            report.undecodable += 1
            if len(report.undecodable_examples) < MAX_EXAMPLES:
                report.undecodable_examples.append(f"{self._resource} {_display(item.stored_key)}")
        elif not self._is_current(item.format):
            self.stale += 1
            report.tally.stale += 1
            if len(report.examples) < MAX_EXAMPLES:
                report.examples.append(
                    f"{self._resource} {_display(item.stored_key)} ({item.format.describe()})"
                )

    def unchanged(self, keys: int) -> None:
        """Keys the walk read current and etcd has kept: stored as ``expected`` says."""
        self._report.tally.scanned += keys
        self._report.unchanged_since_walk += keys
        self._count_key(self._expected.expected, keys)

    def _count_key(self, stored: StoredFormat, keys: int) -> None:
        if stored.kind is FormatKind.KMS_V2 and stored.key_id and keys:
            in_use = self._report.keys_in_use
            in_use[stored.key_id] = in_use.get(stored.key_id, 0) + keys


async def _changed_since(
    reader: EtcdPort,
    resource: ServedResource,
    walk: CleanWalk,
    *,
    index: ResourceIndex,
    page_size: int,
    root: EtcdRoot,
    namespaces: Sequence[bytes],
) -> tuple[int, list[bytes]] | None:
    """Keys and revisions only: how many keys the walk's verdict still covers, and the keys to
    read back (changed since, or not read by the walk); None when reading everything is cheaper."""
    prefix = etcd_prefix(resource.group, resource.resource, index, root=root)
    after = walk.start_after.encode() if walk.start_after is not None else b""
    unchanged = 0
    changed: list[bytes] = []
    async for page in reader.scan(prefix, page_size, keys_only=True, namespaces=namespaces):
        flags = rewritable_flags([entry.key for entry in page], index, root=root)
        for entry, rewritable in zip(page, flags, strict=True):
            if not rewritable:
                continue  # neither walked nor verified (stored_objects leaves it out too)
            if entry.key > after and entry.mod_revision <= walk.revision:
                unchanged += 1
            else:
                changed.append(entry.key)
                if len(changed) > MAX_CHANGED_READS:
                    return None
    return unchanged, changed


async def _read_back(
    reader: EtcdPort, keys: Sequence[bytes], index: ResourceIndex, root: EtcdRoot
) -> list[ClassifiedObject]:
    """The keys' values now, classified (a key deleted since is gone from the count)."""
    entries = [entry for entry in [await reader.get(key) for key in keys] if entry is not None]
    return classify_page(entries, index, root=root)


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
