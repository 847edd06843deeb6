"""Which webhooks admission calls for the no-op write (an UPDATE) of one object: rules,
selectors, matchPolicy, exemptions and what cannot be decided (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from kms_storage_migrator.admission.matching import interception, interceptions, needs_namespace_labels
from kms_storage_migrator.admission.webhooks import MatchPolicy, WebhookKind, webhooks_of
from kms_storage_migrator.migration.resource_choice import ServedResource

CONFIGMAPS = ServedResource("", "v1", "configmaps", "ConfigMap", namespaced=True)
NAMESPACES = ServedResource("", "v1", "namespaces", "Namespace", namespaced=False)
DEPLOYMENTS = ServedResource("apps", "v1", "deployments", "Deployment", namespaced=True)
CLUSTERROLES = ServedResource(
    "rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", namespaced=False
)
CORE_EVENTS = ServedResource("", "v1", "events", "Event", namespaced=True)
WIDGETS = ServedResource("example.com", "v2", "widgets", "Widget", namespaced=True)
MUTATING_CONFIGS = ServedResource(
    "admissionregistration.k8s.io",
    "v1",
    "mutatingwebhookconfigurations",
    "MutatingWebhookConfiguration",
    namespaced=False,
)


def _configuration(**webhook: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "stamp.example.com",
        "clientConfig": {"service": {"namespace": "hooks", "name": "stamper", "path": "/mutate"}},
        "rules": [
            {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"], "resources": ["configmaps"]}
        ],
        "failurePolicy": "Ignore",
    }
    body.update(webhook)
    return {"metadata": {"name": "stamp"}, "webhooks": [body]}


def _webhook(**webhook: Any) -> Any:
    (parsed,) = webhooks_of(_configuration(**webhook), WebhookKind.MUTATING)
    return parsed


def _rule(**rule: Any) -> list[dict[str, Any]]:
    base = {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"], "resources": ["configmaps"]}
    base.update(rule)
    return [base]


def test_a_configuration_is_read_into_name_kind_policy_and_endpoint() -> None:
    webhook = _webhook()
    assert (webhook.kind, webhook.configuration, webhook.name) == (
        WebhookKind.MUTATING,
        "stamp",
        "stamp.example.com",
    )
    assert webhook.failure_policy == "Ignore"
    assert webhook.endpoint == "service hooks/stamper:443/mutate"
    assert webhook.match_policy is MatchPolicy.EQUIVALENT  # the v1 default
    assert (
        _webhook(clientConfig={"url": "https://hook.example.com/m"}).endpoint == "https://hook.example.com/m"
    )


def test_an_update_rule_for_the_resource_intercepts_it_for_certain() -> None:
    found = interception(_webhook(), CONFIGMAPS, namespace_labels={}, object_labels={})
    assert found is not None
    assert found.certain
    assert not found.doubts
    assert "intercepts the write" in found.describe()
    assert "stamp.example.com" in found.describe()


@pytest.mark.parametrize(
    ("rules", "resource", "expected"),
    [
        (_rule(operations=["CREATE"]), CONFIGMAPS, False),  # our PATCH is an UPDATE
        (_rule(operations=["CREATE", "DELETE", "CONNECT"]), CONFIGMAPS, False),
        (_rule(operations=["*"]), CONFIGMAPS, True),
        (_rule(apiGroups=["apps"]), CONFIGMAPS, False),
        (_rule(apiGroups=["*"]), CONFIGMAPS, True),
        (_rule(apiVersions=["*"]), CONFIGMAPS, True),
        (_rule(resources=["secrets"]), CONFIGMAPS, False),
        (_rule(resources=["*"]), CONFIGMAPS, True),
        (_rule(resources=["*/*"]), CONFIGMAPS, True),
        (_rule(resources=["configmaps/*"]), CONFIGMAPS, True),  # "x/*" holds x itself, as upstream
        (_rule(resources=["configmaps/status"]), CONFIGMAPS, False),  # a subresource is not our write
        (_rule(resources=["*/status"]), CONFIGMAPS, False),
        (_rule(scope="Namespaced"), CONFIGMAPS, True),
        (_rule(scope="Cluster"), CONFIGMAPS, False),
        (_rule(scope="*"), CONFIGMAPS, True),
        (
            _rule(apiGroups=["rbac.authorization.k8s.io"], resources=["*"], scope="Cluster"),
            CLUSTERROLES,
            True,
        ),
        (_rule(apiGroups=["*"], resources=["*"], scope="Namespaced"), CLUSTERROLES, False),
        (_rule(apiGroups=["*"], resources=["*"], scope="Namespaced"), NAMESPACES, False),  # cluster-scoped
        ([], CONFIGMAPS, False),
        (_rule(operations=[]), CONFIGMAPS, False),  # an empty list matches nothing
    ],
)
def test_rules_match_as_the_apiserver_matches_them(rules: list[Any], resource: Any, expected: bool) -> None:
    assert (interception(_webhook(rules=rules), resource, object_labels={}) is not None) is expected


def test_equivalent_match_policy_covers_another_version_of_the_resource_and_exact_does_not() -> None:
    rules = _rule(apiGroups=["example.com"], apiVersions=["v1"], resources=["widgets"])
    assert interception(_webhook(rules=rules), WIDGETS, namespace_labels={}, object_labels={}) is not None
    exact = _webhook(rules=rules, matchPolicy="Exact")
    assert interception(exact, WIDGETS, namespace_labels={}, object_labels={}) is None


def test_equivalent_match_policy_covers_a_second_name_of_the_same_storage() -> None:
    # events.k8s.io/events is stored with core events, which is what the migration writes.
    rules = _rule(apiGroups=["events.k8s.io"], resources=["events"])
    assert interception(_webhook(rules=rules), CORE_EVENTS, object_labels={}) is not None
    assert interception(_webhook(rules=rules, matchPolicy="Exact"), CORE_EVENTS, object_labels={}) is None


def test_the_apiservers_own_admission_configurations_are_never_intercepted() -> None:
    everything = _rule(apiGroups=["*"], apiVersions=["*"], resources=["*"], operations=["*"])
    assert interception(_webhook(rules=everything), MUTATING_CONFIGS, object_labels={}) is None
    assert interception(_webhook(rules=everything), DEPLOYMENTS, namespace_labels={}, object_labels={})


SELECTED = {"matchLabels": {"team": "a"}}


def test_a_namespace_selector_is_judged_by_the_namespaces_labels() -> None:
    webhook = _webhook(namespaceSelector=SELECTED)
    assert interception(webhook, CONFIGMAPS, namespace_labels={"team": "a"}, object_labels={}) is not None
    assert interception(webhook, CONFIGMAPS, namespace_labels={"team": "b"}, object_labels={}) is None


def test_unknown_namespace_labels_leave_a_doubt_not_a_pass() -> None:
    found = interception(_webhook(namespaceSelector=SELECTED), CONFIGMAPS, object_labels={})
    assert found is not None
    assert not found.certain
    assert "may intercept" in found.describe()
    assert "namespaceSelector (team=a)" in found.describe()


def test_a_namespace_selector_applies_to_namespaces_by_their_labels_not_to_other_cluster_objects() -> None:
    rules = _rule(apiGroups=["*"], resources=["*"], scope="*")
    webhook = _webhook(rules=rules, namespaceSelector=SELECTED)
    assert interception(webhook, NAMESPACES, object_labels={"team": "a"}) is not None
    assert interception(webhook, NAMESPACES, object_labels={"team": "b"}) is None
    # A cluster-scoped object other than a Namespace never skips a webhook by namespaceSelector.
    found = interception(webhook, CLUSTERROLES, object_labels={})
    assert found is not None
    assert found.certain


def test_an_object_selector_is_judged_by_the_objects_labels_and_doubted_when_they_are_unknown() -> None:
    webhook = _webhook(
        objectSelector={"matchExpressions": [{"key": "skip-hooks", "operator": "DoesNotExist"}]}
    )
    assert interception(webhook, CONFIGMAPS, namespace_labels={}, object_labels={}) is not None
    assert interception(webhook, CONFIGMAPS, namespace_labels={}, object_labels={"skip-hooks": "1"}) is None
    unknown = interception(webhook, CONFIGMAPS, namespace_labels={})  # Targeted: labels not known
    assert unknown is not None
    assert not unknown.certain
    assert "objectSelector (!skip-hooks)" in unknown.describe()


def test_an_empty_selector_selects_everything_even_when_labels_are_unknown() -> None:
    found = interception(_webhook(namespaceSelector={}, objectSelector={}), CONFIGMAPS)
    assert found is not None
    assert found.certain


def test_match_conditions_make_a_webhook_a_doubt_that_says_why() -> None:
    conditions = [{"name": "not-the-migrator", "expression": "request.userInfo.username != 'x'"}]
    found = interception(
        _webhook(matchConditions=conditions), CONFIGMAPS, namespace_labels={}, object_labels={}
    )
    assert found is not None
    assert not found.certain
    assert "matchCondition" in found.describe()
    assert "CEL" in found.describe()


def test_an_unreadable_selector_counts_as_may_match_never_as_skip() -> None:
    webhook = _webhook(objectSelector={"matchExpressions": [{"key": "a", "operator": "Near"}]})
    found = interception(webhook, CONFIGMAPS, namespace_labels={}, object_labels={"a": "b"})
    assert found is not None
    assert not found.certain
    assert "could not be read" in found.describe()


def test_every_webhook_of_a_configuration_is_judged_on_its_own() -> None:
    configuration = _configuration()
    configuration["webhooks"].append(
        {
            **configuration["webhooks"][0],
            "name": "secrets-only.example.com",
            "rules": _rule(resources=["secrets"]),
        }
    )
    webhooks = webhooks_of(configuration, WebhookKind.MUTATING)
    found = interceptions(webhooks, CONFIGMAPS, namespace_labels={}, object_labels={})
    assert [each.webhook.name for each in found] == ["stamp.example.com"]


def test_namespace_labels_are_needed_only_for_a_namespaced_resource_behind_a_namespace_selector() -> None:
    assert needs_namespace_labels([_webhook(namespaceSelector=SELECTED)], CONFIGMAPS)
    assert not needs_namespace_labels([_webhook()], CONFIGMAPS)
    assert not needs_namespace_labels([_webhook(namespaceSelector=SELECTED)], DEPLOYMENTS)  # rules miss it
