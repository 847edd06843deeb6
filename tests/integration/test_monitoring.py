"""The chart's alerts and dashboard: rendered by helm, judged by promtool, and every metric they
name served by a real operator after a real migration on the dev cluster.

promtool comes from Debian's prometheus package (scripts/setup.sh installs it when run as root).
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_harness import OperatorProcess, apply_migration, configmaps_list, install_crd, wait_finished
from prometheus_client.parser import text_string_to_metric_families

from kms_storage_migrator.devcluster.binaries import binary_path
from kms_storage_migrator.devcluster.cluster import DevCluster

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kms-storage-migrator"
ALERT_TESTS = REPO / "tests" / "monitoring" / "alerts.test.yaml"
MONITORING = (
    "--set",
    "monitoring.prometheusRule.enabled=true",
    "--set",
    "monitoring.grafanaDashboard.enabled=true",
)
ALERTS = {
    "KmsStorageMigrationFailed",
    "KmsStorageMigrationStalled",
    "KmsStorageMigrationWaitingForKey",
    "KmsStorageMigratorDown",
    "KmsStorageMigrationStaleObjects",
    "KmsStorageOldKeyStillHoldsData",
}
# Series Prometheus makes itself for every target; the operator does not serve them.
PROMETHEUS_OWN = {"up"}
# A metric selector: a name followed by its label matchers (every expression here has a job matcher).
SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\{")
# Counters the operator declares from the start but fills only when something happens that a
# healthy migration does not provoke: its family must be served, samples may be absent.
ONLY_DECLARED = {"kms_storage_migrator_retries_total": ("kms_storage_migrator_retries", "counter")}


def render(*values: str) -> list[dict[str, Any]]:
    completed = subprocess.run(
        [str(binary_path("helm")), "template", "kms-storage-migrator", str(CHART), "-n", "kms", *values],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return [document for document in yaml.safe_load_all(completed.stdout) if document]


def of_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [document for document in documents if document["kind"] == kind]


def rule_groups(*values: str) -> dict[str, Any]:
    (rule,) = of_kind(render(*MONITORING, *values), "PrometheusRule")
    return dict(rule["spec"])


def rules(*values: str) -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for group in rule_groups(*values)["groups"] for rule in group["rules"]}


def dashboard() -> dict[str, Any]:
    (config_map,) = of_kind(render(*MONITORING), "ConfigMap")
    return dict(json.loads(config_map["data"]["kms-storage-migrator.json"]))


def dashboard_expressions(board: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])]


def metric_names(expressions: list[str]) -> set[str]:
    return {name for expression in expressions for name in SELECTOR.findall(expression)}


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: run scripts/setup.sh as root, or apt-get install prometheus"
    return path


def write_rules(directory: Path) -> Path:
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump(rule_groups()))
    return path


# --- static: rendering and promtool ---------------------------------------------------------


def test_monitoring_objects_are_rendered_only_when_enabled() -> None:
    default = render()
    assert of_kind(default, "PrometheusRule") == []
    assert of_kind(default, "ConfigMap") == []
    documents = render(
        *MONITORING,
        "--set",
        "monitoring.prometheusRule.labels.release=prometheus",
        "--set",
        "monitoring.grafanaDashboard.namespace=grafana",
    )
    (rule,) = of_kind(documents, "PrometheusRule")
    assert rule["metadata"]["namespace"] == "kms"
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    (config_map,) = of_kind(documents, "ConfigMap")
    # Grafana's sidecar picks dashboards up by this label, in the namespace it watches.
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == "grafana"
    assert set(rules()) == ALERTS


def test_rules_pass_promtool_check(tmp_path: Path) -> None:
    completed = subprocess.run(
        [promtool(), "check", "rules", str(write_rules(tmp_path))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in completed.stdout


def test_each_alert_fires_and_stays_quiet_as_its_unit_series_say(tmp_path: Path) -> None:
    write_rules(tmp_path)
    shutil.copy(ALERT_TESTS, tmp_path / ALERT_TESTS.name)
    tested = {
        case["alertname"]
        for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert tested == ALERTS, "every alert needs a case where it fires"
    completed = subprocess.run(
        [promtool(), "test", "rules", ALERT_TESTS.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "SUCCESS" in completed.stdout


def test_thresholds_and_job_come_from_the_values() -> None:
    custom = rules(
        "--set",
        "monitoring.prometheusRule.stalledFor=45m",
        "--set",
        "monitoring.prometheusRule.waitingForKeyFor=1h",
        "--set",
        "monitoring.prometheusRule.operatorDownFor=2m",
        "--set",
        "monitoring.prometheusRule.oldKeyDataFor=30d",
        "--set",
        "monitoring.prometheusRule.job=kube-system/kms",
    )
    assert "[45m]" in custom["KmsStorageMigrationStalled"]["expr"]
    assert "offset 45m" in custom["KmsStorageMigrationStalled"]["expr"]
    assert custom["KmsStorageMigrationWaitingForKey"]["for"] == "1h"
    assert custom["KmsStorageMigratorDown"]["for"] == "2m"
    assert custom["KmsStorageOldKeyStillHoldsData"]["for"] == "30d"
    assert "for 30d" in custom["KmsStorageOldKeyStillHoldsData"]["annotations"]["summary"]
    assert all('job="kube-system/kms"' in rule["expr"] for rule in custom.values())
    refused = subprocess.run(
        [
            str(binary_path("helm")),
            "template",
            "x",
            str(CHART),
            *MONITORING,
            "--set",
            "monitoring.prometheusRule.stalledFor=soon",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode != 0
    assert "/monitoring/prometheusRule/stalledFor" in refused.stderr


def test_dashboard_is_valid_grafana_json_over_the_operator_metrics() -> None:
    board = dashboard()
    assert board["uid"] == "kms-storage-migrator"
    expressions = dashboard_expressions(board)
    assert len(expressions) >= 6
    # Every panel queries the data source the user picks, for the job the user names.
    assert all('job=~"$job"' in expression for expression in expressions)
    assert {variable["name"] for variable in board["templating"]["list"]} == {"datasource", "job"}
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))


# --- on the dev cluster: every name is served -------------------------------------------------


@pytest.mark.integration
def test_every_metric_the_alerts_and_dashboard_use_is_served_after_a_migration(
    make_cluster: Callable[..., DevCluster], tmp_path: Path
) -> None:
    expressions = [rule["expr"] for rule in rules().values()] + dashboard_expressions(dashboard())
    names = metric_names(expressions)
    operator_names = names - PROMETHEUS_OWN
    # The expressions use nothing but the operator's metrics and Prometheus's own `up`.
    assert operator_names, names
    assert all(name.startswith("kms_storage_migrator_") for name in operator_names), names

    cluster = make_cluster(encryption="none")
    cluster.kubectl("create", "-f", "-", input=configmaps_list("monitored", 40))
    install_crd(cluster)
    cluster.encrypt()
    selection = {"resources": {"include": ["core/configmaps"]}}
    # Written before encryption: plaintext in etcd, counted by etcdctl, not by the operator.
    plaintext_before = stored_configmaps(cluster, lambda value: not value.startswith(KMS_PREFIX))
    assert len(plaintext_before) >= 40
    log = tmp_path / "operator.log"
    with OperatorProcess(cluster, log) as operator:
        apply_migration(cluster, "checked", {"mode": "VerifyOnly", **selection})
        checked = wait_finished(cluster, "checked", log=log, timeout=180)["status"]
        after_check = operator.metrics()
        apply_migration(cluster, "observed", {"mode": "Full", **selection})
        status = wait_finished(cluster, "observed", log=log, timeout=180)["status"]
        exposition = operator.metrics()
    assert status["phase"] == "Succeeded", status.get("message")

    # The read-back of stale data: the stale gauge is etcd's own count of plaintext ConfigMaps.
    assert checked["verification"]["result"] == "StaleFound", checked
    assert gauge(after_check, "verification_stale_objects", migration="checked") == len(plaintext_before)

    families = {family.name: family for family in text_string_to_metric_families(exposition)}
    sampled = {sample.name for family in families.values() for sample in family.samples}
    missing = []
    for name in sorted(operator_names):
        if name in ONLY_DECLARED:
            family, kind = ONLY_DECLARED[name]
            if family not in families or families[family].type != kind:
                missing.append(name)
        elif name not in sampled:
            missing.append(name)
    assert missing == [], f"not on the operator's /metrics: {missing}"
    # And the series carry this migration, as the alerts' `by (migration)` expects.
    assert 'kms_storage_migrator_migration_phase{migration="observed",phase="Succeeded"} 1.0' in exposition
    # The Full migration's verification replaced the VerifyOnly one: nothing stale, every
    # ConfigMap under the KMS plugin's primary key, as etcd shows them.
    assert gauge(exposition, "verification_stale_objects", migration="observed") == 0
    assert gauge(exposition, "verification_stale_objects", migration="checked") is None
    key_id = cluster.current_key_id()
    under_current = stored_configmaps(cluster, lambda value: key_id.encode() in value)
    assert len(under_current) >= 40
    assert gauge(exposition, "objects_by_key", migration="observed", key_id=key_id, current="true") == len(
        under_current
    )
    assert [line for line in exposition.splitlines() if 'current="false"' in line] == []


KMS_PREFIX = b"k8s:enc:kms:v2:"


def stored_configmaps(cluster: DevCluster, keep: Callable[[bytes], bool]) -> list[str]:
    """etcd keys of the ConfigMaps whose stored value ``keep`` accepts, read with etcdctl."""
    reply = json.loads(cluster.etcdctl("get", "/registry/configmaps/", "--prefix", "-w", "json"))
    return [
        base64.b64decode(kv["key"]).decode()
        for kv in reply.get("kvs", [])
        if keep(base64.b64decode(kv["value"]))
    ]


def gauge(exposition: str, name: str, **labels: str) -> float | None:
    """The value of one series on /metrics, None when it is not served."""
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == f"kms_storage_migrator_{name}" and sample.labels == labels:
                return float(sample.value)
    return None
