"""Hostile StorageMigration specs against the engine's own parsing (issue 10, item 9).

The operator must be safe without admission (a CRD installed without its schema, an old CRD,
a spec written straight into etcd): whatever JSON a spec holds, ``MigrationSpec.from_spec``
either returns a spec within the documented bounds or raises ``PlanError`` naming the field.
Selection patterns are matched against every served resource name, so matching must stay
fast for the nastiest pattern admission lets through.
"""

from __future__ import annotations

import fnmatch
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kms_storage_migrator.admission.policy import MutatingWebhookPolicy
from kms_storage_migrator.migration.plan import (
    MAX_ATTEMPTS,
    MAX_CONCURRENCY,
    MAX_PAGE_SIZE,
    MAX_QPS,
    MigrationSpec,
    PlanError,
    PreflightPolicy,
)
from kms_storage_migrator.migration.selection import (
    MAX_PATTERN_LENGTH,
    MAX_PATTERNS,
    ResourcePattern,
    parse_selection,
)

FIELDS = (
    "mode",
    "concurrency",
    "qps",
    "pageSize",
    "maxAttemptsPerObject",
    "keyConvergenceTimeout",
    "preflight",
    "mutatingWebhooks",
)
SPEC_FIELDS = (*FIELDS, "resources", "suspend")

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
name_part = st.from_regex(r"\A(\*|[a-z0-9*]([-a-z0-9.*]{0,20}[a-z0-9*])?)\Z", fullmatch=True)
valid_patterns = st.builds(lambda g, r: f"{g}/{r}", name_part, name_part)
patterns = valid_patterns | st.text(max_size=30) | json_scalars
pattern_lists = st.lists(patterns, max_size=5) | st.lists(valid_patterns, min_size=99, max_size=101)
resources = st.fixed_dictionaries(
    {}, optional={"include": pattern_lists | json_values, "exclude": pattern_lists | json_values}
)
field_values = {
    "mode": st.sampled_from(["Auto", "Full", "Targeted", "VerifyOnly", "", "full", "Fast"]) | json_values,
    "concurrency": st.integers(-2, MAX_CONCURRENCY + 2) | json_values,
    "qps": st.integers(-2, MAX_QPS + 2) | json_values,
    "pageSize": st.integers(-2, MAX_PAGE_SIZE + 2) | json_values,
    "maxAttemptsPerObject": st.integers(-2, MAX_ATTEMPTS + 2) | json_values,
    "keyConvergenceTimeout": st.sampled_from(["9s", "10s", "10m", "1h30m", "24h", "25h", "1h1s", "m"])
    | st.builds(lambda digits: "9" * digits + "s", st.integers(1, 6000))
    | json_values,
    "preflight": st.sampled_from(["Warn", "Enforce", "", "warn", "Strict"]) | json_values,
    "mutatingWebhooks": st.sampled_from(["Refuse", "Allow", "", "allow", "Ignore"]) | json_values,
    "resources": resources | json_values,
    "suspend": json_values,
}
specs = st.fixed_dictionaries({}, optional=field_values) | st.dictionaries(st.text(max_size=10), json_values)


def _named_field(message: str, spec: Any) -> bool:
    fields = [f"spec.{name}" for name in SPEC_FIELDS]
    return message.startswith("spec") and (not isinstance(spec, dict) or any(f in message for f in fields))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs | json_values)
def test_any_spec_parses_within_bounds_or_names_the_field(spec: Any) -> None:
    try:
        parsed = MigrationSpec.from_spec(spec)
    except PlanError as error:
        message = str(error)
    else:
        message = ""
    if message:
        assert _named_field(message, spec), message
        return
    assert 1 <= parsed.concurrency <= MAX_CONCURRENCY
    assert 1 <= parsed.qps <= MAX_QPS
    assert 1 <= parsed.page_size <= MAX_PAGE_SIZE
    assert 1 <= parsed.max_attempts <= MAX_ATTEMPTS
    assert 10 <= parsed.key_convergence_timeout <= 24 * 3600
    assert 1 <= len(parsed.selection.include) <= MAX_PATTERNS
    assert parsed.preflight in set(PreflightPolicy)
    assert parsed.mutating_webhooks in set(MutatingWebhookPolicy)


@settings(max_examples=60, deadline=None)
@given(
    include=st.lists(valid_patterns, min_size=1, max_size=MAX_PATTERNS),
    exclude=st.lists(valid_patterns, max_size=MAX_PATTERNS),
)
def test_lists_up_to_their_maximum_parse_and_keep_their_patterns(
    include: list[str], exclude: list[str]
) -> None:
    parsed = MigrationSpec.from_spec({"resources": {"include": include, "exclude": exclude}})
    assert [str(p) for p in parsed.selection.include] == include
    assert [str(p) for p in parsed.selection.exclude] == exclude


@pytest.mark.parametrize("field", ["include", "exclude"])
def test_a_list_over_its_maximum_is_refused_naming_it(field: str) -> None:
    too_many = ["core/configmaps"] * (MAX_PATTERNS + 1)
    with pytest.raises(PlanError, match=rf"spec\.resources\.{field}: at most {MAX_PATTERNS} patterns"):
        MigrationSpec.from_spec({"resources": {field: too_many}})


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"resources": ["core/secrets"]}, "spec.resources"),
        ({"resources": {"include": "core/secrets"}}, "spec.resources.include"),
        ({"resources": {"include": ["core/secrets", 7]}}, r"spec.resources.include\[1\]"),
        ({"resources": {"exclude": {"core/secrets": True}}}, "spec.resources.exclude"),
        ({"mode": ["Full"]}, "spec.mode"),
        ({"preflight": True}, "spec.preflight"),
        ({"mutatingWebhooks": ["Allow"]}, "spec.mutatingWebhooks"),
        ({"keyConvergenceTimeout": "9" * 5000 + "s"}, "spec.keyConvergenceTimeout"),
        ({"resources": {"include": ["a" * MAX_PATTERN_LENGTH + "/x"]}}, r"spec.resources.include\[0\]"),
    ],
)
def test_wrong_shapes_are_refused_naming_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(PlanError, match=rf"^{field}"):
        MigrationSpec.from_spec(spec)


def test_a_spec_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(PlanError, match=r"^spec: must be an object"):
        MigrationSpec.from_spec(["mode", "Full"])  # type: ignore[arg-type]


def test_the_worst_wildcard_pattern_admission_allows_matches_quickly() -> None:
    # 126 stars between letters: a regex of '.*' runs backtracks exponentially on a near miss.
    hostile = "a" + "*a" * 126
    selection = parse_selection([f"{hostile[: MAX_PATTERN_LENGTH - 2]}/*"], None)
    started = time.monotonic()
    for _ in range(5):
        assert not selection.selects("a" * 62 + "b", "configmaps")
    # Linear matching takes milliseconds; the backtracking regex did not finish in an hour.
    assert time.monotonic() - started < 10.0


@settings(max_examples=300, deadline=None)
@given(pattern=name_part, value=st.from_regex(r"\A[a-z0-9.-]{0,30}\Z", fullmatch=True))
def test_wildcards_match_like_a_shell_glob(pattern: str, value: str) -> None:
    expected = fnmatch.fnmatchcase(value, pattern)  # no '?' or '[' in names: '*' is the only wildcard
    assert ResourcePattern("x", pattern).matches("x", value) is expected
    # The core group is "" in discovery and "core" in patterns.
    assert ResourcePattern(pattern, "x").matches(value, "x") is fnmatch.fnmatchcase(value or "core", pattern)
