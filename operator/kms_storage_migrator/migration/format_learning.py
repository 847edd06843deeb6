"""Learning how the apiserver writes now, by reading a write back from etcd.

The reference format comes from our own StorageMigration (its status was just written); each
resource's own format from its first object written with outcome rewritten or unchanged. Both
are :class:`WriteFormat` values: what "current" means for that resource.
"""

from __future__ import annotations

import logging

from kms_storage_migrator.migration.boundary import MigrationFailed
from kms_storage_migrator.migration.ports import EtcdPort
from kms_storage_migrator.migration.progress import MigrationProgress, ResourceProgress
from kms_storage_migrator.migration.verify import read_format
from kms_storage_migrator.storage.formats import FormatKind, StoredFormat
from kms_storage_migrator.storage.keys import EtcdRoot
from kms_storage_migrator.storage.write_format import WriteFormat

log = logging.getLogger(__name__)


class FormatLearner:
    """Read-backs for one migration; one at a time per resource, however many writes run."""

    def __init__(self, etcd: EtcdPort | None, progress: MigrationProgress, root: EtcdRoot) -> None:
        self._etcd = etcd
        self._progress = progress
        self._root = root
        self.reference: WriteFormat | None = None  # the current format of our own CR
        self._learning: set[str] = set()

    async def learn_reference(self, cr_key: str | None) -> None:
        """Our own CR's stored format; not finding it means we read the wrong place.

        Another --etcd-prefix or another etcd than the apiserver's would make every scan empty
        and a run "verified" with nothing rewritten, so that is fatal.
        """
        if self._etcd is None or cr_key is None:
            return
        found = await read_format(self._etcd, cr_key)
        if found is None:
            raise MigrationFailed(
                f"this StorageMigration is not in etcd at {cr_key} (etcd prefix {self._root}): "
                "the operator reads another prefix or another etcd than the apiserver writes; "
                "pass the apiserver's --etcd-prefix to the operator (run --etcd-prefix)"
            )
        self.reference = WriteFormat.of(found[0], f"StorageMigration at {cr_key}")
        self._note_key_id(found[0])

    def wants(self, entry: ResourceProgress) -> bool:
        """Whether a read-back after this resource's next write would teach anything."""
        return self._etcd is not None and entry.write_format is None and entry.name not in self._learning

    async def learn_from(self, entry: ResourceProgress, key: str) -> None:
        """Read back ``key`` just written: its format is how this resource is written now."""
        if not self.wants(entry):
            return
        assert self._etcd is not None  # wants() says so
        self._learning.add(entry.name)  # one read-back per resource, not one per parallel write
        try:
            found = await read_format(self._etcd, key)
        finally:
            self._learning.discard(entry.name)
        if found is None or found[0].kind is FormatKind.UNKNOWN:
            return
        entry.write_format = WriteFormat.of(found[0]).label
        self._note_key_id(found[0])
        log.info("%s: current write format %s (read back from %s)", entry.name, entry.write_format, key)

    def expected(self, entry: ResourceProgress) -> WriteFormat | None:
        """What a stored object of this resource must be to be current (None: unknown).

        The status keeps the resource's format as its label, so a resumed run judges alike.
        """
        learnt = WriteFormat.parse(entry.write_format) if entry.write_format else None
        return learnt or self.reference

    def _note_key_id(self, stored: StoredFormat) -> None:
        if stored.kind is FormatKind.KMS_V2 and stored.key_id and self._progress.key_id is None:
            self._progress.key_id = stored.key_id
