"""Reading the webhook configurations (and namespaces' labels) from the apiserver, kept fresh.

A migration can run for hours while webhooks come and go, so what was read is used for at most
``refresh_seconds`` and read again whenever the caller starts a new resource (:meth:`expire`).
Namespaces are listed (metadata only) only when some webhook's namespaceSelector needs them.
Errors are the API client's own (``ApiError``, ``TransportError``); the caller decides what a
failed read means (the migration retries transient ones, see ``migration/mutation_guard.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from kms_storage_migrator.admission.matching import Interception, Resource, interceptions
from kms_storage_migrator.admission.webhooks import Webhook, WebhookKind, bound_policies, webhooks_in
from kms_storage_migrator.kube import ApiError


class ReadPort(Protocol):
    """What is read: JSON documents and metadata-only pages (``kube.KubeApi`` and the engine's
    ``migration.ports.ReadPort`` fit; declared here so this package stands below the engine)."""

    async def get_json(self, path: str) -> dict[str, Any]: ...

    async def list_metadata(self, path: str, *, limit: int, continue_token: str | None) -> dict[str, Any]: ...


REFRESH_SECONDS = 30.0
NAMESPACES_PATH = "/api/v1/namespaces"
NAMESPACE_PAGE = 500
POLICY_BINDINGS_PATH = "/apis/admissionregistration.k8s.io/v1/mutatingadmissionpolicybindings"


class WebhookReader:
    """The webhook configurations of some kinds, re-read at most every ``refresh_seconds``."""

    def __init__(
        self,
        api: ReadPort,
        *,
        kinds: Iterable[WebhookKind] = (WebhookKind.MUTATING,),
        refresh_seconds: float = REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api
        self._kinds = tuple(kinds)
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._webhooks: list[Webhook] | None = None
        self._namespaces: dict[str, dict[str, str]] | None = None
        self._read_at = 0.0
        self.reads = 0  # how many times the configurations were listed (for tests and logs)

    def expire(self) -> None:
        """Read again at the next call: configurations may have changed since."""
        self._webhooks = None
        self._namespaces = None

    def _stale(self) -> bool:
        return self._webhooks is None or self._clock() - self._read_at >= self._refresh_seconds

    async def webhooks(self) -> list[Webhook]:
        if self._stale():
            found: list[Webhook] = []
            for kind in self._kinds:
                if kind is WebhookKind.MUTATING_POLICY:
                    found.extend(await self._policies())
                    continue
                listing = await self._api.get_json(kind.list_path)
                found.extend(webhooks_in(_items(listing), kind))
            self._webhooks, self._namespaces = found, None
            self._read_at = self._clock()
            self.reads += 1
        return list(self._webhooks or [])

    async def _policies(self) -> list[Webhook]:
        try:
            policies = _items(await self._api.get_json(WebhookKind.MUTATING_POLICY.list_path))
            if not policies:
                return []
            bindings = _items(await self._api.get_json(POLICY_BINDINGS_PATH))
        except ApiError as error:
            if error.status == 404:
                return []  # admissionregistration.k8s.io/v1 serves no such policies here
            raise
        return bound_policies(policies, bindings)

    async def namespace_labels(self) -> Mapping[str, Mapping[str, str]]:
        """Every namespace's labels, listed with the configurations they are judged against."""
        await self.webhooks()  # a refresh drops the namespaces too: read both at the same time
        if self._namespaces is None:
            labels: dict[str, dict[str, str]] = {}
            continue_token: str | None = None
            while True:
                page = await self._api.list_metadata(
                    NAMESPACES_PATH, limit=NAMESPACE_PAGE, continue_token=continue_token
                )
                for item in _items(page):
                    metadata = item.get("metadata")
                    if isinstance(metadata, Mapping) and metadata.get("name"):
                        found = metadata.get("labels")
                        labels[str(metadata["name"])] = (
                            {str(k): str(v) for k, v in found.items()} if isinstance(found, Mapping) else {}
                        )
                continue_token = _continue(page)
                if not continue_token:
                    break
            self._namespaces = labels
        return self._namespaces


def _items(listing: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    items = listing.get("items")
    return [item for item in items if isinstance(item, Mapping)] if isinstance(items, list) else []


def _continue(page: Mapping[str, Any]) -> str | None:
    metadata = page.get("metadata")
    token = metadata.get("continue") if isinstance(metadata, Mapping) else None
    return str(token) if token else None


R = TypeVar("R", bound=Resource)


@dataclass(frozen=True)
class ResourceInterceptions(Generic[R]):
    """The webhooks that do or may intercept our writes of one resource (objects unknown)."""

    resource: R
    interceptions: tuple[Interception, ...]


async def intercepting_webhooks(
    api: ReadPort,
    resources: Iterable[R],
    *,
    kinds: Iterable[WebhookKind] = (WebhookKind.MUTATING, WebhookKind.VALIDATING),
) -> list[ResourceInterceptions[R]]:
    """Per resource, the webhooks whose rules select our write (an UPDATE), for preflight.

    Objects are not known here, so a namespaceSelector or objectSelector shows as a doubt naming
    the selector ("may intercept"); each :class:`Interception` names the webhook, its kind and
    configuration, ``failure_policy`` and ``endpoint`` (service or URL). Resources no webhook
    selects are left out.
    """
    webhooks = await WebhookReader(api, kinds=kinds).webhooks()
    found = []
    for resource in resources:
        matched = interceptions(webhooks, resource)
        if matched:
            found.append(ResourceInterceptions(resource, tuple(matched)))
    return found
