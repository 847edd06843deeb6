"""Every resource type the apiserver serves, narrowed to what lives in its own etcd and can be rewritten.

Discovery reads the preferred version of each group; :func:`choose_resources` (pure) keeps a
type when it can be listed and patched and is stored by this apiserver, and otherwise says why
it was dropped: subresource, virtual (no list or no patch: reviews, bindings, token requests),
served by an aggregated API server, or a second name for storage already covered.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kms_storage_migrator.kube import ApiError, KubeApi, TransportError
from kms_storage_migrator.migration.progress import DroppedResource
from kms_storage_migrator.migration.ratelimit import RetryableFailure, is_retryable_status, transient_retrying
from kms_storage_migrator.migration.selection import Selection, resource_name
from kms_storage_migrator.storage.keys import canonical

log = logging.getLogger(__name__)

# Label the kube-aggregator puts on the APIServices of groups served by kube-apiserver itself.
LOCAL_APISERVICE_LABEL = "kube-aggregator.kubernetes.io/automanaged"
DISCOVERY_ATTEMPTS = 5
APISERVICES_PATH = "/apis/apiregistration.k8s.io/v1/apiservices"


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
                dropped.append(DroppedResource(served.name, reason))
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


class DiscoveryError(Exception):
    """Discovery of a group kube-apiserver serves itself failed: migrating without it would be silent."""


async def discover(
    api: KubeApi, selection: Selection, *, attempts: int = DISCOVERY_ATTEMPTS
) -> DiscoveryResult:
    """Read discovery (preferred versions) and choose what to migrate."""
    documents, unavailable = await fetch_documents(api, attempts=attempts)
    result = choose_resources(documents, selection)
    dropped = sorted([*result.dropped, *unavailable], key=lambda d: d.name)
    return DiscoveryResult(result.chosen, tuple(dropped))


async def fetch_documents(
    api: KubeApi, *, attempts: int = DISCOVERY_ATTEMPTS
) -> tuple[list[GroupVersionResources], list[DroppedResource]]:
    """Every group's preferred-version document, and the aggregated groups that could not be read.

    Transient answers (429, 5xx, connection errors) are retried like writes. A group an
    aggregated API server serves is skipped when it stays unavailable (its objects are not in
    this etcd anyway); any other group failing raises :class:`DiscoveryError`, because its
    resources would silently drop out of the migration.
    """
    aggregated = await _aggregated_group_versions(api, attempts)
    core = await _get(api, "/api/v1", attempts)
    documents = [_document("", "v1", core, True)]
    unavailable: list[DroppedResource] = []
    groups = await _get(api, "/apis", attempts)
    for group in groups.get("groups") or []:
        name = str(group.get("name") or "")
        version = str((group.get("preferredVersion") or {}).get("version") or "")
        if not name or not version:
            continue
        # Groups with no APIService at all (apiregistration.k8s.io itself) are served locally too.
        local = aggregated is None or f"{version}.{name}" not in aggregated
        fetched = await _fetch_group(api, name, version, local, attempts)
        if isinstance(fetched, DroppedResource):
            unavailable.append(fetched)
        else:
            documents.append(fetched)
    return documents, unavailable


async def _fetch_group(
    api: KubeApi, name: str, version: str, local: bool, attempts: int
) -> GroupVersionResources | DroppedResource:
    """One group's document, or why it is left out; raises when leaving it out would be silent loss."""
    try:
        body = await _get(api, f"/apis/{name}/{version}", attempts)
    except (ApiError, RetryableFailure) as error:
        cause = _describe(error)
        if isinstance(error, ApiError) and error.status == 404:
            # Removed between /apis and now (a CRD deleted): nothing of it left to migrate.
            return DroppedResource(f"{name}/*", "no longer served (404 during discovery)")
        if local:
            raise DiscoveryError(
                f"discovery of {name}/{version} failed ({cause}); it is served by kube-apiserver "
                "itself, so its resources cannot be left out"
            ) from error
        log.warning("discovery of aggregated %s/%s failed: %s", name, version, cause)
        return DroppedResource(f"{name}/*", f"aggregated API server unavailable ({cause}): not stored here")
    return _document(name, version, body, local)


async def _get(api: KubeApi, path: str, attempts: int) -> dict[str, Any]:
    return await _with_retries(lambda: api.get_json(path), attempts)


async def _with_retries(request: Callable[[], Awaitable[dict[str, Any]]], attempts: int) -> dict[str, Any]:
    """One request under the transient retry policy: a single 503 must not end or shrink a migration."""
    async for attempt in transient_retrying(attempts):
        with attempt:
            try:
                return await request()
            except TransportError as error:
                raise RetryableFailure("ConnectionError", str(error)) from error
            except ApiError as error:
                if is_retryable_status(error.status):
                    raise RetryableFailure(error.reason, error.message, error.retry_after) from error
                raise
    raise AssertionError("unreachable: tenacity either returns or re-raises")  # pragma: no cover


def _describe(error: ApiError | RetryableFailure) -> str:
    if isinstance(error, ApiError):
        return f"{error.status} {error.reason}"
    return error.reason


def _document(group: str, version: str, body: Mapping[str, Any], local: bool) -> GroupVersionResources:
    return GroupVersionResources(group, version, tuple(body.get("resources") or ()), local)


async def _aggregated_group_versions(api: KubeApi, attempts: int) -> set[str] | None:
    """Names of APIServices served by another API server, or None when they cannot be listed."""
    try:
        page = await _with_retries(
            lambda: api.list_metadata(APISERVICES_PATH, limit=500, continue_token=None), attempts
        )
    except (ApiError, RetryableFailure) as error:
        # Every group counts as local then: a failing group fails discovery rather than vanish.
        log.warning("cannot list APIServices (%s): treating every group as local", _describe(error))
        return None
    return {
        str(item["metadata"]["name"])
        for item in page.get("items") or []
        if LOCAL_APISERVICE_LABEL not in ((item.get("metadata") or {}).get("labels") or {})
    }
