"""admissionregistration.k8s.io/v1 webhook configurations, read into what matching needs. Pure.

One configuration holds several webhooks; each is judged on its own (its rules, selectors and
matchConditions). Only names, rules, selectors and where the webhook is served are kept: the
caBundle and anything else are dropped at parse.

A MutatingAdmissionPolicy (CEL mutations run inside the apiserver) changes objects just like a
webhook, so one that a binding puts to work is read into the same shape: its matchConstraints
are the rules, its excludeResourceRules exclude. Narrowing by a binding's matchResources is not
evaluated (it can only make the policy apply to fewer objects), which the match says.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from kms_storage_migrator.admission.selectors import LabelSelector, SelectorError, parse_selector


class WebhookKind(StrEnum):
    MUTATING = "MutatingWebhookConfiguration"
    VALIDATING = "ValidatingWebhookConfiguration"
    MUTATING_POLICY = "MutatingAdmissionPolicy"

    @property
    def plural(self) -> str:
        return (
            "mutatingadmissionpolicies" if self is WebhookKind.MUTATING_POLICY else self.value.lower() + "s"
        )

    @property
    def list_path(self) -> str:
        return f"/apis/admissionregistration.k8s.io/v1/{self.plural}"


class MatchPolicy(StrEnum):
    EXACT = "Exact"
    EQUIVALENT = "Equivalent"  # the v1 default: a rule for another version of the resource matches


@dataclass(frozen=True)
class Rule:
    """One RuleWithOperations; empty lists match nothing, as the apiserver treats them."""

    operations: frozenset[str]
    api_groups: frozenset[str]
    api_versions: frozenset[str]
    resources: frozenset[str]  # "name", "name/sub", "*", "*/*", "name/*", "*/sub"
    scope: str = "*"  # Cluster, Namespaced or *


@dataclass(frozen=True)
class Webhook:
    kind: WebhookKind
    configuration: str  # the configuration object's name
    name: str  # the webhook's own name, as denials and "could not be called" messages show it
    failure_policy: str
    endpoint: str  # "service <namespace>/<name>:<port><path>" or the URL
    rules: tuple[Rule, ...]
    match_policy: MatchPolicy
    # None: a selector this module could not read; matching treats it as "may match".
    namespace_selector: LabelSelector | None
    object_selector: LabelSelector | None
    match_conditions: int  # CEL expressions, which the operator cannot evaluate
    exclude_rules: tuple[Rule, ...] = ()  # a policy's excludeResourceRules
    doubts: tuple[str, ...] = ()  # what about it the operator does not evaluate, whatever the object

    def describe(self) -> str:
        """'mutating webhook <name> (MutatingWebhookConfiguration <configuration>)'."""
        if self.kind is WebhookKind.MUTATING_POLICY:
            return f"mutating admission policy {self.name} ({self.kind.value})"
        word = "mutating" if self.kind is WebhookKind.MUTATING else "validating"
        return f"{word} webhook {self.name} ({self.kind.value} {self.configuration})"


def webhooks_of(configuration: Mapping[str, Any], kind: WebhookKind) -> list[Webhook]:
    """Every webhook of one configuration object (as GET or a list item returns it)."""
    configuration_name = str((configuration.get("metadata") or {}).get("name") or "?")
    found = []
    for index, webhook in enumerate(configuration.get("webhooks") or []):
        if not isinstance(webhook, Mapping):
            continue
        field = f"{kind.value} {configuration_name} webhooks[{index}]"
        found.append(
            Webhook(
                kind=kind,
                configuration=configuration_name,
                name=str(webhook.get("name") or f"webhooks[{index}]"),
                failure_policy=str(webhook.get("failurePolicy") or "Fail"),
                endpoint=_endpoint(webhook.get("clientConfig")),
                rules=tuple(_rule(rule) for rule in webhook.get("rules") or [] if isinstance(rule, Mapping)),
                match_policy=(
                    MatchPolicy.EXACT if webhook.get("matchPolicy") == "Exact" else MatchPolicy.EQUIVALENT
                ),
                namespace_selector=_selector(webhook.get("namespaceSelector"), f"{field}.namespaceSelector"),
                object_selector=_selector(webhook.get("objectSelector"), f"{field}.objectSelector"),
                match_conditions=len(webhook.get("matchConditions") or []),
            )
        )
    return found


def webhooks_in(items: Iterable[Mapping[str, Any]], kind: WebhookKind) -> list[Webhook]:
    return [webhook for item in items for webhook in webhooks_of(item, kind)]


def bound_policies(
    policies: Iterable[Mapping[str, Any]], bindings: Iterable[Mapping[str, Any]]
) -> list[Webhook]:
    """The MutatingAdmissionPolicies that some binding puts to work (an unbound one does nothing)."""
    narrowed: dict[str, bool] = {}
    for binding in bindings:
        spec = binding.get("spec") or {}
        if isinstance(spec, Mapping) and spec.get("policyName"):
            name = str(spec["policyName"])
            # A binding without matchResources applies the policy wherever its constraints do.
            narrowed[name] = narrowed.get(name, True) and bool(spec.get("matchResources"))
    found = []
    for policy in policies:
        name = str((policy.get("metadata") or {}).get("name") or "")
        spec = policy.get("spec") or {}
        if name not in narrowed or not isinstance(spec, Mapping):
            continue
        constraints = spec.get("matchConstraints") or {}
        if not isinstance(constraints, Mapping):
            constraints = {}
        field = f"MutatingAdmissionPolicy {name} spec.matchConstraints"
        found.append(
            Webhook(
                kind=WebhookKind.MUTATING_POLICY,
                configuration=name,
                name=name,
                failure_policy=str(spec.get("failurePolicy") or "Fail"),
                endpoint="in the apiserver (CEL)",
                rules=tuple(
                    _rule(r) for r in constraints.get("resourceRules") or [] if isinstance(r, Mapping)
                ),
                match_policy=(
                    MatchPolicy.EXACT if constraints.get("matchPolicy") == "Exact" else MatchPolicy.EQUIVALENT
                ),
                namespace_selector=_selector(
                    constraints.get("namespaceSelector"), f"{field}.namespaceSelector"
                ),
                object_selector=_selector(constraints.get("objectSelector"), f"{field}.objectSelector"),
                match_conditions=len(spec.get("matchConditions") or []),
                # An exclusion by name is not applied: it would need the object's name here.
                exclude_rules=tuple(
                    _rule(r)
                    for r in constraints.get("excludeResourceRules") or []
                    if isinstance(r, Mapping) and not r.get("resourceNames")
                ),
                doubts=("its bindings' matchResources are not evaluated",) if narrowed[name] else (),
            )
        )
    return found


def _strings(values: object) -> frozenset[str]:
    return frozenset(str(value) for value in values) if isinstance(values, list) else frozenset()


def _rule(rule: Mapping[str, Any]) -> Rule:
    return Rule(
        operations=_strings(rule.get("operations")),
        api_groups=_strings(rule.get("apiGroups")),
        api_versions=_strings(rule.get("apiVersions")),
        resources=_strings(rule.get("resources")),
        scope=str(rule.get("scope") or "*"),
    )


def _selector(document: object, field: str) -> LabelSelector | None:
    try:
        return parse_selector(document, field)
    except SelectorError:
        return None


def _endpoint(client_config: object) -> str:
    if not isinstance(client_config, Mapping):
        return "?"
    if client_config.get("url"):
        return str(client_config["url"])  # the apiserver refuses URLs with user info or a query
    service = client_config.get("service")
    if isinstance(service, Mapping):
        port = service.get("port") or 443
        return f"service {service.get('namespace')}/{service.get('name')}:{port}{service.get('path') or ''}"
    return "?"
