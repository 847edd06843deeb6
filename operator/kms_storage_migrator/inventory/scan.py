"""Walk etcd read-only and classify every stored object; aggregate into an :class:`Inventory`.

``scan_inventory`` tallies pages in bulk; ``classify_page`` turns one page into
:class:`ClassifiedObject` records, the record the operator's Targeted walk and verification
read too. Both hold one etcd page at a time, never the whole keyspace, and drop each value once
classified.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from kms_storage_migrator.errors import UserError
from kms_storage_migrator.inventory.counts import ClassifiedObject, Inventory
from kms_storage_migrator.storage.etcd import (
    DEFAULT_PAGE_SIZE,
    EtcdReader,
    KeyValue,
    RawEntry,
    namespace_names,
)
from kms_storage_migrator.storage.formats import StoredFormat, classify
from kms_storage_migrator.storage.keys import (
    DEFAULT_ROOT,
    EtcdRoot,
    GroupResource,
    ResourceIndex,
    canonical,
    etcd_prefix,
    parse_key,
    scan_boundaries,
)
from kms_storage_migrator.storage.write_format import WriteFormat

__all__ = [
    "classify_page",
    "crd_index_from_etcd",
    "require_apiserver_keys",
    "scan_inventory",
    "selection_prefixes",
    "tally_page",
]

CRD_LOCATION = "apiextensions.k8s.io/customresourcedefinitions"
# Every kube-apiserver stores its namespaces (default, kube-system) from its first start.
NAMESPACES_LOCATION = "namespaces"


async def require_apiserver_keys(reader: EtcdReader, root: EtcdRoot) -> None:
    """Fail, naming the prefix, when none of the apiserver's own keys are under ``root``.

    Reading the wrong place finds nothing stale, so a guard (``scan --fail-on-stale``, the
    operator's verification) would pass on data it never read.
    """
    namespaces = root.location(NAMESPACES_LOCATION)
    if not await reader.count(namespaces):
        raise UserError(
            f"etcd at {reader.display} has no keys under '{root.base}' that kube-apiserver writes "
            f"(none at {namespaces}): pass the apiserver's own --etcd-prefix (given: {root})"
        )


def classify_page(
    page: list[RawEntry], index: ResourceIndex, *, root: EtcdRoot = DEFAULT_ROOT
) -> list[ClassifiedObject]:
    """Classify one page of raw entries; the values are not kept."""
    return [
        ClassifiedObject(
            etcd_key=entry.key.decode("utf-8", errors="replace"),
            stored_key=parse_key(entry.key, index, root=root),
            format=classify(entry.value),
            mod_revision=entry.mod_revision,
        )
        for entry in page
    ]


def tally_page(
    page: Sequence[KeyValue], index: ResourceIndex, inventory: Inventory, *, root: EtcdRoot = DEFAULT_ROOT
) -> None:
    """Count one page into ``inventory``, exactly as recording each of its objects would.

    etcd returns keys in order, so neighbours mostly share a directory (one namespace of one
    resource) and a format (one cached StoredFormat object). Such a run is counted with one
    parse_key of its first key and one ``record_many``, sparing a StoredKey and a
    ClassifiedObject per key: what the counts use of a StoredKey (group, resource, rewritable)
    is the same for every key of a directory (see ``_shared_directory``).
    """
    root_prefix = root.base.encode()
    first_key = b""  # the run so far: its first key, its format, its directory and its length
    run_format: StoredFormat | None = None
    directory: bytes | None = None
    count = 0
    for key, value in page:
        stored = classify(value)
        if stored is run_format and _in_directory(key, directory):
            count += 1
            continue
        if run_format is not None:
            inventory.record_many(parse_key(first_key, index, root=root), run_format, count)
        first_key, run_format, count = key, stored, 1
        directory = _shared_directory(key, root_prefix)
    if run_format is not None:
        inventory.record_many(parse_key(first_key, index, root=root), run_format, count)


def rewritable_flags(
    keys: Sequence[bytes], index: ResourceIndex, *, root: EtcdRoot = DEFAULT_ROOT
) -> list[bool]:
    """Whether each key holds an object the API can rewrite, parsing one key per directory.

    As in :func:`tally_page`: keys of one directory (``_shared_directory``) parse alike, so a
    run of them gets the first one's answer; keys-only verification asks this of every key.
    """
    root_prefix = root.base.encode()
    flags: list[bool] = []
    directory: bytes | None = None
    verdict = False
    for key in keys:
        if not _in_directory(key, directory):
            verdict = parse_key(key, index, root=root).rewritable
            directory = _shared_directory(key, root_prefix)
        flags.append(verdict)
    return flags


def _in_directory(key: bytes, directory: bytes | None) -> bool:
    """Whether ``key`` names an object right in ``directory`` (from :func:`_shared_directory`),
    so it parses like the key that directory came from."""
    return (
        directory is not None
        and key.startswith(directory)
        and key.find(b"/", len(directory)) < 0  # no deeper directory
        and len(key) > len(directory)  # a name follows
        and key.isascii()  # so the name is valid UTF-8, as the first key's was
    )


def _shared_directory(key: bytes, root_prefix: bytes) -> bytes | None:
    """The directory (up to its last '/') whose other keys parse like ``key``, or None.

    parse_key takes group, resource and rewritability from the path segments before the name
    and from how many there are; the name only has to be a valid non-empty segment. That holds
    when the key is ASCII, lies under ``<root>/`` with at least one segment before the name,
    and has no empty segment (those, keys outside the root and non-UTF-8 keys are reported
    under a resource named after the whole key, so each stands alone).
    """
    slash = key.rfind(b"/")
    if (
        slash <= len(root_prefix)
        or slash == len(key) - 1
        or not key.startswith(root_prefix)
        or not key.isascii()
        or key.find(b"//", len(root_prefix) - 1, slash + 1) >= 0
    ):
        return None
    return key[: slash + 1]


def selection_prefixes(
    selection: Iterable[GroupResource] | None, index: ResourceIndex, *, root: EtcdRoot = DEFAULT_ROOT
) -> list[str]:
    """The etcd prefixes to scan: the whole root, or one per selected resource (shared ones once)."""
    if selection is None:
        return [root.base]
    prefixes: list[str] = []
    for wanted in selection:
        owner = canonical(wanted.group, wanted.resource)
        prefix = etcd_prefix(owner.group, owner.resource, index, root=root)
        if prefix not in prefixes:
            prefixes.append(prefix)
    return sorted(prefixes)


async def scan_inventory(
    reader: EtcdReader,
    index: ResourceIndex,
    expectation: WriteFormat | None,
    selection: Iterable[GroupResource] | None = None,
    *,
    page_size: int = DEFAULT_PAGE_SIZE,
    root: EtcdRoot = DEFAULT_ROOT,
    on_page: Callable[[int], None] | None = None,
) -> Inventory:
    """Count every stored object (or those of ``selection``) by resource and stored format.

    With an ``expectation``, rewritable objects stored any other way are counted as stale.
    A whole-root scan with no keys at all is a UserError (wrong etcd, wrong prefix).
    """
    inventory = Inventory(expectation)
    split_at = scan_boundaries(index, root=root)
    namespaces = await namespace_names(reader, root)
    for prefix in selection_prefixes(selection, index, root=root):
        # Page by page, in bulk, rather than through classify_page: an async step and a
        # ClassifiedObject per object would cost more than classifying it.
        pages = reader.scan_values(
            prefix, page_size, require_keys=selection is None, split_at=split_at, namespaces=namespaces
        )
        async for page in pages:
            tally_page(page, index, inventory, root=root)
            if on_page is not None:
                on_page(len(page))
        inventory.revision = max(inventory.revision, reader.revision)
    inventory.compaction_restarts = reader.compaction_restarts
    return inventory


async def crd_index_from_etcd(reader: EtcdReader, *, root: EtcdRoot = DEFAULT_ROOT) -> ResourceIndex:
    """The custom resources this apiserver serves, learnt from the CRD keys alone.

    A CRD's name is always ``<plural>.<group>``, so the keys (not the possibly encrypted values)
    are enough; the scope is left open and read from each object key's shape.
    """
    prefix = root.location(CRD_LOCATION)
    index: dict[tuple[str, str], bool | None] = {}
    async for page in reader.scan(prefix, keys_only=True):
        for entry in page:
            name = entry.key[len(prefix) :].decode("utf-8", errors="replace")
            plural, _, group = name.partition(".")
            if plural and group:
                index[(group, plural)] = None
    return index
