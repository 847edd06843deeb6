"""What the engine needs of the apiserver and of etcd: small Protocols, so any stand-in type-checks.

``kube.KubeApi`` and ``storage.etcd.EtcdReader`` satisfy them; so do the in-memory fakes of the
unit tests, without casts or ignores.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Protocol

from kms_storage_migrator.kube import PatchAnswer
from kms_storage_migrator.storage.etcd import RawEntry


class ReadPort(Protocol):
    """Reading the apiserver: discovery documents and metadata-only list pages."""

    async def get_json(self, path: str) -> dict[str, Any]: ...

    async def list_metadata(self, path: str, *, limit: int, continue_token: str | None) -> dict[str, Any]: ...


class PatchPort(Protocol):
    """The no-op write."""

    async def patch(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        content_type: str = ...,
        params: Mapping[str, str] | None = None,
        answer: PatchAnswer = ...,  # a Table with only the new resourceVersion, unless asked
    ) -> dict[str, Any]: ...


class ApiPort(ReadPort, PatchPort, Protocol):
    """Everything a migration asks of the apiserver."""


class EtcdPort(Protocol):
    """Read-only etcd: one key, a key count, and the keys under a prefix in pages (resumable)."""

    async def get(self, key: bytes | str) -> RawEntry | None: ...

    async def count(self, prefix: bytes | str) -> int: ...

    # How often a scan found its revision compacted and read on at a newer one (never reset).
    compaction_restarts: int
    # The etcd revision the latest scan page was read at (a scan is pinned to one revision).
    revision: int

    def scan(
        self,
        prefix: bytes | str,
        page_size: int = ...,
        *,
        keys_only: bool = ...,  # values left empty: keys and mod revisions only
        start_after: bytes | None = None,
        namespaces: Sequence[bytes] = ...,  # where a large range is cut (storage/etcd.py)
    ) -> AsyncIterator[list[RawEntry]]: ...
