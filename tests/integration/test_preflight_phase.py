"""The migration's Preflight phase on the real dev cluster: what stops a run before any write.

One cluster for the module, in four steps that build on each other (the tests run in order):

1. it stores plaintext and has no KMS provider: the migration fails in Preflight, saying why;
2. switched to KMS v2, the dev cluster's etcd (no auth) lets the operator's etcd user write: a
   warning, so spec.preflight Enforce stops the run before any write;
3. the operator runs as a ServiceAccount that may not patch Secrets, and a CRD's conversion
   webhook does not answer: both resources are reported and marked Failed before any write,
   the ConfigMaps migrate (Warn mode goes on past the etcd warning and a dead validating
   webhook on ConfigMaps, listed with its failurePolicy and that it does not answer; an
   aggregated API whose server is away, listed as left out with the reason, a pass);
4. etcd auth on, the reader role read-only: no warning, so an Enforce run goes on and succeeds.

"Nothing written" is judged from etcd itself (etcdctl's mod revisions), not from the operator.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_harness import OperatorProcess, apply_migration, install_crd, wait_finished

from kms_storage_migrator.devcluster.cluster import DevCluster

pytestmark = pytest.mark.integration

NAMESPACE = "preflight"
SECRETS = f"/registry/secrets/{NAMESPACE}/"
CONFIGMAPS = f"/registry/configmaps/{NAMESPACE}/"
WIDGETS = "/registry/preflight.example.com/widgets/"
GROUP = "preflight.example.com"
OPERATOR_SA = "preflight-operator"
SELECTION = {"include": ["core/configmaps", "core/secrets"]}

# An aggregated API whose server is not there: discovery leaves it out, preflight says why.
AGGREGATED = "v1.aggregated.preflight.example.com"
DEAD_APISERVICE = {
    "apiVersion": "apiregistration.k8s.io/v1",
    "kind": "APIService",
    "metadata": {"name": AGGREGATED},
    "spec": {
        "group": "aggregated.preflight.example.com",
        "version": "v1",
        "service": {"namespace": "default", "name": "nothing-serves-this", "port": 443},
        "insecureSkipTLSVerify": True,
        "groupPriorityMinimum": 1000,
        "versionPriority": 15,
    },
}

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"widgets.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Cluster",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
        # v2 is the version discovery prefers, v1 the stored one: a list in v2 needs the webhook.
        "versions": [
            {
                "name": version,
                "served": True,
                "storage": version == "v1",
                "schema": {
                    "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                },
            }
            for version in ("v1", "v2")
        ],
        "conversion": {
            "strategy": "Webhook",
            "webhook": {
                "conversionReviewVersions": ["v1"],
                # Nothing listens on port 1: every conversion fails with connection refused.
                "clientConfig": {"url": "https://127.0.0.1:1/convert"},
            },
        },
    },
}


# Nobody listens on port 1 either; Ignore lets every write through once the connect fails.
DEAD_VALIDATOR = {
    "apiVersion": "admissionregistration.k8s.io/v1",
    "kind": "ValidatingWebhookConfiguration",
    "metadata": {"name": "preflight-dead-validator"},
    "webhooks": [
        {
            "name": "dead.preflight.example.com",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Ignore",
            "timeoutSeconds": 2,
            "clientConfig": {"url": "https://127.0.0.1:1/validate"},
            "rules": [
                {
                    "operations": ["UPDATE"],
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "resources": ["configmaps"],
                }
            ],
        }
    ],
}


@dataclass
class World:
    cluster: DevCluster
    directory: Path

    def operator(self, name: str, *, kubeconfig: Path | None = None) -> OperatorProcess:
        run_args = ("--kubeconfig", str(kubeconfig)) if kubeconfig else ()  # the last one wins
        return OperatorProcess(self.cluster, self.directory / f"{name}.log", run_args=run_args)

    def revisions(self, prefix: str) -> dict[str, int]:
        """Key -> mod revision, read by etcdctl: the reference the operator did not produce."""
        answer = json.loads(self.cluster.etcdctl("get", "--prefix", prefix, "--keys-only", "-w", "json"))
        return {
            base64.b64decode(kv["key"]).decode(): int(kv["mod_revision"]) for kv in answer.get("kvs") or []
        }

    def stored_as(self, prefix: str) -> set[str]:
        """How each key under ``prefix`` is stored: 'kms-v2' or 'plain'."""
        found = set()
        for key in self.revisions(prefix):
            value = self.cluster.etcd_value(key) or b""
            found.add("kms-v2" if value.startswith(b"k8s:enc:kms:v2:") else "plain")
        return found

    def run(self, operator: OperatorProcess, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        with operator:
            apply_migration(self.cluster, name, spec)
            return wait_finished(self.cluster, name, log=operator.log, timeout=240)

    def events(self, name: str) -> dict[str, str]:
        listing = json.loads(self.cluster.kubectl("get", "events", "-n", "default", "-o", "json"))
        return {e["reason"]: e["message"] for e in listing["items"] if e["involvedObject"]["name"] == name}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    directory = tmp_path_factory.mktemp("preflight-phase")
    cluster = DevCluster(directory / "cluster")
    cluster.up("none")
    try:
        install_crd(cluster)
        cluster.kubectl("create", "namespace", NAMESPACE)
        for index in range(4):
            cluster.kubectl(
                "create", "configmap", f"cm-{index}", "-n", NAMESPACE, f"--from-literal=k={index}"
            )
            cluster.kubectl(
                "create", "secret", "generic", f"s-{index}", "-n", NAMESPACE, f"--from-literal=k={index}"
            )
        yield World(cluster, directory)
    finally:
        cluster.down()


def _condition(migration: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in migration["status"]["conditions"] if c["type"] == kind)


def _finding(migration: dict[str, Any], check: str) -> dict[str, str]:
    return next(f for f in migration["status"]["preflight"] if f["check"] == check)


def test_a_cluster_that_does_not_encrypt_fails_in_preflight_and_nothing_is_written(world: World) -> None:
    before = world.revisions(SECRETS) | world.revisions(CONFIGMAPS)
    assert len(before) == 8
    done = world.run(world.operator("plaintext"), "to-nowhere", {"resources": SELECTION})
    status = done["status"]
    assert status["phase"] == "Failed"
    assert "preflight failed, nothing was written" in status["message"]
    assert "nothing to migrate to: no KMS v2 provider in /metrics" in status["message"]
    assert "this StorageMigration is stored in plaintext" in status["message"]
    assert "kms v2 provider first in each apiserver's --encryption-provider-config" in status["message"]
    assert status["totals"]["rewritten"] == 0
    condition = _condition(done, "PreflightPassed")
    assert (condition["status"], condition["reason"]) == ("False", "PreflightFailed")
    assert _finding(done, "write format")["verdict"] == "fail"
    assert "nothing to migrate to" in world.events("to-nowhere")["PreflightFailed"]
    assert world.revisions(SECRETS) | world.revisions(CONFIGMAPS) == before
    assert world.stored_as(SECRETS) == {"plain"}


def test_enforce_stops_on_a_warning_before_any_write(world: World) -> None:
    world.cluster.encrypt()
    before = world.revisions(SECRETS) | world.revisions(CONFIGMAPS)
    spec = {"resources": SELECTION, "preflight": "Enforce"}
    done = world.run(world.operator("enforce"), "enforced", spec)
    status = done["status"]
    assert status["phase"] == "Failed", status["message"]
    assert "spec.preflight is Enforce and preflight warned, nothing was written" in status["message"]
    assert "the operator's etcd user can write" in status["message"]
    assert _condition(done, "PreflightPassed")["reason"] == "WarningsEnforced"
    assert _finding(done, "etcd read-only")["verdict"] == "warn"
    assert _finding(done, "write format")["verdict"] == "ok"
    assert world.revisions(SECRETS) | world.revisions(CONFIGMAPS) == before
    assert world.stored_as(CONFIGMAPS) == {"plain"}


def _service_account_kubeconfig(world: World) -> Path:
    """A kubeconfig for a ServiceAccount holding the chart's role, except patch on Secrets."""
    cluster = world.cluster
    cluster.kubectl("create", "serviceaccount", OPERATOR_SA, "-n", "default")
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": OPERATOR_SA},
        "rules": [
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["list"]},
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["patch"]},
            {"apiGroups": [GROUP], "resources": ["widgets"], "verbs": ["patch"]},
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
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
            {"nonResourceURLs": ["/metrics", "/readyz/kms-providers"], "verbs": ["get"]},
        ],
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(role))
    cluster.kubectl(
        "create",
        "clusterrolebinding",
        OPERATOR_SA,
        f"--clusterrole={OPERATOR_SA}",
        f"--serviceaccount=default:{OPERATOR_SA}",
    )
    token = cluster.kubectl("create", "token", OPERATOR_SA, "-n", "default", "--duration=1h").strip()
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    context = config["contexts"][0]["context"]
    config["users"] = [{"name": OPERATOR_SA, "user": {"token": token}}]
    context["user"] = OPERATOR_SA
    path = world.directory / "operator-sa.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def test_a_resource_it_may_not_patch_and_a_broken_conversion_webhook_fail_before_any_write(
    world: World,
) -> None:
    cluster = world.cluster
    crd = json.dumps(WIDGET_CRD)
    cluster.kubectl("apply", "-f", "-", input=crd)
    cluster.wait_established(f"widgets.{GROUP}", timeout=30)
    widget = {"apiVersion": f"{GROUP}/v1", "kind": "Widget", "metadata": {"name": "w-1"}}
    cluster.kubectl("create", "-f", "-", input=json.dumps(widget))  # v1 is stored: no conversion
    cluster.kubectl("apply", "-f", "-", input=json.dumps(DEAD_VALIDATOR))
    cluster.kubectl("apply", "-f", "-", input=json.dumps(DEAD_APISERVICE))
    kubeconfig = _service_account_kubeconfig(world)
    secrets_before = world.revisions(SECRETS)
    widgets_before = world.revisions(WIDGETS)
    configmaps_before = world.revisions(CONFIGMAPS)
    spec = {"resources": {"include": [*SELECTION["include"], f"{GROUP}/widgets"]}}
    done = world.run(world.operator("refused", kubeconfig=kubeconfig), "refused", spec)
    status = done["status"]
    resources = {r["name"]: r for r in status["resources"]}
    secrets, widgets = resources["core/secrets"], resources[f"{GROUP}/widgets"]
    assert secrets["phase"] == "Failed"
    assert "preflight: permissions core/secrets" in secrets["message"]
    assert "may not patch core/secrets" in secrets["message"]
    assert widgets["phase"] == "Failed"
    assert "https://127.0.0.1:1/convert" in widgets["message"]
    assert resources["core/configmaps"]["phase"] == "Done"
    assert _finding(done, f"conversion webhook {GROUP}/widgets")["verdict"] == "fail"
    assert _finding(done, "permissions core/secrets")["verdict"] == "fail"
    # Warn mode: neither the etcd warning nor the webhook's stopped it.
    assert _finding(done, "etcd read-only")["verdict"] == "warn"
    webhook = _finding(done, "admission webhook dead.preflight.example.com")
    assert webhook["verdict"] == "warn"
    assert webhook["message"].startswith(
        "admission webhook dead.preflight.example.com: validating (preflight-dead-validator, "
        "failurePolicy Ignore) intercepts the write of core/configmaps; "
        "https://127.0.0.1:1/validate: does not answer"
    ), webhook["message"]
    # Listed with the reason, and a pass: its objects are not in this etcd.
    aggregated = _finding(done, "aggregated APIs")
    assert aggregated["verdict"] == "ok"
    assert "aggregated.preflight.example.com/* (aggregated API server unavailable (" in aggregated["message"]
    assert "not stored in this apiserver's etcd" in aggregated["message"]
    cluster.kubectl("delete", "apiservice", AGGREGATED)
    condition = _condition(done, "PreflightPassed")
    assert (condition["status"], condition["reason"]) == ("False", "ResourcesFailed")
    assert status["phase"] == "Failed"  # not everything selected was migrated, and it says so
    assert world.revisions(SECRETS) == secrets_before
    assert world.revisions(WIDGETS) == widgets_before
    assert world.stored_as(SECRETS) == {"plain"}
    # The others migrated: every ConfigMap was written again, now under KMS v2.
    after = world.revisions(CONFIGMAPS)
    assert after.keys() == configmaps_before.keys()
    assert all(after[key] > configmaps_before[key] for key in after)
    assert world.stored_as(CONFIGMAPS) == {"kms-v2"}
    assert "ResourcesFailed" in world.events("refused")


