"""Discovery: the preferred version of every served group, read with the transient retry policy.

What to keep of it is decided in ``resource_choice.py`` (pure).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from kms_storage_migrator.kube import ApiError
from kms_storage_migrator.migration.boundary import (
    APISERVER,
    DiscoveryError,
    InfrastructureUnavailable,
    with_transient_retries,
)
from kms_storage_migrator.migration.ports import ReadPort
from kms_storage_migrator.migration.ratelimit import RetryableFailure
from kms_storage_migrator.migration.resource_choice import (
    DiscoveryResult,
    DroppedResource,
    GroupVersionResources,
    ServedResource,
    choose_resources,
)
from kms_storage_migrator.migration.selection import Selection

__all__ = ["DiscoveryError", "DiscoveryResult", "ServedResource", "discover", "fetch_documents"]

log = logging.getLogger(__name__)

# Label the kube-aggregator puts on the APIServices of groups served by kube-apiserver itself.
LOCAL_APISERVICE_LABEL = "kube-aggregator.kubernetes.io/automanaged"
DISCOVERY_ATTEMPTS = 5
APISERVICES_PATH = "/apis/apiregistration.k8s.io/v1/apiservices"


async def discover(
    api: ReadPort, selection: Selection, *, attempts: int = DISCOVERY_ATTEMPTS
) -> DiscoveryResult:
    """Read discovery (preferred versions) and choose what to migrate."""
    documents, unavailable = await fetch_documents(api, attempts=attempts)
    result = choose_resources(documents, selection)
    dropped = sorted([*result.dropped, *unavailable], key=lambda d: d.name)
    return DiscoveryResult(result.chosen, tuple(dropped))


async def fetch_documents(
    api: ReadPort, *, attempts: int = DISCOVERY_ATTEMPTS
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
    api: ReadPort, name: str, version: str, local: bool, attempts: int
) -> GroupVersionResources | DroppedResource:
    """One group's document, or why it is left out; raises when leaving it out would be silent loss."""
    try:
        body = await _get(api, f"/apis/{name}/{version}", attempts)
    except (ApiError, RetryableFailure) as error:
        cause = _describe(error)
        if isinstance(error, ApiError) and error.status == 404:
            # Removed between /apis and now (a CRD deleted): nothing of it left to migrate.
            return DroppedResource(f"{name}/*", "no longer served (404 during discovery)")
        if local and isinstance(error, RetryableFailure):
            # An outage, not a missing group: wait for the apiserver rather than fail.
            raise InfrastructureUnavailable(APISERVER, f"discovery of {name}/{version}: {cause}") from error
        if local:
            raise DiscoveryError(
                f"discovery of {name}/{version} failed ({cause}); it is served by kube-apiserver "
                "itself, so its resources cannot be left out"
            ) from error
        log.warning("discovery of aggregated %s/%s failed: %s", name, version, cause)
        return DroppedResource(
            f"{name}/*", f"aggregated API server unavailable ({cause}): not stored here", aggregated=True
        )
    return _document(name, version, body, local)


async def _get(api: ReadPort, path: str, attempts: int) -> dict[str, Any]:
    return await with_transient_retries(lambda: api.get_json(path), attempts)


def _describe(error: ApiError | RetryableFailure) -> str:
    if isinstance(error, ApiError):
        return f"{error.status} {error.reason}"
    return error.reason


def _document(group: str, version: str, body: Mapping[str, Any], local: bool) -> GroupVersionResources:
    return GroupVersionResources(group, version, tuple(body.get("resources") or ()), local)


async def _aggregated_group_versions(api: ReadPort, attempts: int) -> set[str] | None:
    """Names of APIServices served by another API server, or None when they cannot be listed."""
    try:
        page = await with_transient_retries(
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
