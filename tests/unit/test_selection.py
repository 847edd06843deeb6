"""Selection patterns: which group/resource names a StorageMigration migrates."""

from __future__ import annotations

import pytest

from kms_storage_migrator.migration.selection import (
    PATTERN_SYNTAX,
    ResourcePattern,
    SelectionError,
    parse_selection,
    resource_name,
)


def test_missing_include_selects_everything() -> None:
    selection = parse_selection(None, None)
    assert selection.selects("", "secrets")
    assert selection.selects("apps", "deployments")
    assert selection.selects("stable.example.com", "crontabs")


def test_empty_include_list_selects_everything() -> None:
    assert parse_selection([], []).selects("rbac.authorization.k8s.io", "roles")


def test_core_group_is_written_core() -> None:
    selection = parse_selection(["core/secrets"], None)
    assert selection.selects("", "secrets")
    assert not selection.selects("apps", "secrets")
    assert not selection.selects("", "configmaps")


def test_wildcard_resource_within_a_group() -> None:
    selection = parse_selection(["apps/*"], None)
    assert selection.selects("apps", "deployments")
    assert selection.selects("apps", "statefulsets")
    assert not selection.selects("", "pods")


def test_wildcard_inside_a_group_name() -> None:
    selection = parse_selection(["*.example.com/*"], None)
    assert selection.selects("stable.example.com", "crontabs")
    assert not selection.selects("example.com", "crontabs")  # '*.' needs a label before the dot
    assert not selection.selects("apps", "deployments")


def test_wildcard_group_matches_the_core_group_too() -> None:
    assert parse_selection(["*/secrets"], None).selects("", "secrets")


def test_exclude_wins_over_include() -> None:
    selection = parse_selection(["*/*"], ["core/events", "coordination.k8s.io/*"])
    assert not selection.selects("", "events")
    assert not selection.selects("coordination.k8s.io", "leases")
    assert selection.selects("", "secrets")


def test_patterns_match_whole_names_not_prefixes() -> None:
    selection = parse_selection(["core/secret"], None)
    assert not selection.selects("", "secrets")


@pytest.mark.parametrize(
    "bad",
    [
        "secrets",
        "core/",
        "/secrets",
        "Core/Secrets",
        "core/secrets/status",
        "core secrets",
        "",
        "a/b c",
        "-x/y",
    ],
)
def test_malformed_patterns_are_rejected_naming_the_field(bad: str) -> None:
    with pytest.raises(SelectionError) as error:
        parse_selection(["core/secrets", bad], None)
    assert "spec.resources.include[1]" in str(error.value)
    assert repr(bad) in str(error.value)


def test_malformed_exclude_names_the_exclude_field() -> None:
    with pytest.raises(SelectionError, match=r"spec\.resources\.exclude\[0\]"):
        parse_selection(None, ["nope"])


@pytest.mark.parametrize(
    "good", ["*/*", "core/secrets", "apps/*", "*.k8s.io/*", "x-y.example.com/widgets", "*/*s"]
)
def test_well_formed_patterns_parse(good: str) -> None:
    assert PATTERN_SYNTAX.match(good)
    assert str(ResourcePattern.parse(good, "f")) == good


def test_describe_lists_include_and_exclude() -> None:
    text = parse_selection(["apps/*"], ["apps/controllerrevisions"]).describe()
    assert text == "include apps/*; exclude apps/controllerrevisions"


def test_resource_name_spells_the_core_group() -> None:
    assert resource_name("", "secrets") == "core/secrets"
    assert resource_name("apps", "deployments") == "apps/deployments"
