"""The Preflight phase's judging, from plain answers (pure): each check and what the run does."""

from __future__ import annotations

import pytest

from kms_storage_migrator.admission.policy import MutatingWebhookPolicy
from kms_storage_migrator.admission.webhooks import MatchPolicy, Webhook, WebhookKind
from kms_storage_migrator.migration.plan import PreflightPolicy
from kms_storage_migrator.migration.preflight_gate import (
    MAX_PREFLIGHT_NOTES,
    decide_preflight,
    notes,
)
from kms_storage_migrator.preflight.aggregated import judge_aggregated
from kms_storage_migrator.preflight.conversion import conversion_webhooks, endpoint_of, judge_conversion
from kms_storage_migrator.preflight.etcd_access import WriteAnswer, judge_etcd_write, probe_key
from kms_storage_migrator.preflight.findings import AccessAnswer, Finding, Verdict, metrics_unreadable
from kms_storage_migrator.preflight.resource_access import (
    SelectedResource,
    covered_by_wildcard,
    judge_resource_access,
    resource_permissions,
    wildcard_permissions,
)
from kms_storage_migrator.preflight.survey import PreflightSurvey
from kms_storage_migrator.preflight.webhook_findings import Address, Reachability, address_of, judge_webhook
from kms_storage_migrator.preflight.write_target import WRITE_TARGET_CHECK, judge_write_target
from kms_storage_migrator.storage.etcd import EtcdUnavailable
from kms_storage_migrator.storage.formats import FormatKind, StoredFormat
from kms_storage_migrator.storage.write_format import WriteFormat

KMS = WriteFormat.of(StoredFormat(FormatKind.KMS_V2, provider="local-kms", key_id="kek-1", dek_source_type=1))
PLAIN = WriteFormat.of(StoredFormat(FormatKind.PLAINTEXT_JSON))
AESCBC = WriteFormat.of(StoredFormat(FormatKind.AESCBC, key_name="key1"))
METRICS_KMS = Finding("encryption provider", Verdict.OK, "KMS v2 provider(s) in use: local-kms")
METRICS_NONE = Finding("encryption provider", Verdict.FAIL, "no KMS v2 provider reports a key in /metrics")
METRICS_REFUSED = metrics_unreadable("403 Forbidden: /metrics")

# ---- nothing to migrate to ------------------------------------------------------------------


def test_a_cr_stored_under_kms_v2_passes_naming_the_format() -> None:
    finding = judge_write_target(KMS, METRICS_NONE)
    assert finding.verdict is Verdict.OK
    assert "kms-v2:local-kms:kek-1" in finding.detail


def test_plaintext_and_no_kms_provider_fails_saying_why_and_what_to_do() -> None:
    for reference in (PLAIN, None):
        finding = judge_write_target(reference, METRICS_NONE)
        assert finding.verdict is Verdict.FAIL, reference
        assert finding.check == WRITE_TARGET_CHECK
        assert "nothing to migrate to" in finding.detail
        assert "kms v2 provider first" in finding.what_to_do
        assert not finding.resource  # the whole migration stops
        # All of it, advice included, fits in status.message (300 characters).
        message = decide_preflight([finding], PreflightPolicy.WARN, 1).message
        assert len(message) <= 300, message


def test_a_plaintext_cr_beside_a_kms_provider_passes_since_only_some_resources_may_be_encrypted() -> None:
    finding = judge_write_target(PLAIN, METRICS_KMS)
    assert finding.verdict is Verdict.OK
    assert "local-kms" in finding.detail


def test_a_legacy_provider_first_warns_and_no_evidence_at_all_warns() -> None:
    assert judge_write_target(AESCBC, METRICS_KMS).verdict is Verdict.WARN
    assert "aescbc" in judge_write_target(AESCBC, METRICS_KMS).detail
    assert judge_write_target(None, None).verdict is Verdict.WARN
    # /metrics refused and no etcd: no evidence either way, so no failure.
    refused = judge_write_target(None, METRICS_REFUSED)
    assert refused.verdict is Verdict.WARN
    assert "/metrics" in refused.detail
    # A plaintext CR with /metrics refused: Secrets alone may be encrypted, so only a warning.
    unknown = judge_write_target(PLAIN, METRICS_REFUSED)
    assert unknown.verdict is Verdict.WARN
    assert "maybe nothing to migrate to" in unknown.detail


