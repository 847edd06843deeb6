"""Admission webhooks that intercept the migration's writes, as preflight findings. Pure.

Which webhook selects which resource is ``admission/`` (the apiserver's own matching rules);
here one warning per webhook: its kind, failurePolicy, where it is served and whether that
answered a TCP connect, and the selected resources it intercepts. A validating webhook may deny
the no-op write (those objects fail, named); a mutating one may change objects on it, so with
``spec.mutatingWebhooks: Refuse`` their objects are not written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from kms_storage_migrator.admission.policy import MutatingWebhookPolicy
from kms_storage_migrator.admission.webhooks import Webhook, WebhookKind
from kms_storage_migrator.preflight.findings import Finding, Verdict

WEBHOOK_CHECK = "admission webhook"
MAX_RESOURCES_NAMED = 4


@dataclass(frozen=True)
class Address:
    """Where a TCP connect tells whether the webhook's server is there."""

    host: str
    port: int


def address_of(endpoint: str) -> Address | None:
    """The host and port of an ``endpoint`` as ``admission/webhooks.py`` writes it, or None."""
    if endpoint.startswith("service "):
        reference, _, _ = endpoint.removeprefix("service ").partition(":")
        namespace, _, name = reference.partition("/")
        port_text = endpoint.rsplit(":", 1)[-1].split("/", 1)[0]
        if not namespace or not name or not port_text.isdigit():
            return None
        return Address(f"{name}.{namespace}.svc", int(port_text))
    try:
        parts = urlsplit(endpoint)
        port = parts.port or 443
    except ValueError:
        return None
    return Address(parts.hostname, port) if parts.hostname else None


@dataclass(frozen=True)
class Reachability:
    answered: bool | None  # None: not tried (no address)
    detail: str  # "answers", or why not


def judge_webhook(
    webhook: Webhook,
    resources: Sequence[str],
    certain: bool,
    reach: Reachability,
    policy: MutatingWebhookPolicy,
) -> Finding:
    names = ", ".join(resources[:MAX_RESOURCES_NAMED])
    more = len(resources) - MAX_RESOURCES_NAMED
    listed = names + (f" and {more} more" if more > 0 else "")
    kind = "mutating" if webhook.kind is WebhookKind.MUTATING else "validating"
    verb = "intercepts" if certain else "may intercept (selectors or matchConditions)"
    # The check already names the webhook; what matters most comes first (status keeps 300 chars).
    detail = (
        f"{kind} ({webhook.configuration}, failurePolicy {webhook.failure_policy}) {verb} the write "
        f"of {listed}; {webhook.endpoint}: {reach.detail}"
    )
    if webhook.kind is WebhookKind.MUTATING:
        if policy is MutatingWebhookPolicy.REFUSE:
            advice = (
                "the objects it intercepts are not written (spec.mutatingWebhooks Refuse): make it skip "
                "them, exclude the resources, or use spec.mutatingWebhooks Allow if its changes are harmless"
            )
        else:
            advice = "spec.mutatingWebhooks is Allow: a change it makes is reported as MutatedByWebhook"
    else:
        advice = "objects it denies fail and are named; make it allow the operator's no-op writes"
    if reach.answered is False and webhook.failure_policy == "Fail":
        down = "its server does not answer and failurePolicy is Fail, so the writes it intercepts fail"
        advice = f"{down}; {advice}"
    return Finding(f"{WEBHOOK_CHECK} {webhook.name}", Verdict.WARN, detail, advice)
