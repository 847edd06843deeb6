"""The guarantee that a mutating webhook never changes stored content through a migration write.

The no-op write goes through admission like any UPDATE, so a mutating webhook can turn it into a
real change. With ``spec.mutatingWebhooks: Refuse`` (the default) an object that a mutating
webhook intercepts, or may intercept when the operator cannot tell, is not written at all: it
is a failure naming the webhook. With ``Allow`` those objects are written, and the write's
answer is compared with what was listed (``admission/mutation.py``), which detects changes to
metadata and, through ``generation``, to a spec; a change of ConfigMap or Secret data is
invisible to a metadata-only answer.

The configurations are read through the reader before each page (cached for 30 s, read again at
each new resource), with the transient retry policy: an apiserver away for longer ends in the
driver's outage wait, like a failed write. A refusal to list them ends a Refuse migration,
since nothing could be guaranteed; an Allow migration goes on, watching no write.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from kms_storage_migrator.admission.matching import (
    Interception,
    Resource,
    interceptions,
    needs_namespace_labels,
)
from kms_storage_migrator.admission.policy import MutatingWebhookPolicy
from kms_storage_migrator.admission.reader import WebhookReader
from kms_storage_migrator.admission.webhooks import Webhook, WebhookKind
from kms_storage_migrator.kube import ApiError
from kms_storage_migrator.migration.boundary import MigrationFailed, with_transient_retries
from kms_storage_migrator.migration.ports import ReadPort

log = logging.getLogger(__name__)

READ_ATTEMPTS = 5
MUTATING_WEBHOOK = "MutatingWebhook"  # the failure reason of an object not written (Refuse)
MUTATED_BY_WEBHOOK = "MutatedByWebhook"  # the failure reason of a write admission changed (Allow)
_SHOWN_WEBHOOKS = 2

T = TypeVar("T")


class MutationGuard:
    """Per page: which objects a mutating webhook may change on our write, and what to do then."""

    def __init__(
        self,
        api: ReadPort,
        policy: MutatingWebhookPolicy,
        *,
        reader: WebhookReader | None = None,
        attempts: int = READ_ATTEMPTS,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.policy = policy
        self._reader = reader or WebhookReader(api, kinds=(WebhookKind.MUTATING, WebhookKind.MUTATING_POLICY))
        self._attempts = attempts
        self._sleep = sleep
        self._resource: Resource | None = None
        self._webhooks: list[Webhook] = []
        self._namespaces: Mapping[str, Mapping[str, str]] = {}

    @property
    def refuses(self) -> bool:
        return self.policy is MutatingWebhookPolicy.REFUSE

    async def prepare(self, resource: Resource) -> None:
        """Read (or reuse) the configurations before writing a page of ``resource``."""
        if resource != self._resource:
            self._reader.expire()  # a new resource: configurations may have changed meanwhile
        try:
            webhooks = await self._retried(self._reader.webhooks)
            namespaces: Mapping[str, Mapping[str, str]] = {}
            if needs_namespace_labels(webhooks, resource):
                namespaces = await self._retried(self._reader.namespace_labels)
        except ApiError as error:
            if self.refuses:
                raise MigrationFailed(
                    f"cannot list mutating webhook configurations or namespaces (HTTP {error.status} "
                    f"{error.reason}): without them no write can be guaranteed free of webhook changes; "
                    "let the operator list admissionregistration.k8s.io mutatingwebhookconfigurations "
                    "and namespaces (the chart's ClusterRole does), or set spec.mutatingWebhooks: Allow"
                ) from error
            # Allow promised no guarantee; without the list no write is watched either.
            log.warning("cannot list mutating webhooks (HTTP %s): writes are not watched", error.status)
            webhooks, namespaces = [], {}
        if resource != self._resource:
            self._announce(resource, webhooks)
        self._resource, self._webhooks, self._namespaces = resource, webhooks, namespaces

    def intercepting(
        self, resource: Resource, namespace: str | None, labels: Mapping[str, str] | None
    ) -> list[Interception]:
        """The mutating webhooks that do or may intercept our write of one object.

        ``labels``: the object's labels as listed, None when unknown (Targeted mode).
        """
        return interceptions(
            self._webhooks,
            resource,
            namespace_labels=self._namespaces.get(namespace) if namespace else None,
            object_labels=labels,
        )

    def refusal(
        self, resource: Resource, namespace: str | None, labels: Mapping[str, str] | None
    ) -> str | None:
        """Why the object is not written (Refuse and a webhook in the way), else None."""
        if not self.refuses:
            return None
        found = self.intercepting(resource, namespace, labels)
        if not found:
            return None
        shown = "; ".join(each.describe() for each in found[:_SHOWN_WEBHOOKS])
        more = f"; and {len(found) - _SHOWN_WEBHOOKS} more" if len(found) > _SHOWN_WEBHOOKS else ""
        return f"{shown}{more}: not written, it could change the object (spec.mutatingWebhooks is Refuse)"

    def _announce(self, resource: Resource, webhooks: list[Webhook]) -> None:
        names = sorted(
            {each.webhook.name for each in interceptions(webhooks, resource)}  # selectors as doubts
        )
        if names:
            log.info(
                "%s/%s: mutating webhook(s) %s may intercept the migration's writes (%s)",
                resource.group or "core",
                resource.resource,
                ", ".join(names[:5]),
                "they are not written" if self.refuses else "written; changes to metadata are detected",
            )

    async def _retried(self, read: Callable[[], Awaitable[T]]) -> T:
        return await with_transient_retries(read, self._attempts, self._sleep)