# ---- permissions ----------------------------------------------------------------------------

SECRETS = SelectedResource("", "secrets")


def _answers(list_ok: bool, patch_ok: bool, checked: bool = True) -> list[AccessAnswer]:
    first, second = resource_permissions(SECRETS)
    return [
        AccessAnswer(first, list_ok, "" if list_ok else "no rule", checked),
        AccessAnswer(second, patch_ok, "" if patch_ok else "no rule", checked),
    ]


def test_a_resource_it_may_not_patch_fails_for_that_resource_alone() -> None:
    finding = judge_resource_access(SECRETS, _answers(True, False), "the operator")
    assert finding is not None
    assert finding.verdict is Verdict.FAIL
    assert finding.resource == "core/secrets"
    assert "may not patch core/secrets" in finding.detail
    assert "verbs [list, patch] on secrets in apiGroup ''" in finding.what_to_do
    assert "spec.resources.exclude" in finding.what_to_do


def test_an_allowed_resource_has_no_finding_and_a_refused_review_only_warns() -> None:
    assert judge_resource_access(SECRETS, _answers(True, True), "x") is None
    unchecked = judge_resource_access(SECRETS, _answers(False, False, checked=False), "x")
    assert unchecked is not None
    assert unchecked.verdict is Verdict.WARN


def test_the_wildcard_covers_everything_only_when_both_verbs_are_allowed() -> None:
    list_all, patch_all = wildcard_permissions()
    assert (list_all.label, patch_all.label) == ("list */*", "patch */*")
    assert covered_by_wildcard([AccessAnswer(list_all, True), AccessAnswer(patch_all, True)])
    assert not covered_by_wildcard([AccessAnswer(list_all, True), AccessAnswer(patch_all, False)])
    assert not covered_by_wildcard([])


# ---- conversion webhooks --------------------------------------------------------------------


def _crd(strategy: str, client: dict) -> dict:
    return {
        "metadata": {"name": "gizmos.demo.example.com"},
        "spec": {
            "group": "demo.example.com",
            "names": {"plural": "gizmos"},
            "versions": [{"name": "v1", "storage": True}, {"name": "v2", "storage": False}],
            "conversion": {"strategy": strategy, "webhook": {"clientConfig": client}},
        },
    }


def test_only_selected_crds_that_convert_through_a_webhook_are_listed() -> None:
    hooked = _crd("Webhook", {"url": "https://127.0.0.1:1/convert", "caBundle": "c2VjcmV0"})
    plain = _crd("None", {})
    assert conversion_webhooks([plain], ["demo.example.com/gizmos"]) == []
    assert conversion_webhooks([hooked], ["demo.example.com/other"]) == []
    [hook] = conversion_webhooks([hooked], ["demo.example.com/gizmos"])
    assert (hook.name, hook.storage_version, hook.endpoint) == (
        "demo.example.com/gizmos",
        "v1",
        "https://127.0.0.1:1/convert",
    )
    assert "c2VjcmV0" not in repr(hook)  # the caBundle is never kept
    service = {"service": {"namespace": "ns", "name": "conv", "path": "/c"}}
    assert endpoint_of(service) == "service ns/conv:443/c"


def test_a_working_webhook_warns_and_a_failing_one_fails_its_resource() -> None:
    [hook] = conversion_webhooks(
        [_crd("Webhook", {"url": "https://127.0.0.1:1/convert"})], ["demo.example.com/gizmos"]
    )
    working = judge_conversion(hook, ["v2", "v1"], None)
    assert working.verdict is Verdict.WARN
    assert "keep the conversion webhook up" in working.what_to_do
    broken = judge_conversion(hook, ["v2", "v1"], "500 InternalError: conversion webhook failed")
    assert broken.verdict is Verdict.FAIL
    assert broken.resource == "demo.example.com/gizmos"
    assert "https://127.0.0.1:1/convert" in broken.detail
    assert "conversion webhook failed" in broken.detail


# ---- etcd read-only -------------------------------------------------------------------------


