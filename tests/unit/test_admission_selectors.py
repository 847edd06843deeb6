"""namespaceSelector and objectSelector as label selectors: matchLabels and matchExpressions (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from kms_storage_migrator.admission.selectors import SelectorError, parse_selector


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        (None, {}, True),
        ({}, {"a": "1"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
        ({"matchLabels": {"a": "1"}}, {}, False),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]}, {"a": "2"}, True),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1"]}]}, {}, False),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {"a": "2"}, True),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {}, True),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {"a": "1"}, False),
        ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"a": ""}, True),
        ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {}, False),
        ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {}, True),
        ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": "1"}, False),
        # Everything must hold: matchLabels and every expression.
        (
            {"matchLabels": {"a": "1"}, "matchExpressions": [{"key": "b", "operator": "Exists"}]},
            {"a": "1"},
            False,
        ),
    ],
)
def test_a_selector_matches_labels_as_kubernetes_does(
    selector: Any, labels: dict[str, str], expected: bool
) -> None:
    assert parse_selector(selector, "namespaceSelector").matches(labels) is expected


@pytest.mark.parametrize(
    ("selector", "named"),
    [
        ("team=a", "namespaceSelector: must be an object"),
        ({"matchLabels": ["a"]}, "namespaceSelector.matchLabels"),
        (
            {"matchExpressions": [{"key": "a", "operator": "Near", "values": ["1"]}]},
            "matchExpressions[0].operator",
        ),
        ({"matchExpressions": [{"key": "a", "operator": "In"}]}, "matchExpressions[0].values: In needs"),
        ({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["1"]}]}, "Exists needs no"),
        ({"matchExpressions": [{"operator": "Exists"}]}, "matchExpressions[0].key"),
    ],
)
def test_a_malformed_selector_is_refused_naming_the_field(selector: Any, named: str) -> None:
    with pytest.raises(SelectorError, match=named.replace("[", r"\[").replace("]", r"\]")):
        parse_selector(selector, "namespaceSelector")


def test_describe_uses_kubectls_selector_syntax() -> None:
    selector = parse_selector(
        {
            "matchLabels": {"team": "a"},
            "matchExpressions": [
                {"key": "tier", "operator": "NotIn", "values": ["db", "cache"]},
                {"key": "skip", "operator": "DoesNotExist"},
            ],
        },
        "objectSelector",
    )
    assert selector.describe() == "team=a, tier notin (cache,db), !skip"
    assert parse_selector({}, "objectSelector").describe() == "(everything)"