def test_a_read_only_etcd_user_passes_so_an_enforce_run_goes_on(world: World) -> None:
    world.cluster.kubectl("delete", "validatingwebhookconfiguration", "preflight-dead-validator")
    _read_only_etcd(world.cluster)
    spec = {"resources": SELECTION, "preflight": "Enforce"}
    done = world.run(world.operator("read-only"), "read-only", spec)
    status = done["status"]
    assert status["phase"] == "Succeeded", status["message"]
    assert _finding(done, "etcd read-only") == {
        "check": "etcd read-only",
        "verdict": "ok",
        "message": f"etcd read-only: {world.cluster.etcd_endpoint}: the operator's etcd user cannot write",
    }
    assert _condition(done, "PreflightPassed")["reason"] == "AllChecksPassed"
    assert world.stored_as(SECRETS) == {"kms-v2"}


def _read_only_etcd(cluster: DevCluster) -> None:
    """etcd auth on: the apiserver's certificate user is root, the operator's reads /registry only.

    etcd names a client-certificate user by its CN (the server runs with --client-cert-auth).
    """
    admin = cluster.pki.apiserver_etcd_client
    base = [
        str(cluster.binary("etcdctl")),
        f"--endpoints={cluster.etcd_endpoint}",
        f"--cacert={cluster.pki.ca.cert}",
        f"--cert={admin.cert}",
        f"--key={admin.key}",
    ]
    steps = [
        ["user", "add", "root", "--no-password"],
        ["user", "grant-role", "root", "root"],
        ["user", "add", "kube-apiserver-etcd-client", "--no-password"],
        ["user", "grant-role", "kube-apiserver-etcd-client", "root"],
        ["role", "add", "registry-reader"],
        ["role", "grant-permission", "registry-reader", "read", "--prefix", "/registry/"],
        ["user", "add", "kms-storage-migrator-etcd-reader", "--no-password"],
        ["user", "grant-role", "kms-storage-migrator-etcd-reader", "registry-reader"],
        ["auth", "enable"],
    ]
    for step in steps:
        subprocess.run([*base, *step], check=True, capture_output=True, timeout=30)
