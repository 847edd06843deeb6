"""Preflight verdicts and advice, from plain answers (pure)."""

from __future__ import annotations

from kms_storage_migrator.convergence.metrics import CONFIG_INFO_METRIC, STATUS_METRIC, USE_METRIC
from kms_storage_migrator.preflight.findings import (
    OPERATOR_PERMISSIONS,
    AccessAnswer,
    Verdict,
    exit_code,
    judge_access,
    judge_encryption,
    judge_etcd,
    render_table,
)

LABELS = 'apiserver_id_hash="sha256:a",key_id_hash="sha256:k",provider_name="local-kms"'
KMS_METRICS = f"""# TYPE {STATUS_METRIC} gauge
{STATUS_METRIC}{{{LABELS}}} 1.7e9
# TYPE {USE_METRIC} gauge
{USE_METRIC}{{{LABELS},transformation_type="to_storage"}} 1.7e9
"""
NO_KMS_METRICS = f"""# TYPE {CONFIG_INFO_METRIC} gauge
{CONFIG_INFO_METRIC}{{apiserver_id_hash="sha256:a",hash="sha256:c"}} 1
"""


def test_a_kms_provider_in_the_metrics_passes_naming_it() -> None:
    finding = judge_encryption(KMS_METRICS)
    assert finding.verdict is Verdict.OK
    assert "local-kms" in finding.detail


def test_no_kms_provider_fails_because_the_migration_would_change_nothing() -> None:
    for text in (NO_KMS_METRICS, ""):
        finding = judge_encryption(text)
        assert finding.verdict is Verdict.FAIL
        assert "same form" in finding.detail
        assert "--encryption-provider-config" in finding.what_to_do


def test_a_denied_permission_names_the_rule_to_grant() -> None:
    answers = [AccessAnswer(p, p.verb != "patch", "no RBAC policy matched") for p in OPERATOR_PERMISSIONS]
    findings = judge_access(answers, "you")
    failed = [f for f in findings if f.verdict is Verdict.FAIL]
    assert [f.check for f in failed] == [
        "RBAC patch */*",
        "RBAC patch kms-storage-migrator.io/storagemigrations",
        "RBAC patch kms-storage-migrator.io/storagemigrations/status",
    ]
    assert (
        "verbs [patch] on storagemigrations/status in apiGroup 'kms-storage-migrator.io'"
        in failed[2].what_to_do
    )
    assert "no RBAC policy matched" in failed[0].detail
    assert exit_code(findings) == 1


def test_metrics_access_is_a_non_resource_rule() -> None:
    metrics = next(p for p in OPERATOR_PERMISSIONS if p.path)
    finding = judge_access([AccessAnswer(metrics, False)], "you")[0]
    assert finding.check == "RBAC get /metrics"
    assert "nonResourceURLs ['/metrics']" in finding.what_to_do


def test_an_etcd_prefix_without_namespaces_is_wrong() -> None:
    assert judge_etcd("https://e:2379", "/registry", 4).verdict is Verdict.OK
    wrong = judge_etcd("https://e:2379", "/other", 0)
    assert wrong.verdict is Verdict.FAIL
    assert "--etcd-prefix" in wrong.what_to_do


def test_the_table_puts_the_step_under_each_failure_and_counts_them() -> None:
    findings = [judge_encryption(KMS_METRICS), judge_etcd("https://e:2379", "/other", 0)]
    table = render_table(findings).splitlines()
    assert table[0].split() == ["CHECK", "RESULT", "DETAIL"]
    assert table[2].split()[:2] == ["etcd", "FAIL"]
    assert "what to do: give the apiserver's --etcd-prefix" in table[3]
    assert table[-1] == "1 check(s) failed, 0 warning(s)"
    assert exit_code(findings[:1]) == 0