def test_the_etcd_write_answers() -> None:
    assert judge_etcd_write("e", WriteAnswer.DENIED).verdict is Verdict.OK
    can_write = judge_etcd_write("e", WriteAnswer.ALLOWED)
    assert can_write.verdict is Verdict.WARN
    assert "give it a read-only role" in can_write.what_to_do
    unknown = judge_etcd_write("e", WriteAnswer.UNKNOWN, "UNAVAILABLE: gone")
    assert unknown.verdict is Verdict.WARN
    assert "UNAVAILABLE: gone" in unknown.detail
    assert probe_key("/registry", "abc").startswith("/registry/")


# ---- what the run does ----------------------------------------------------------------------

OK = Finding("write format", Verdict.OK, "the apiserver writes with kms-v2:local-kms:kek-1")
WARNING = Finding("etcd read-only", Verdict.WARN, "the etcd user can write", "give it a read-only role")
FATAL = Finding("write format", Verdict.FAIL, "nothing to migrate to", "configure KMS")
REFUSED = Finding(
    "permissions core/secrets", Verdict.FAIL, "may not patch", "grant it", resource="core/secrets"
)


def test_all_passed_proceeds_with_the_condition_true() -> None:
    outcome = decide_preflight([OK], PreflightPolicy.WARN, 3)
    assert (outcome.proceed, outcome.passed, outcome.reason) == (True, True, "AllChecksPassed")


@pytest.mark.parametrize("policy", list(PreflightPolicy))
def test_a_failing_check_stops_in_either_mode_saying_why_and_what_to_do(policy: PreflightPolicy) -> None:
    outcome = decide_preflight([OK, FATAL, WARNING], policy, 3)
    assert (outcome.proceed, outcome.passed, outcome.reason) == (False, False, "PreflightFailed")
    assert "nothing was written" in outcome.message
    assert "nothing to migrate to; what to do: configure KMS" in outcome.message


def test_a_warning_stops_only_under_enforce() -> None:
    warned = decide_preflight([OK, WARNING], PreflightPolicy.WARN, 3)
    assert (warned.proceed, warned.passed, warned.reason) == (True, True, "PassedWithWarnings")
    enforced = decide_preflight([OK, WARNING], PreflightPolicy.ENFORCE, 3)
    assert (enforced.proceed, enforced.passed, enforced.reason) == (False, False, "WarningsEnforced")
    assert "the etcd user can write" in enforced.message
    assert "spec.preflight Warn" in enforced.message


def test_a_refused_resource_fails_alone_unless_it_is_the_only_one() -> None:
    some = decide_preflight([OK, REFUSED], PreflightPolicy.WARN, 3)
    assert (some.proceed, some.passed, some.reason) == (True, False, "ResourcesFailed")
    assert list(some.failed_resources) == ["core/secrets"]
    assert "may not patch; what to do: grant it" in some.failed_resources["core/secrets"]
    alone = decide_preflight([OK, REFUSED], PreflightPolicy.WARN, 1)
    assert (alone.proceed, alone.reason) == (False, "NoResourceCanBeMigrated")


def test_the_status_list_is_bounded_worst_first_and_says_what_was_left_out() -> None:
    many = [Finding(f"check {i}", Verdict.OK, "fine") for i in range(30)] + [FATAL, WARNING]
    listed = notes(many)
    assert len(listed) == MAX_PREFLIGHT_NOTES
    assert [n.verdict for n in listed[:2]] == ["fail", "warn"]
    assert listed[-1].check == "more findings"
    assert "13 more not listed (13 ok)" in listed[-1].message
    assert listed[0].message == "write format: nothing to migrate to; what to do: configure KMS"
    assert all(len(n.message) <= 300 for n in notes([Finding("x", Verdict.WARN, "y" * 1000)]))


# ---- admission webhooks ---------------------------------------------------------------------


def _webhook(kind: WebhookKind, endpoint: str, failure_policy: str = "Fail") -> Webhook:
    return Webhook(
        kind=kind,
        configuration="guard",
        name="guard.example.com",
        failure_policy=failure_policy,
        endpoint=endpoint,
        rules=(),
        match_policy=MatchPolicy.EQUIVALENT,
        namespace_selector=None,
        object_selector=None,
        match_conditions=0,
    )


