"""The Targeted walk: a resource's etcd keys in order, writing only the stale ones; its checkpoint.

The checkpoint is the last etcd key done. Before the walk, a few objects of each resource are
written as *format probes* (the first keys, so the checkpoint starts after them and no probe is
written or counted twice): reading one back says how the apiserver writes that resource now.
Each resource is read from etcd once here; verification reads it again unless the walk found
it entirely current (then only keys, revisions and what changed since: verify.py). The estimate
is a key count (no values). Objects found current are counted unchanged, so the totals cover every key.

It never reads objects through the API: names and resourceVersions come from etcd keys and mod
revisions, and a write's answer (kube.py) holds only the new resourceVersion. So no answer
carries object metadata, nor Secret data copied into kubectl's last-applied annotation; the
apiserver's audit log confirms it (tests/integration/test_faults_secrets_audit.py).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

from kms_storage_migrator.inventory.counts import ClassifiedObject
from kms_storage_migrator.migration.format_learning import FormatLearner
from kms_storage_migrator.migration.page_writer import PageWriter, StoredTarget
from kms_storage_migrator.migration.ports import EtcdPort
from kms_storage_migrator.migration.progress import ResourcePhase, ResourceProgress
from kms_storage_migrator.migration.resource_choice import ServedResource
from kms_storage_migrator.migration.rewrite import RewriteTarget
from kms_storage_migrator.migration.staleness import is_rewritable, needs_rewrite
from kms_storage_migrator.migration.unreadable import Unreadable
from kms_storage_migrator.migration.verify import CleanWalk, stored_objects
from kms_storage_migrator.migration.walk import Page
from kms_storage_migrator.storage.etcd import namespace_names
from kms_storage_migrator.storage.keys import EtcdRoot, ResourceIndex, etcd_prefix

FORMAT_PROBES = 5  # objects tried per resource to learn its current write format
# The walk_restarts cause: etcd compacted the revision of the scan, which read on at a newer one.
ETCD_COMPACTED = "etcd-compacted"


class TargetedWalk:
    # A redone page is read from etcd again: what the lost page wrote is current by then, and
    # counted unchanged, so a crash costs reads, not writes.
    redo_writes = False

    def __init__(
        self,
        etcd: EtcdPort,
        writer: PageWriter,
        learner: FormatLearner,
        *,
        page_size: int,
        root: EtcdRoot,
    ) -> None:
        self._etcd = etcd
        self._writer = writer
        self._learner = learner
        self._page_size = page_size
        self._root = root
        self.index: ResourceIndex = {}  # set after discovery
        # Resources walked whole in this process and found entirely current (verify.py).
        self.clean: dict[str, CleanWalk] = {}
        self._namespaces: list[bytes] = []  # where a large resource's range is cut (prepare)

    async def prepare(self, pending: list[tuple[ResourceProgress, ServedResource]]) -> None:
        self._namespaces = await namespace_names(self._etcd, self._root)
        for entry, served in pending:
            await self._probe_format(entry, served)
            if self._learner.expected(entry) is None:
                entry.phase = ResourcePhase.FAILED
                entry.message = "cannot learn the current write format (no object could be rewritten)"
                continue
            prefix = etcd_prefix(served.group, served.resource, self.index, root=self._root)
            keys = await self._etcd.count(prefix)
            entry.scanned = keys
            # Every key is counted once (written or found current), those before the checkpoint
            # included: the key count is the estimate.
            entry.estimate = max(entry.counts.done, keys)

    async def _probe_format(self, entry: ResourceProgress, served: ServedResource) -> None:
        """Write the first few objects until one read-back shows the resource's current format."""
        if not self._learner.wants(entry):
            return
        pages = self._stored(served, FORMAT_PROBES, entry.checkpoint.last_key)
        try:
            async for page in pages:
                for item in page:
                    if not is_rewritable(item.format):
                        continue  # undecodable: the apiserver would answer 500; verification reports it
                    await self._writer.write_one(entry, _target(served, item))
                    entry.checkpoint.last_key = item.etcd_key  # committed with the counts below
                    if entry.write_format is not None:
                        return
                return  # only the first few objects: a resource nobody may write is not read twice
        finally:
            await pages.aclose()
            # Probe outcomes are final: keep their counts across a restart, walk after them.
            entry.commit(last_key=entry.checkpoint.last_key)

    async def pages(self, entry: ResourceProgress, served: ServedResource) -> AsyncIterator[Page]:
        expected = self._learner.expected(entry)
        if expected is None:
            entry.phase = ResourcePhase.FAILED
            entry.message = "current write format unknown"
            return
        start = last = entry.checkpoint.last_key
        restarts = first_restarts = self._etcd.compaction_restarts
        self.clean.pop(entry.name, None)
        clean, revision = True, 0
        async for page in self._stored(served, self._page_size, last):
            for _ in range(self._etcd.compaction_restarts - restarts):
                self._writer.walk_restarted(entry, ETCD_COMPACTED)
            restarts = self._etcd.compaction_restarts
            revision = self._etcd.revision
            targets = [_target(served, item) for item in page if needs_rewrite(item.format, expected)]
            # Values in no known format are never written (the apiserver cannot decode them
            # either): each is a failure, as in a Full walk. The rest are current: unchanged.
            unreadable = [_unreadable(item) for item in page if not is_rewritable(item.format)]
            clean = clean and not targets and not unreadable
            entry.estimate = max(entry.estimate, entry.counts.done + len(page))
            last = page[-1].etcd_key
            current = len(page) - len(targets) - len(unreadable)
            yield Page(targets, last, current=current, unreadable=unreadable)
        entry.estimate = entry.counts.done
        if clean and restarts == first_restarts:
            # Read whole at one revision (no compaction moved it), and nothing to write: what
            # verification may take from this walk instead of reading every value again.
            self.clean[entry.name] = CleanWalk(start, revision, expected)
        yield Page([], last, final=True)

    def _stored(
        self, served: ServedResource, page_size: int, after: str | None
    ) -> AsyncGenerator[list[ClassifiedObject], None]:
        return stored_objects(
            self._etcd,
            served,
            self.index,
            page_size,
            after_key=after,
            root=self._root,
            namespaces=self._namespaces,
        )


def _unreadable(item: ClassifiedObject) -> Unreadable:
    return Unreadable(item.stored_key.namespace, item.stored_key.name, item.etcd_key)


def _target(served: ServedResource, item: ClassifiedObject) -> RewriteTarget:
    # etcd's mod_revision is the resourceVersion: the write is pinned to the version read. The
    # key and format go along so a failure can say how the object is stored (read from etcd).
    return StoredTarget(
        served,
        item.stored_key.namespace,
        item.stored_key.name,
        str(item.mod_revision),
        etcd_key=item.etcd_key,
        stored=item.format,
    )
