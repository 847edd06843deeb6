"""Every preflight check, asked of the real cluster: the I/O, in one place, for both callers.

The migration's Preflight phase (``migration/runner.py``) and the ``preflight`` command run the
same survey; every answer is judged by a pure module (``write_target.py``,
``resource_access.py``, ``conversion.py``, ``etcd_access.py``, ``findings.py``). Read-only: access
reviews, /metrics, lists with limit=1, and an etcd Txn that cannot write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from kms_storage_migrator.admission.matching import Resource
from kms_storage_migrator.admission.policy import MutatingWebhookPolicy
from kms_storage_migrator.admission.reader import intercepting_webhooks
from kms_storage_migrator.admission.webhooks import Webhook
from kms_storage_migrator.kube import STORAGE_READ_ERROR, ApiError, KubeApi, TransportError
from kms_storage_migrator.preflight.aggregated import judge_aggregated
from kms_storage_migrator.preflight.conversion import (
    CONVERSION_CHECK,
    ConversionWebhook,
    conversion_webhooks,
    judge_conversion,
)
from kms_storage_migrator.preflight.etcd_probe import check_reach, check_read_only
from kms_storage_migrator.preflight.exposure import exposed_secrets, exposure_unknown, judge_exposure
from kms_storage_migrator.preflight.findings import (
    Finding,
    Verdict,
    etcd_unreachable,
    judge_encryption,
    metrics_unreadable,
)
from kms_storage_migrator.preflight.resource_access import (
    SelectedResource,
    covered_by_wildcard,
    judge_access_summary,
    judge_resource_access,
    judge_wildcard,
    resource_permissions,
    wildcard_permissions,
)
from kms_storage_migrator.preflight.reviews import Subject, review, who
from kms_storage_migrator.preflight.webhook_findings import (
    WEBHOOK_CHECK,
    Address,
    Reachability,
    address_of,
    judge_webhook,
)
from kms_storage_migrator.preflight.write_target import judge_write_target
from kms_storage_migrator.storage.etcd import EtcdReader, EtcdUnavailable
from kms_storage_migrator.storage.keys import DEFAULT_ROOT, EtcdRoot
from kms_storage_migrator.storage.write_format import WriteFormat

CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
SECRETS = "core/secrets"
REVIEW_CONCURRENCY = 8  # access reviews in flight at once: cheap for the apiserver, quick for us
CONNECT_TIMEOUT_SECONDS = 3.0  # a webhook server that takes longer to accept is as good as away


class SurveyedResource(Resource, Protocol):
    """A selected resource as discovery serves it (the engine's ``ServedResource`` is one)."""

    @property
    def name(self) -> str: ...


class PreflightSurvey:
    """The checks of one cluster; ``run`` asks them for one migration's selected resources."""

    def __init__(
        self,
        api: KubeApi,
        etcd: EtcdReader | None = None,
        *,
        root: EtcdRoot = DEFAULT_ROOT,
        subject: Subject | None = None,
        caller: str | None = None,
        wait_out_outages: bool = False,
    ) -> None:
        self._api = api
        self._etcd = etcd
        self._root = root
        self._subject = subject
        self._who = caller or who(subject)  # how messages name whoever the reviews are about
        # A migration waits an etcd outage out (the phase is kept); the command reports it.
        self._wait_out_outages = wait_out_outages

    async def run(
        self,
        resources: Sequence[SurveyedResource],
        reference: WriteFormat | None,
        mutating_webhooks: MutatingWebhookPolicy = MutatingWebhookPolicy.REFUSE,
        *,
        secrets_exposure: bool = False,
        aggregated: Sequence[tuple[str, str]] = (),
    ) -> list[Finding]:
        """``reference``: our own StorageMigration's stored format, when the caller read it.

        ``aggregated``: (resource, reason) of what discovery left out as served by an aggregated
        API server; listed as a finding of its own.

        ``secrets_exposure`` lists Secret metadata to find kubectl's last-applied copies of their
        data: only for callers that list Secrets anyway (a Full run, the command), never Targeted.
        """
        findings = [judge_write_target(reference, await self._metrics())]
        findings += await self.permissions(resources)
        findings += await self.webhooks(resources, mutating_webhooks)
        findings += await self.conversion(resources)
        left_out = judge_aggregated(aggregated)
        if left_out is not None:
            findings.append(left_out)
        if secrets_exposure and any(r.name == SECRETS for r in resources):
            findings.append(await self._exposure())
        if self._etcd is not None:
            findings += await self._etcd_checks(self._etcd)
        return findings

    async def _etcd_checks(self, etcd: EtcdReader) -> list[Finding]:
        try:
            return [await check_reach(etcd, self._root), await check_read_only(etcd, self._root)]
        except EtcdUnavailable as error:
            if self._wait_out_outages:
                raise  # the driver keeps the phase and waits until etcd answers again
            return [etcd_unreachable(etcd.display, str(error))]

    async def _exposure(self) -> Finding:
        try:
            return judge_exposure(await exposed_secrets(self._api))
        except ApiError as error:
            # A Secret the apiserver cannot decode fails every list of Secrets (500
            # StorageReadError): no outage to wait out, and the Full walk steps past it later.
            if error.reason != STORAGE_READ_ERROR:
                _raise_if_transient(error)
            return exposure_unknown(error.status, error.reason)

    async def _metrics(self) -> Finding:
        try:
            return judge_encryption(await self._api.get_text("/metrics"))
        except (ApiError, TransportError) as error:
            return metrics_unreadable(str(error))

    async def permissions(self, resources: Sequence[SurveyedResource]) -> list[Finding]:
        subject = self._who
        wildcard = [await review(self._api, p, self._subject) for p in wildcard_permissions()]
        if covered_by_wildcard(wildcard):
            return [judge_wildcard(subject)]
        limit = asyncio.Semaphore(REVIEW_CONCURRENCY)

        async def judge(served: SurveyedResource) -> Finding | None:
            selected = SelectedResource(served.group, served.resource)
            async with limit:
                answers = [await review(self._api, p, self._subject) for p in resource_permissions(selected)]
            return judge_resource_access(selected, answers, subject)

        judged = await asyncio.gather(*(judge(served) for served in resources))
        refused = [f for f in judged if f is not None]
        failing = sum(f.verdict is Verdict.FAIL for f in refused)
        return [judge_access_summary(subject, len(resources), failing), *refused]

    async def conversion(self, resources: Sequence[SurveyedResource]) -> list[Finding]:
        custom = {r.name: r for r in resources if "." in r.group}  # CRD groups always hold a dot
        if not custom:
            return []
        try:
            crds = (await self._api.get_json(CRDS)).get("items") or []
        except ApiError as error:
            _raise_if_transient(error)
            return [
                Finding(
                    CONVERSION_CHECK,
                    Verdict.WARN,
                    f"cannot list CustomResourceDefinitions: {error}",
                    "grant list on customresourcedefinitions (the chart's role has it)",
                )
            ]
        hooks = conversion_webhooks(crds, custom)
        return [await self._try_conversion(hook, custom[hook.name]) for hook in hooks]

    async def _try_conversion(self, hook: ConversionWebhook, served: SurveyedResource) -> Finding:
        # The version the walk lists in, and the storage version: either may need the webhook.
        versions = [served.version, *([hook.storage_version] if hook.storage_version else [])]
        for version in dict.fromkeys(versions):
            path = f"/apis/{hook.group}/{version}/{hook.resource}"
            try:
                await self._api.list_metadata(path, limit=1, continue_token=None)
            except ApiError as error:
                return judge_conversion(hook, versions, f"{error.status} {error.reason}: {error.message}")
        return judge_conversion(hook, versions, None)

    async def webhooks(
        self, resources: Sequence[SurveyedResource], policy: MutatingWebhookPolicy
    ) -> list[Finding]:
        """One warning per admission webhook that intercepts (or may) our writes of a resource."""
        try:
            found = await intercepting_webhooks(self._api, resources)
        except ApiError as error:
            _raise_if_transient(error)
            return [
                Finding(
                    WEBHOOK_CHECK,
                    Verdict.WARN,
                    f"cannot list admission webhook configurations: {error}",
                    "grant list on mutatingwebhookconfigurations and validatingwebhookconfigurations",
                )
            ]
        intercepted: dict[Webhook, list[str]] = {}
        certain: dict[Webhook, bool] = {}
        for entry in found:
            for each in entry.interceptions:
                intercepted.setdefault(each.webhook, []).append(entry.resource.name)
                certain[each.webhook] = certain.get(each.webhook, False) or each.certain
        reach: dict[Address | None, Reachability] = {}
        findings = []
        for webhook, names in intercepted.items():
            address = address_of(webhook.endpoint)
            if address not in reach:
                reach[address] = await _connect(address)
            findings.append(judge_webhook(webhook, names, certain[webhook], reach[address], policy))
        return findings


def _raise_if_transient(error: ApiError) -> None:
    """An overloaded or failing apiserver is an outage for the driver, not a finding."""
    if error.status == 429 or error.status >= 500:
        raise error


async def _connect(address: Address | None) -> Reachability:
    """A TCP connect is enough: whether something accepts where the apiserver will call."""
    if address is None:
        return Reachability(None, "address not understood, not tried")
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(address.host, address.port), CONNECT_TIMEOUT_SECONDS
        )
    except TimeoutError:
        return Reachability(False, f"does not answer (no connect in {CONNECT_TIMEOUT_SECONDS:.0f} s)")
    except OSError as error:
        return Reachability(False, f"does not answer ({error.strerror or type(error).__name__})")
    writer.close()
    await writer.wait_closed()
    return Reachability(True, "answers")
