"""Spec validation, mode resolution, write-format labels and the choice of resource types."""

from __future__ import annotations

from typing import Any

import pytest

from kms_storage_migrator.admission.policy import MutatingWebhookPolicy
from kms_storage_migrator.kube import ApiError
from kms_storage_migrator.migration.boundary import DiscoveryError, InfrastructureUnavailable
from kms_storage_migrator.migration.discovery import discover
from kms_storage_migrator.migration.plan import (
    MigrationSpec,
    Mode,
    PlanError,
    PreflightPolicy,
    RunDefaults,
    resolve_mode,
)
from kms_storage_migrator.migration.progress import VerificationResult
from kms_storage_migrator.migration.resource_choice import (
    GroupVersionResources,
    ServedResource,
    choose_resources,
)
from kms_storage_migrator.migration.selection import parse_selection
from kms_storage_migrator.migration.staleness import is_rewritable, needs_rewrite
from kms_storage_migrator.migration.verify import VerificationReport
from kms_storage_migrator.storage.formats import FormatKind, StoredFormat
from kms_storage_migrator.storage.write_format import WriteFormat

KMS_A = StoredFormat(FormatKind.KMS_V2, provider="local-kms", key_id="A", dek_source_type=1)
KMS_B = StoredFormat(FormatKind.KMS_V2, provider="local-kms", key_id="B", dek_source_type=1)


def test_spec_defaults() -> None:
    spec = MigrationSpec.from_spec({})
    assert (spec.mode, spec.concurrency, spec.qps, spec.page_size, spec.max_attempts) == (
        Mode.AUTO,
        8,
        50,
        100,
        5,
    )
    assert spec.selection.selects("", "secrets")
    assert (spec.preflight, spec.mutating_webhooks) == (PreflightPolicy.WARN, MutatingWebhookPolicy.REFUSE)


def test_preflight_and_webhook_policies_are_read_from_the_spec() -> None:
    spec = MigrationSpec.from_spec({"preflight": "Enforce", "mutatingWebhooks": "Allow"})
    assert (spec.preflight, spec.mutating_webhooks) == (PreflightPolicy.ENFORCE, MutatingWebhookPolicy.ALLOW)


def test_operator_defaults_apply_when_the_spec_is_silent() -> None:
    spec = MigrationSpec.from_spec({"qps": 5}, RunDefaults(concurrency=2, qps=99))
    assert (spec.concurrency, spec.qps) == (2, 5)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"concurrency": 0}, "spec.concurrency"),
        ({"qps": -1}, "spec.qps"),
        ({"pageSize": 0}, "spec.pageSize"),
        ({"maxAttemptsPerObject": 0}, "spec.maxAttemptsPerObject"),
        ({"concurrency": True}, "spec.concurrency"),
        ({"mode": "Fast"}, "spec.mode"),
        ({"preflight": "Strict"}, "spec.preflight"),
        ({"mutatingWebhooks": "Ignore"}, "spec.mutatingWebhooks"),
        ({"resources": {"include": ["secrets"]}}, "spec.resources.include[0]"),
    ],
)
def test_invalid_specs_name_the_field(spec: dict, field: str) -> None:
    with pytest.raises(PlanError, match=field.replace(".", r"\.").replace("[", r"\[").replace("]", r"\]")):
        MigrationSpec.from_spec(spec)


def test_auto_is_targeted_with_etcd_and_full_without() -> None:
    assert resolve_mode(Mode.AUTO, True) is Mode.TARGETED
    assert resolve_mode(Mode.AUTO, False) is Mode.FULL


@pytest.mark.parametrize("mode", [Mode.TARGETED, Mode.VERIFY_ONLY])
def test_etcd_modes_without_etcd_fail_naming_the_mode(mode: Mode) -> None:
    with pytest.raises(PlanError, match=f"spec.mode: {mode.value} needs read access to etcd"):
        resolve_mode(mode, False)


PLAINTEXT_KINDS = [kind for kind in FormatKind if kind.value.startswith("plaintext")]


def test_every_plaintext_serialisation_is_one_format() -> None:
    assert {WriteFormat.of(StoredFormat(kind)).label for kind in PLAINTEXT_KINDS} == {"plaintext"}
    json_written = WriteFormat.of(StoredFormat(FormatKind.PLAINTEXT_JSON))
    assert all(json_written.is_current(StoredFormat(kind)) for kind in PLAINTEXT_KINDS)


def test_labels_ignore_nothing_but_the_dek_seed() -> None:
    assert WriteFormat.of(KMS_A).label == "kms-v2:local-kms:A"
    legacy = StoredFormat(FormatKind.KMS_V2, provider="local-kms", key_id="A", dek_source_type=0)
    assert WriteFormat.of(legacy).label == "kms-v2:local-kms:A+legacy-dek"
    assert needs_rewrite(legacy, WriteFormat.of(KMS_A))


