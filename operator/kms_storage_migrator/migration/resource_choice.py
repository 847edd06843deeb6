"""Which served resource types a migration covers, and why each other one is left out. Pure.

:func:`choose_resources` keeps a type when it can be listed and patched and is stored by this
apiserver, and otherwise says why it was dropped: subresource, virtual (no list or no patch:
reviews, bindings, token requests), served by an aggregated API server, or a second name for
storage already covered. ``discovery.py`` fetches the documents it reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kms_storage_migrator.migration.selection import Selection, resource_name
from kms_storage_migrator.storage.keys import canonical


@dataclass(frozen=True)
class DroppedResource:
    """A served type the migration leaves out, and why (shown in status)."""

    name: str
    reason: str
    # Served by an aggregated API server, which keeps its objects in its own storage: preflight
    # names these (kept in memory only; discovery runs again on every resume).
    aggregated: bool = False

    def to_status(self) -> dict[str, str]:
        return {"name": self.name, "reason": self.reason}


@dataclass(frozen=True)
class ServedResource:
    group: str
    version: str
    resource: str
    kind: str
    namespaced: bool
    verbs: frozenset[str] = field(default_factory=frozenset)

    @property
    def name(self) -> str:
        return resource_name(self.group, self.resource)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def _root(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    def collection_path(self) -> str:
        """The all-namespaces list path."""
        return f"{self._root}/{self.resource}"

    def object_path(self, namespace: str | None, name: str) -> str:
        if self.namespaced and namespace:
            return f"{self._root}/namespaces/{namespace}/{self.resource}/{name}"
        return f"{self._root}/{self.resource}/{name}"


@dataclass(frozen=True)
class GroupVersionResources:
    """One discovery document: the resources of one group/version."""

    group: str
    version: str
    resources: tuple[Mapping[str, Any], ...]
    local: bool = True  # False when an aggregated API server serves it


@dataclass(frozen=True)
class DiscoveryResult:
    chosen: tuple[ServedResource, ...]
    dropped: tuple[DroppedResource, ...]


def choose_resources(documents: Iterable[GroupVersionResources], selection: Selection) -> DiscoveryResult:
    """Keep the selected resources that are stored in this apiserver's etcd and can be rewritten."""
    chosen: list[ServedResource] = []
    dropped: list[DroppedResource] = []
    subresources = 0
    for document in documents:
        for entry in document.resources:
            plural = str(entry.get("name") or "")
            if not plural:
                continue
            if "/" in plural:
                subresources += 1
                continue
            served = ServedResource(
                group=document.group,
                version=document.version,
                resource=plural,
                kind=str(entry.get("kind") or ""),
                namespaced=bool(entry.get("namespaced")),
                verbs=frozenset(str(v) for v in entry.get("verbs") or ()),
            )
            if not selection.selects(served.group, served.resource):
                continue
            reason = _drop_reason(served, document.local)
            if reason:
                dropped.append(DroppedResource(served.name, reason, aggregated=not document.local))
            else:
                chosen.append(served)
    if subresources:
        dropped.append(
            DroppedResource("*/*/<subresource>", f"{subresources} subresources: stored with their parent")
        )
    chosen.sort(key=lambda r: r.name)
    dropped.sort(key=lambda d: d.name)
    return DiscoveryResult(tuple(chosen), tuple(dropped))


def _drop_reason(served: ServedResource, local: bool) -> str | None:
    if not local:
        return "served by an aggregated API server, not stored in this apiserver's etcd"
    owner = canonical(served.group, served.resource)
    if (owner.group, owner.resource) != (served.group, served.resource):
        # Served under two names, stored once (events): rewrite through the canonical name only.
        return f"second name for storage already covered by {resource_name(owner.group, owner.resource)}"
    if "list" not in served.verbs:
        return "virtual: cannot be listed (not stored)"
    if "patch" not in served.verbs:
        return "cannot be patched (not stored, or read-only)"
    return None
