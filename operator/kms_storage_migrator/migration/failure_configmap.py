"""The full failure list of one migration, kept in the ConfigMap ``<migration>-failures``.

It lives in the operator's namespace (the CR is cluster-scoped; an operator outside a pod, with
no namespace of its own, only logs the failures) with an owner reference to the
StorageMigration: a namespaced object may name a cluster-scoped owner, so the garbage collector
of kube-controller-manager deletes the list with the migration (the dev cluster runs no
controller-manager, so there it stays). ``blockOwnerDeletion`` is left unset: setting it needs
update on the owner's finalizers, and nothing has to wait for the list to go.

Written at most every ``interval`` while failures come in and once at the end, never per
object: a migration with thousands of failures makes a few dozen writes. Each failure is also
logged once at WARNING, names only. A write that fails is logged and tried again at the next
flush: the list is a report, it never stops a migration.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from kms_storage_migrator.kube import MERGE_PATCH, ApiError, KubeApi, TransportError
from kms_storage_migrator.leader import default_namespace
from kms_storage_migrator.migration.failure_ledger import FailureLedger, http_code
from kms_storage_migrator.migration.status_parts import Failure

log = logging.getLogger(__name__)

FLUSH_INTERVAL_SECONDS = 10.0
SUFFIX = "-failures"
LABEL = "kms-storage-migrator.io/failures-of"
_MAX_NAME = 253  # a ConfigMap name is a DNS subdomain
_MAX_LABEL_VALUE = 63


def list_name(migration: str) -> str:
    """``<migration>-failures``; a name too long for that keeps its start and gains a hash."""
    name = migration + SUFFIX
    if len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha256(migration.encode()).hexdigest()[:8]
    head = migration[: _MAX_NAME - len(SUFFIX) - len(digest) - 1].rstrip(".-")
    return f"{head}-{digest}{SUFFIX}"


def operator_namespace() -> str | None:
    """Where the operator's own objects go: the pod's namespace ($POD_NAMESPACE or the
    ServiceAccount's). None outside a pod: an operator run from a workstation has no namespace
    of its own, and an object it made in ``default`` would surprise (and be counted by) others."""
    return default_namespace(os.environ)


def _label_value(migration: str) -> str:
    if len(migration) <= _MAX_LABEL_VALUE:
        return migration
    return hashlib.sha256(migration.encode()).hexdigest()[:_MAX_LABEL_VALUE]


def list_selector(migration: str) -> str:
    """The label selector that finds a migration's list in whatever namespace the operator runs."""
    return f"{LABEL}={_label_value(migration)}"


class FailureConfigMap:
    """A :class:`FailureLedger` and the ConfigMap it is written to."""

    def __init__(
        self,
        api: KubeApi,
        *,
        migration: str,
        uid: str,
        namespace: str | None,
        api_version: str,
        kind: str,
        interval: float = FLUSH_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        ledger: FailureLedger | None = None,
    ) -> None:
        self._api = api
        self._migration = migration
        self._uid = uid
        self._owner = {"apiVersion": api_version, "kind": kind, "name": migration, "uid": uid}
        self.namespace = namespace
        self.name = list_name(migration)
        self._interval = interval
        self._clock = clock
        self._ledger = ledger or FailureLedger()
        self._written_version = 0
        self._written_at: float | None = None
        self._exists: bool | None = None  # unknown until the first write reads it
        self._last_error: str | None = None
        self._writing = asyncio.Lock()  # a ticker flush and a page-end flush never write at once

    @property
    def where(self) -> str:
        return f"ConfigMap {self.namespace}/{self.name}"

    def add(self, failure: Failure) -> None:
        if not self._ledger.add(failure):
            return
        if self.namespace is None and self._ledger.version == 1:
            log.warning(
                "no namespace of our own (not in a pod and POD_NAMESPACE unset): failed objects "
                "are listed in this log only, not in a ConfigMap %s",
                self.name,
            )
        where = f"{failure.namespace}/{failure.name}" if failure.namespace else failure.name
        code = http_code(failure.reason)
        # kube.py's reason for a Status without one is already "HTTP403": no need to say it twice.
        shown_code = f", HTTP {code}" if code is not None and not failure.reason.startswith("HTTP") else ""
        log.warning(
            "not rewritten: %s %s (%s%s)%s",
            failure.resource,
            where,
            failure.reason,
            shown_code,
            f"; full list in {self.where}" if self.namespace else "",
        )

    async def flush(self, *, final: bool = False) -> None:
        """Write the list if it changed and ``interval`` has passed (``final``: if it changed at all)."""
        async with self._writing:
            await self._flush(final)

    async def _flush(self, final: bool) -> None:
        if self.namespace is None or self._ledger.version == self._written_version:
            return
        if not final and self._written_at is not None and self._clock() - self._written_at < self._interval:
            return
        version = self._ledger.version
        self._written_at = self._clock()
        try:
            await self._write()
        except (ApiError, TransportError) as error:
            text = str(error)
            if text != self._last_error:  # once per kind of error, not every interval
                log.warning("cannot write the failure list to %s (tried again later): %s", self.where, text)
            self._last_error = text
            return
        self._written_version = version
        self._last_error = None

    async def _write(self) -> None:
        path = f"/api/v1/namespaces/{self.namespace}/configmaps"
        if self._exists is None:
            self._exists = await self._restore(f"{path}/{self.name}")
        data = self._ledger.to_data(self._migration)
        if self._exists:
            # The owner too: a list left by an earlier migration of this name names a gone owner,
            # which the garbage collector would act on.
            body = {"metadata": {"ownerReferences": [self._owner]}, "data": data}
            await self._api.patch(f"{path}/{self.name}", body, content_type=MERGE_PATCH)
            return
        try:
            await self._api.request("POST", path, body=self._new_config_map(data))
        except ApiError as error:
            if error.status != 409:
                raise
            self._exists = None  # written meanwhile (another replica): read it back next time
            raise
        self._exists = True

    async def _restore(self, path: str) -> bool:
        """Take back what an earlier operator wrote for this migration; False when there is none."""
        try:
            existing = await self._api.get_json(path)
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        owners = (existing.get("metadata") or {}).get("ownerReferences") or []
        if any(owner.get("uid") == self._uid for owner in owners):
            self._ledger.restore(existing.get("data") or {})
        # A list left by an earlier migration of the same name is overwritten, not merged.
        return True

    def _new_config_map(self, data: dict[str, str | None]) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {LABEL: _label_value(self._migration)},
                "ownerReferences": [self._owner],
            },
            "data": {key: value for key, value in data.items() if value is not None},
        }
