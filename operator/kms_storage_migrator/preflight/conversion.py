"""CRDs with a conversion webhook among the selected resources, and whether it converts now. Pure.

A custom resource whose CRD converts through a webhook is read and written through that
webhook whenever the version asked for is not the stored one: while it fails, every list page
and every write of the resource fails. So such a resource is a warning (the webhook must stay up
for the whole migration), and one whose trial list fails now is a failing finding for that
resource (it is marked Failed before any write; the others go on). Only names, versions and the
webhook's address are kept from the CRD.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kms_storage_migrator.preflight.findings import Finding, Verdict

CONVERSION_CHECK = "conversion webhook"


@dataclass(frozen=True)
class ConversionWebhook:
    group: str
    resource: str  # the CRD's plural
    crd: str
    storage_version: str
    endpoint: str  # "service <namespace>/<name>:<port><path>" or the URL

    @property
    def name(self) -> str:
        return f"{self.group}/{self.resource}"


def conversion_webhooks(
    crds: Iterable[Mapping[str, Any]], selected: Iterable[str]
) -> list[ConversionWebhook]:
    """The selected resources (``group/resource`` names) whose CRD converts through a webhook."""
    wanted = set(selected)
    found = []
    for crd in crds:
        spec = crd.get("spec") or {}
        group = str(spec.get("group") or "")
        plural = str((spec.get("names") or {}).get("plural") or "")
        conversion = spec.get("conversion") or {}
        if f"{group}/{plural}" not in wanted or conversion.get("strategy") != "Webhook":
            continue
        storage = next(
            (
                str(v.get("name"))
                for v in spec.get("versions") or []
                if isinstance(v, Mapping) and v.get("storage")
            ),
            "",
        )
        client = (conversion.get("webhook") or {}).get("clientConfig") or {}
        found.append(
            ConversionWebhook(
                group=group,
                resource=plural,
                crd=str((crd.get("metadata") or {}).get("name") or f"{plural}.{group}"),
                storage_version=storage,
                endpoint=endpoint_of(client),
            )
        )
    return sorted(found, key=lambda hook: hook.name)


def endpoint_of(client_config: Mapping[str, Any]) -> str:
    """Where the apiserver calls a webhook, for messages (never the caBundle)."""
    service = client_config.get("service")
    if isinstance(service, Mapping):
        port = service.get("port") or 443
        path = service.get("path") or ""
        return f"service {service.get('namespace')}/{service.get('name')}:{port}{path}"
    return str(client_config.get("url") or "(no clientConfig)")


def judge_conversion(hook: ConversionWebhook, versions: Iterable[str], error: str | None) -> Finding:
    """``error``: None when a one-item metadata list in each of ``versions`` succeeded."""
    asked = ", ".join(dict.fromkeys(versions))
    if error is None:
        return Finding(
            f"{CONVERSION_CHECK} {hook.name}",
            Verdict.WARN,
            f"CRD {hook.crd} converts through {hook.endpoint} (storage version {hook.storage_version}); "
            f"a list in {asked} converts now, but every read and write of it needs the webhook",
            "keep the conversion webhook up until the migration ends, or exclude the resource",
            resource=hook.name,
        )
    return Finding(
        f"{CONVERSION_CHECK} {hook.name}",
        Verdict.FAIL,
        f"CRD {hook.crd} converts through {hook.endpoint}, and a list in {asked} fails: {error}: it is "
        "not written",
        "fix the conversion webhook (is its service up, its caBundle right?), or exclude the resource "
        "in spec.resources.exclude",
        resource=hook.name,
    )