def test_webhook_addresses_from_a_url_or_a_service() -> None:
    assert address_of("https://10.0.0.5:8443/validate") == Address("10.0.0.5", 8443)
    assert address_of("https://hooks.example.com/x") == Address("hooks.example.com", 443)
    assert address_of("service web/guard:9443/mutate") == Address("guard.web.svc", 9443)
    assert address_of("?") is None


def test_a_mutating_webhook_warns_that_refuse_skips_its_objects_and_a_dead_one_says_so() -> None:
    down = Reachability(False, "does not answer (ConnectionRefusedError)")
    names = [f"core/r{i}" for i in range(6)]
    finding = judge_webhook(
        _webhook(WebhookKind.MUTATING, "https://127.0.0.1:1/m"),
        names,
        True,
        down,
        MutatingWebhookPolicy.REFUSE,
    )
    assert finding.verdict is Verdict.WARN
    assert finding.check == "admission webhook guard.example.com"
    assert finding.detail.startswith("mutating (guard, failurePolicy Fail) intercepts the write of")
    assert "does not answer" in finding.detail
    assert "core/r0, core/r1, core/r2, core/r3 and 2 more" in finding.detail
    assert "not written (spec.mutatingWebhooks Refuse)" in finding.what_to_do
    assert finding.what_to_do.startswith("its server does not answer and failurePolicy is Fail")
    allowed = judge_webhook(
        _webhook(WebhookKind.MUTATING, "https://h/m", "Ignore"),
        ["core/configmaps"],
        False,
        Reachability(True, "answers"),
        MutatingWebhookPolicy.ALLOW,
    )
    assert "may intercept" in allowed.detail
    assert "MutatedByWebhook" in allowed.what_to_do
    validating = judge_webhook(
        _webhook(WebhookKind.VALIDATING, "https://h/v"),
        ["core/secrets"],
        True,
        Reachability(True, "answers"),
        MutatingWebhookPolicy.REFUSE,
    )
    assert validating.detail.startswith("validating (guard")
    assert "objects it denies fail" in validating.what_to_do


# ---- an etcd outage during preflight --------------------------------------------------------


class _EtcdAway:
    display = "https://etcd:2379"

    async def count(self, prefix: str) -> int:
        raise EtcdUnavailable("etcd at https://etcd:2379: connection refused")


async def test_an_etcd_outage_is_waited_out_by_a_migration_and_reported_by_the_command() -> None:
    migration = PreflightSurvey(None, _EtcdAway(), wait_out_outages=True)  # type: ignore[arg-type]
    with pytest.raises(EtcdUnavailable):
        await migration._etcd_checks(_EtcdAway())  # type: ignore[arg-type]
    command = PreflightSurvey(None, _EtcdAway())  # type: ignore[arg-type]
    [finding] = await command._etcd_checks(_EtcdAway())  # type: ignore[arg-type]
    assert finding.verdict is Verdict.FAIL
    assert "connection refused" in finding.detail


def test_aggregated_apis_are_listed_with_their_reason_and_pass() -> None:
    assert judge_aggregated([]) is None
    served = "served by an aggregated API server, not stored in this apiserver's etcd"
    away = "aggregated API server unavailable (503 ServiceUnavailable): not stored here"
    finding = judge_aggregated(
        [("metrics.k8s.io/pods", served), ("metrics.k8s.io/nodes", served), ("custom.example.com/*", away)]
    )
    assert finding is not None
    assert finding.verdict is Verdict.OK  # their objects are not in this etcd: nothing to stop
    assert finding.detail == (
        "3 left out, their objects are not stored in this apiserver's etcd: "
        f"custom.example.com/* ({away}); metrics.k8s.io/nodes, metrics.k8s.io/pods ({served})"
    )
    assert "each aggregated API server stores its objects itself" in finding.what_to_do


def test_many_aggregated_resources_are_named_up_to_a_bound() -> None:
    reason = "served by an aggregated API server"
    finding = judge_aggregated([(f"big.example.com/r{index:02d}", reason) for index in range(20)])
    assert finding is not None
    assert finding.detail.startswith("20 left out")
    assert "big.example.com/r07 and 12 more (served by an aggregated API server)" in finding.detail
    assert "r08" not in finding.detail