def test_old_key_and_plaintext_are_stale_current_key_is_not() -> None:
    current = WriteFormat.of(KMS_B)
    assert needs_rewrite(KMS_A, current)
    assert needs_rewrite(StoredFormat(FormatKind.PLAINTEXT_PROTOBUF), current)
    assert not needs_rewrite(KMS_B, current)


@pytest.mark.parametrize(
    "stored",
    [
        StoredFormat(FormatKind.PLAINTEXT_PROTOBUF),
        StoredFormat(FormatKind.KMS_V2, provider="local-kms", key_id="kek:2", dek_source_type=1),
        StoredFormat(FormatKind.KMS_V2, provider="local-kms", key_id="A", dek_source_type=0),
        StoredFormat(FormatKind.KMS_V2, provider="local-kms", key_id="A", dek_source_type=7),
        StoredFormat(FormatKind.KMS_V1, provider="old-kms"),
        StoredFormat(FormatKind.AESCBC, key_name="key1"),
        StoredFormat(FormatKind.SECRETBOX, key_name="k"),
    ],
)
def test_a_format_read_back_from_its_status_label_judges_alike(stored: StoredFormat) -> None:
    """Status keeps the label; a resumed run must call the same values current."""
    written = WriteFormat.of(stored)
    parsed = WriteFormat.parse(written.label)
    assert parsed is not None
    assert parsed.label == written.label
    samples = [stored, KMS_A, KMS_B, StoredFormat(FormatKind.PLAINTEXT_JSON), StoredFormat(FormatKind.AESGCM)]
    assert [parsed.is_current(s) for s in samples] == [written.is_current(s) for s in samples]


def test_a_label_that_names_no_format_parses_to_none() -> None:
    assert WriteFormat.parse("") is None
    assert WriteFormat.parse("unknown (truncated)") is None
    assert WriteFormat.parse("kms-v2:p:") is None


def _resource(name: str, kind: str = "X", verbs: tuple[str, ...] = ("list", "patch", "get")) -> dict:
    return {"name": name, "kind": kind, "namespaced": True, "verbs": list(verbs)}


DOCUMENTS = [
    GroupVersionResources(
        "",
        "v1",
        (
            _resource("secrets", "Secret"),
            _resource("secrets/status"),
            _resource("bindings", "Binding", ("create",)),
            _resource("componentstatuses", "ComponentStatus", ("get", "list")),
            _resource("events", "Event"),
        ),
    ),
    GroupVersionResources("events.k8s.io", "v1", (_resource("events", "Event"),)),
    GroupVersionResources(
        "authentication.k8s.io", "v1", (_resource("tokenreviews", "TokenReview", ("create",)),)
    ),
    GroupVersionResources(
        "metrics.k8s.io", "v1beta1", (_resource("pods", "PodMetrics", ("get", "list")),), False
    ),
    GroupVersionResources("apps", "v1", (_resource("deployments", "Deployment"),)),
]


def test_choose_keeps_listable_patchable_local_resources() -> None:
    result = choose_resources(DOCUMENTS, parse_selection(None, None))
    assert [r.name for r in result.chosen] == ["apps/deployments", "core/events", "core/secrets"]


def test_choose_says_why_each_type_was_dropped() -> None:
    dropped = dict(
        (d.name, d.reason) for d in choose_resources(DOCUMENTS, parse_selection(None, None)).dropped
    )
    assert "second name" in dropped["events.k8s.io/events"]
    assert "aggregated" in dropped["metrics.k8s.io/pods"]
    assert "virtual" in dropped["core/bindings"]
    # Only what an aggregated API server serves is marked so (preflight lists those).
    result = choose_resources(DOCUMENTS, parse_selection(None, None))
    assert [d.name for d in result.dropped if d.aggregated] == ["metrics.k8s.io/pods"]
    assert "virtual" in dropped["authentication.k8s.io/tokenreviews"]
    assert "cannot be patched" in dropped["core/componentstatuses"]
    assert "1 subresources" in dropped["*/*/<subresource>"]


def test_choose_respects_the_selection_and_lists_only_selected_drops() -> None:
    result = choose_resources(DOCUMENTS, parse_selection(["core/*"], ["core/events"]))
    assert [r.name for r in result.chosen] == ["core/secrets"]
    assert "events.k8s.io/events" not in {d.name for d in result.dropped}


