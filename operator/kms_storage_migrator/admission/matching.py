"""Which webhooks admission calls for the migration's no-op write of one object. Pure.

The write is a PATCH (merge patch or apply) of an existing object, which admission sees as
operation UPDATE on the main resource, never a subresource. The rules follow the apiserver's
own matchers (``k8s.io/apiserver/pkg/admission/plugin/webhook/predicates``):

- a rule matches when its scope, operations, apiGroups, apiVersions and resources all match;
  ``"*"`` and ``"*/*"`` (and ``"name/*"``) cover the main resource, ``"name/status"`` does not;
- with matchPolicy Equivalent (the default), a rule naming the same stored resource in another
  version (or under a second name: ``events.k8s.io/events`` is core ``events``) matches too;
  that the apiserver serves that version is not checked, which can only over-report;
- namespaceSelector applies to namespaced objects (against their namespace's labels) and to
  Namespaces themselves (their own labels); other cluster-scoped objects never skip a webhook;
- objectSelector is checked against the object's labels (old and new are the same here).

What cannot be decided says so: labels that are unknown (Targeted mode knows names from etcd
keys only), a selector that could not be read, matchConditions (CEL). Such a webhook *may*
intercept the write; a guard must treat it as intercepting.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from kms_storage_migrator.admission.selectors import LabelSelector
from kms_storage_migrator.admission.webhooks import MatchPolicy, Rule, Webhook
from kms_storage_migrator.storage.keys import BUILTIN_LOCATIONS

OPERATION = "UPDATE"  # what admission calls a PATCH of an existing object
ADMISSION_GROUP = "admissionregistration.k8s.io"
# The apiserver never calls webhooks for its own admission configuration objects, so a webhook
# cannot lock itself in (IsExemptAdmissionConfigurationResource).
EXEMPT_RESOURCES = frozenset(
    {
        "validatingwebhookconfigurations",
        "mutatingwebhookconfigurations",
        "validatingadmissionpolicies",
        "validatingadmissionpolicybindings",
        "mutatingadmissionpolicies",
        "mutatingadmissionpolicybindings",
    }
)


class Resource(Protocol):
    """A served resource, as discovery names it (``ServedResource`` is one)."""

    @property
    def group(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def resource(self) -> str: ...

    @property
    def namespaced(self) -> bool: ...


@dataclass(frozen=True)
class Interception:
    """A webhook that admission calls (``certain``) or may call for our write of an object."""

    webhook: Webhook
    certain: bool
    doubts: tuple[str, ...] = ()  # why it is not certain, one clause each

    def describe(self) -> str:
        verb = "intercepts" if self.certain else "may intercept"
        text = f"{self.webhook.describe()} {verb} the write"
        return f"{text} ({'; '.join(self.doubts)})" if self.doubts else text


def _equivalents(group: str, resource: str) -> set[tuple[str, str]]:
    """The group/resource pairs stored in the same place (a second name for the same objects)."""
    locations = {
        entry.location for entry in BUILTIN_LOCATIONS if (entry.group, entry.resource) == (group, resource)
    }
    shared = {(entry.group, entry.resource) for entry in BUILTIN_LOCATIONS if entry.location in locations}
    return shared | {(group, resource)}


def _resource_listed(resources: frozenset[str], resource: str) -> bool:
    for entry in resources:
        name, _, sub = entry.partition("/")
        # Our write has no subresource: "x" and "x/*" match it, "x/status" does not.
        if name in ("*", resource) and sub in ("", "*"):
            return True
    return False


def _scope_matches(scope: str, resource: Resource) -> bool:
    if scope == "Cluster":
        return not resource.namespaced
    if scope == "Namespaced":
        return resource.namespaced
    return True


def rule_matches(rule: Rule, resource: Resource, policy: MatchPolicy = MatchPolicy.EQUIVALENT) -> bool:
    """Does this rule select an UPDATE of ``resource`` (or, under Equivalent, of a second name)?"""
    if not _scope_matches(rule.scope, resource) or rule.operations.isdisjoint({OPERATION, "*"}):
        return False
    if policy is MatchPolicy.EXACT:
        return (
            not rule.api_groups.isdisjoint({"*", resource.group})
            and not rule.api_versions.isdisjoint({"*", resource.version})
            and _resource_listed(rule.resources, resource.resource)
        )
    # Equivalent: admission converts the request to whichever version or name the rule lists.
    return bool(rule.api_versions) and any(
        not rule.api_groups.isdisjoint({"*", group}) and _resource_listed(rule.resources, name)
        for group, name in _equivalents(resource.group, resource.resource)
    )


def _selected(selector: LabelSelector | None, labels: Mapping[str, str] | None, what: str) -> bool | str:
    """True: selected; False: skipped; a string: cannot tell, and why."""
    if selector is None:
        return f"its {what} could not be read"
    if selector.matches_everything:
        return True
    if labels is None:
        return f"its {what} ({selector.describe()}) cannot be checked: the labels are unknown here"
    return selector.matches(labels)


def interception(
    webhook: Webhook,
    resource: Resource,
    *,
    namespace_labels: Mapping[str, str] | None = None,
    object_labels: Mapping[str, str] | None = None,
) -> Interception | None:
    """Whether admission calls ``webhook`` for our write of one object of ``resource``.

    ``namespace_labels``: the labels of the object's namespace; ``object_labels``: the object's
    own; None for either means unknown, which makes a selector a doubt instead of an answer.
    """
    if resource.group == ADMISSION_GROUP and resource.resource in EXEMPT_RESOURCES:
        return None
    if not any(rule_matches(rule, resource, webhook.match_policy) for rule in webhook.rules):
        return None
    # An exclusion counts only when certain: Exact, whatever the policy says (an Equivalent
    # match here may name a version the apiserver does not serve).
    if any(rule_matches(rule, resource, MatchPolicy.EXACT) for rule in webhook.exclude_rules):
        return None
    checks: list[bool | str] = [*webhook.doubts]
    if resource.group == "" and resource.resource == "namespaces":
        checks.append(_selected(webhook.namespace_selector, object_labels, "namespaceSelector"))
    elif resource.namespaced:
        checks.append(_selected(webhook.namespace_selector, namespace_labels, "namespaceSelector"))
    checks.append(_selected(webhook.object_selector, object_labels, "objectSelector"))
    if webhook.match_conditions:
        checks.append(
            f"it has {webhook.match_conditions} matchCondition(s), CEL that the operator cannot evaluate"
        )
    if False in checks:
        return None
    doubts = tuple(check for check in checks if isinstance(check, str))
    return Interception(webhook, certain=not doubts, doubts=doubts)


def interceptions(
    webhooks: Iterable[Webhook],
    resource: Resource,
    *,
    namespace_labels: Mapping[str, str] | None = None,
    object_labels: Mapping[str, str] | None = None,
) -> list[Interception]:
    """Every webhook of ``webhooks`` that does or may intercept our write of one object."""
    found = (
        interception(webhook, resource, namespace_labels=namespace_labels, object_labels=object_labels)
        for webhook in webhooks
    )
    return [each for each in found if each is not None]


def needs_namespace_labels(webhooks: Iterable[Webhook], resource: Resource) -> bool:
    """Whether judging ``resource`` needs the namespaces' labels (read them only then)."""
    return resource.namespaced and any(
        webhook.namespace_selector is not None
        and not webhook.namespace_selector.matches_everything
        and any(rule_matches(rule, resource, webhook.match_policy) for rule in webhook.rules)
        for webhook in webhooks
    )