def test_served_resource_paths() -> None:
    secrets = ServedResource("", "v1", "secrets", "Secret", True)
    assert secrets.collection_path() == "/api/v1/secrets"
    assert secrets.object_path("ns", "a") == "/api/v1/namespaces/ns/secrets/a"
    roles = ServedResource("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False)
    assert roles.object_path(None, "admin") == "/apis/rbac.authorization.k8s.io/v1/clusterroles/admin"
    assert roles.api_version == "rbac.authorization.k8s.io/v1"


def test_other_dek_source_types_are_stale_too() -> None:
    """Only the seed (type 1) is what the apiserver writes now."""
    other = StoredFormat(FormatKind.KMS_V2, provider="local-kms", key_id="A", dek_source_type=2)
    assert needs_rewrite(other, WriteFormat.of(KMS_A))


def test_undecodable_values_are_never_rewritten() -> None:
    unknown = StoredFormat(FormatKind.UNKNOWN, reason="truncated")
    assert not is_rewritable(unknown)
    assert is_rewritable(KMS_A)


# ---- discovery against a scripted apiserver ---------------------------------------------------


class DiscoveryApi:
    """Serves discovery documents; a path maps to a list of answers (document or exception)."""

    def __init__(self, answers: dict[str, list[Any]], apiservices: list[dict[str, Any]]) -> None:
        self.answers = answers
        self.apiservices = apiservices

    async def get_json(self, path: str) -> dict[str, Any]:
        queue = self.answers[path]
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def list_metadata(self, path: str, *, limit: int, continue_token: str | None) -> dict[str, Any]:
        return {"items": self.apiservices}


UNAVAILABLE = ApiError(503, "ServiceUnavailable", "")
APIS = {
    "groups": [
        {"name": "example.com", "preferredVersion": {"version": "v1"}},
        {"name": "metrics.k8s.io", "preferredVersion": {"version": "v1beta1"}},
    ]
}
LOCAL_SERVICE = {
    "metadata": {"name": "v1.example.com", "labels": {"kube-aggregator.kubernetes.io/automanaged": "true"}}
}
AGGREGATED_SERVICE = {"metadata": {"name": "v1beta1.metrics.k8s.io"}}


def _discovery_api(example: list[Any], metrics: list[Any]) -> DiscoveryApi:
    return DiscoveryApi(
        {
            "/api/v1": [UNAVAILABLE, {"resources": [_resource("secrets", "Secret")]}],
            "/apis": [ApiError(429, "TooManyRequests", ""), APIS],
            "/apis/example.com/v1": example,
            "/apis/metrics.k8s.io/v1beta1": metrics,
        },
        [LOCAL_SERVICE, AGGREGATED_SERVICE],
    )


async def test_discovery_retries_transient_errors() -> None:
    api = _discovery_api(
        [UNAVAILABLE, {"resources": [_resource("widgets", "Widget")]}],
        [{"resources": [_resource("pods", "PodMetrics", ("get", "list"))]}],
    )
    result = await discover(api, parse_selection(None, None), attempts=2)
    assert [r.name for r in result.chosen] == ["core/secrets", "example.com/widgets"]


async def test_an_unavailable_aggregated_group_is_dropped_with_the_reason() -> None:
    api = _discovery_api([{"resources": [_resource("widgets", "Widget")]}], [UNAVAILABLE])
    result = await discover(api, parse_selection(None, None), attempts=2)
    dropped = {d.name: d.reason for d in result.dropped}
    assert "aggregated API server unavailable (ServiceUnavailable)" in dropped["metrics.k8s.io/*"]
    assert [d.name for d in result.dropped if d.aggregated] == ["metrics.k8s.io/*"]


async def test_an_unavailable_local_group_is_an_outage_to_wait_out_not_a_failure() -> None:
    api = _discovery_api([UNAVAILABLE, UNAVAILABLE], [UNAVAILABLE])
    with pytest.raises(InfrastructureUnavailable, match=r"discovery of example\.com/v1: ServiceUnavailable"):
        await discover(api, parse_selection(None, None), attempts=2)


async def test_a_refused_local_group_fails_discovery() -> None:
    api = _discovery_api([ApiError(403, "Forbidden", "")], [UNAVAILABLE])
    with pytest.raises(DiscoveryError, match=r"example\.com/v1 failed \(403 Forbidden\)"):
        await discover(api, parse_selection(None, None), attempts=2)


# ---- verification verdict ----------------------------------------------------------------------


def test_nothing_stale_is_verified_only_when_everything_was_checked_and_migrated() -> None:
    assert VerificationReport().verification().result is VerificationResult.VERIFIED
    failed = VerificationReport(failed=["example.com/widgets"]).verification()
    assert failed.result is VerificationResult.UNVERIFIED
    assert "not migrated (resource failed): example.com/widgets" in failed.message
    unreferenced = VerificationReport(unreferenced=["core/secrets"]).verification()
    assert unreferenced.result is VerificationResult.UNVERIFIED
    undecodable = VerificationReport(undecodable=1, undecodable_examples=["core/secrets ns/x"]).verification()
    assert undecodable.result is VerificationResult.UNVERIFIED
    assert "core/secrets ns/x" in undecodable.message
