"""The chart's ServiceAccount, with its `kms-storage-migrator` ClusterRole, on the real apiserver.

Every test installs the chart into a cluster of its own and acts with a token of the chart's
ServiceAccount from the TokenRequest API (the dev cluster runs no controller-manager, so no token
Secret is ever created). What is proven:

- the role grants exactly its rules and nothing else (`kubectl auth can-i`), and of Leases only
  the one leader-election Lease can be read or changed;
- a no-op rewrite of Roles, ClusterRoles and their bindings passes the apiserver's escalation
  check without `escalate` or `bind`, really re-encrypts them, and a patch that changes them is
  still refused (the measurement behind the ClusterRole's comment);
- the operator, run out of cluster with that token, completes a whole migration.
"""

from __future__ import annotations

import base64
import json
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from kms_storage_migrator.devcluster.binaries import binary_path
from kms_storage_migrator.devcluster.cluster import DevCluster
from kms_storage_migrator.devcluster.seed import seed
from kms_storage_migrator.storage.keys import NOT_REWRITABLE_LOCATIONS

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kms-storage-migrator"
RELEASE = "kms-storage-migrator"
NAMESPACE = "kms-storage-migrator"
SERVICE_ACCOUNT = "kms-storage-migrator"
KMS_PREFIX = b"k8s:enc:kms:v2:"
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
RBAC_API = "/apis/rbac.authorization.k8s.io/v1"

# Exactly the chart's rules as `kubectl auth can-i --list` prints them, (resource, verbs): the
# ClusterRole's everywhere, plus the events Role's in "default".
CLUSTER_RULES = {
    ("*.*", ("list", "patch")),
    ("storagemigrations.kms-storage-migrator.io", ("list", "watch", "patch")),
    ("storagemigrations.kms-storage-migrator.io/status", ("patch",)),
}
EVENTS_RULE = ("events", ("create",))
LEASE_NAME = "kms-storage-migrator"
# Leader election, in the release namespace only: get/update on one Lease by name, and create
# (which RBAC cannot limit by name). `resource[name]` is how rules_of shows resourceNames.
LEASE_RULES = {
    (f"leases.coordination.k8s.io[{LEASE_NAME}]", ("get", "update")),
    ("leases.coordination.k8s.io", ("create",)),
}
LEASES_API = "/apis/coordination.k8s.io/v1"
# The full failure lists (<migration>-failures), in the release namespace only: names follow
# the migrations, so resourceNames cannot narrow them.
FAILURE_LIST_RULES = {("configmaps", ("get", "create", "patch"))}

# Objects the rewrite tests create while the cluster still stores plaintext: RBAC objects whose
# rules and role references the ServiceAccount does not hold (so an escalation check that ran
# would refuse the rewrite), and a Secret.
LEGACY_OBJECTS = """
apiVersion: v1
kind: Namespace
metadata: {name: team-a}
---
apiVersion: v1
kind: Secret
metadata: {name: db-password, namespace: team-a}
stringData: {password: rbac-test-password-0451}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: secret-admin}
rules:
  - {apiGroups: [""], resources: ["secrets"], verbs: ["get", "watch", "create", "delete"]}
  - {apiGroups: ["rbac.authorization.k8s.io"], resources: ["*"], verbs: ["escalate", "bind"]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: ops-are-admins}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: ops}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: secret-reader, namespace: team-a}
rules: [{apiGroups: [""], resources: ["secrets"], verbs: ["get", "watch"]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: alice-is-admin, namespace: team-a}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}]
"""

# (API path, etcd key) of the RBAC objects above plus built-in ones: cluster-admin, and `admin`,
# an aggregated ClusterRole whose rules a controller fills in.
RBAC_OBJECTS = [
    (f"{RBAC_API}/clusterroles/secret-admin", "/registry/clusterroles/secret-admin"),
    (f"{RBAC_API}/clusterroles/cluster-admin", "/registry/clusterroles/cluster-admin"),
    (f"{RBAC_API}/clusterroles/admin", "/registry/clusterroles/admin"),
    (f"{RBAC_API}/clusterrolebindings/ops-are-admins", "/registry/clusterrolebindings/ops-are-admins"),
    (f"{RBAC_API}/clusterrolebindings/cluster-admin", "/registry/clusterrolebindings/cluster-admin"),
    (f"{RBAC_API}/namespaces/team-a/roles/secret-reader", "/registry/roles/team-a/secret-reader"),
    (
        f"{RBAC_API}/namespaces/team-a/rolebindings/alice-is-admin",
        "/registry/rolebindings/team-a/alice-is-admin",
    ),
]


@dataclass
class ServiceAccountClient:
    """Talks to the apiserver as the chart's ServiceAccount, with a TokenRequest token."""

    kubeconfig: Path
    server: str
    token: str = field(repr=False)  # a credential: kept out of assertion messages
    ssl_context: ssl.SSLContext

    def kubectl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(binary_path("kubectl")), "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            check=False,
        )

    def can_i(self, verb: str, resource: str, namespace: str | None = None) -> bool:
        scope = ["--namespace", namespace] if namespace else ["--all-namespaces"]
        result = self.kubectl("auth", "can-i", verb, resource, *scope)
        assert result.stdout.strip() in ("yes", "no"), result.stderr
        return result.stdout.strip() == "yes"

    def patch(
        self, path: str, body: dict[str, Any], content_type: str = "application/merge-patch+json"
    ) -> tuple[int, dict[str, Any]]:
        return self.request("PATCH", path, body, content_type, accept=METADATA_ONLY)

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(
            self.server + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": content_type, "Accept": accept},
        )
        try:
            with urllib.request.urlopen(request, context=self.ssl_context) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())


def install_chart(cluster: DevCluster) -> None:
    subprocess.run(
        [
            str(binary_path("helm")),
            "install",
            RELEASE,
            str(CHART),
            "--namespace",
            NAMESPACE,
            "--create-namespace",
            "--kubeconfig",
            str(cluster.kubeconfig),
        ],
        capture_output=True,
        text=True,
        check=True,
    )


def service_account_client(
    cluster: DevCluster, directory: Path, name: str = SERVICE_ACCOUNT
) -> ServiceAccountClient:
    """A kubeconfig holding only a TokenRequest token for ``name``: no client certificate."""
    token = cluster.kubectl("create", "token", name, "--namespace", NAMESPACE, "--duration=2h").strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    server = admin["clusters"][0]["cluster"]["server"]
    ca_data = admin["clusters"][0]["cluster"]["certificate-authority-data"]
    kubeconfig = directory / f"{name}.kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "dev", "cluster": {"server": server, "certificate-authority-data": ca_data}}
                ],
                "users": [{"name": name, "user": {"token": token}}],
                "contexts": [
                    {"name": name, "context": {"cluster": "dev", "user": name, "namespace": NAMESPACE}}
                ],
                "current-context": name,
            }
        )
    )
    kubeconfig.chmod(0o600)
    context = ssl.create_default_context(cadata=base64.b64decode(ca_data).decode())
    return ServiceAccountClient(kubeconfig, server, token, context)


def rules_of(client: ServiceAccountClient, namespace: str) -> set[tuple[str, tuple[str, ...]]]:
    """(resource, verbs) of every resource rule `kubectl auth can-i --list` reports in ``namespace``;
    a rule limited to resource names shows as ``resource[name ...]``."""
    result = client.kubectl("auth", "can-i", "--list", "--namespace", namespace)
    assert result.returncode == 0, result.stderr
    rules = set()
    for line in result.stdout.splitlines()[1:]:
        match = re.match(r"^(\S+)\s+\[\]\s+\[(.*?)\]\s+\[(.*)\]\s*$", line)
        if match:
            resource = f"{match.group(1)}[{match.group(2)}]" if match.group(2) else match.group(1)
            rules.add((resource, tuple(match.group(3).split())))
    return rules


def stored_value(cluster: DevCluster, key: str) -> bytes:
    value = cluster.etcd_value(key)
    assert value is not None, f"{key} is not in etcd"
    return value


def make_legacy_cluster(make_cluster: Callable[..., DevCluster], seed_objects: int = 0) -> DevCluster:
    """A cluster that stored plaintext, now writing through KMS v2, with the chart installed."""
    cluster = make_cluster(encryption="none")
    cluster.kubectl("apply", "-f", "-", input=LEGACY_OBJECTS)
    if seed_objects:
        # core, apps, RBAC and custom resources, namespaced and cluster-scoped
        seed(cluster, count=seed_objects, namespaces=4, progress=False)
    install_chart(cluster)
    cluster.encrypt()
    return cluster


@pytest.fixture
def legacy_cluster(make_cluster: Callable[..., DevCluster]) -> DevCluster:
    return make_legacy_cluster(make_cluster)


def test_service_account_holds_exactly_the_chart_rules(legacy_cluster: DevCluster, tmp_path: Path) -> None:
    operator = service_account_client(legacy_cluster, tmp_path)
    # What every ServiceAccount may do anyway (discovery, self reviews, public info): measured on
    # a ServiceAccount of the same namespace bound to nothing.
    legacy_cluster.kubectl("create", "serviceaccount", "unbound", "--namespace", NAMESPACE)
    unbound = service_account_client(legacy_cluster, tmp_path, "unbound")

    assert (
        rules_of(operator, NAMESPACE) - rules_of(unbound, NAMESPACE)
        == CLUSTER_RULES | LEASE_RULES | FAILURE_LIST_RULES
    )
    assert rules_of(operator, "team-a") - rules_of(unbound, "team-a") == CLUSTER_RULES
    assert rules_of(operator, "default") - rules_of(unbound, "default") == CLUSTER_RULES | {EVENTS_RULE}

    # The engine's two verbs, everywhere, for built-in and custom resources.
    for resource in ("secrets", "configmaps", "clusterroles.rbac.authorization.k8s.io", "deployments.apps"):
        assert operator.can_i("list", resource)
        assert operator.can_i("patch", resource)
    assert operator.can_i("watch", "storagemigrations.kms-storage-migrator.io")
    assert operator.can_i("patch", "storagemigrations.kms-storage-migrator.io/status")
    assert not operator.can_i("update", "storagemigrations.kms-storage-migrator.io/status")
    assert not operator.can_i("get", "storagemigrations.kms-storage-migrator.io")
    assert operator.can_i("create", "events", namespace="default")
    # (patch is held everywhere anyway: the no-op write.)
    for verb in ("get", "create"):
        assert operator.can_i(verb, "configmaps", namespace=NAMESPACE)
        assert not operator.can_i(verb, "configmaps", namespace="default")
    assert not operator.can_i("delete", "configmaps", namespace=NAMESPACE)


# What the ServiceAccount must not be able to do, cluster-wide and in a namespace.
FORBIDDEN = [
    # Never reads a single object, and never streams one: in particular no Secret.
    ("get", "secrets"),
    ("watch", "secrets"),
    ("get", "configmaps"),
    ("get", "clusterroles.rbac.authorization.k8s.io"),
    # Creates and deletes nothing (its own resource included: users create migrations).
    ("create", "secrets"),
    ("create", "pods"),
    ("create", "deployments.apps"),
    ("create", "storagemigrations.kms-storage-migrator.io"),
    ("delete", "secrets"),
    ("delete", "pods"),
    ("delete", "storagemigrations.kms-storage-migrator.io"),
    ("deletecollection", "configmaps"),
    # ConfigMaps are created only for the failure lists, in the release namespace.
    ("create", "configmaps"),
    ("update", "configmaps"),
    ("delete", "configmaps"),
    ("update", "secrets"),
    ("update", "clusterroles.rbac.authorization.k8s.io"),
    # Events only in "default", where the operator posts them (never through events.k8s.io).
    ("create", "events"),
    ("create", "events.events.k8s.io"),
    # Leases only in the release namespace (and get/update only of its own): not the
    # apiservers' identity Leases in kube-system, not another controller's lock.
    ("get", "leases.coordination.k8s.io"),
    ("update", "leases.coordination.k8s.io"),
    ("create", "leases.coordination.k8s.io"),
    ("delete", "leases.coordination.k8s.io"),
    # No way around RBAC, no shells, no new credentials.
    ("escalate", "clusterroles.rbac.authorization.k8s.io"),
    ("bind", "clusterroles.rbac.authorization.k8s.io"),
    ("impersonate", "users"),
    ("impersonate", "serviceaccounts"),
    ("create", "pods/exec"),
    ("get", "pods/log"),
    ("create", "serviceaccounts/token"),
    ("create", "certificatesigningrequests.certificates.k8s.io"),
    ("get", "nodes/proxy"),
]


def test_service_account_cannot_step_outside_its_rules(legacy_cluster: DevCluster, tmp_path: Path) -> None:
    operator = service_account_client(legacy_cluster, tmp_path)
    allowed = [
        f"{verb} {resource} ({scope or 'all namespaces'})"
        for verb, resource in FORBIDDEN
        for scope in (None, "team-a")
        if operator.can_i(verb, resource, namespace=scope)
    ]
    assert allowed == []


def test_only_the_leader_election_lease_can_be_read_or_changed(
    legacy_cluster: DevCluster, tmp_path: Path
) -> None:
    operator = service_account_client(legacy_cluster, tmp_path)
    # Another controller's lock beside ours, and the apiservers' identity Leases (the key
    # convergence gate lists these, but may never change them).
    legacy_cluster.kubectl(
        "create",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": "someone-elses-lock", "namespace": NAMESPACE},
                "spec": {"holderIdentity": "other-controller", "leaseDurationSeconds": 15},
            }
        ),
    )
    identity_leases = json.loads(
        legacy_cluster.kubectl(
            "get", "leases", "-n", "kube-system", "-l", "apiserver.kubernetes.io/identity", "-o", "json"
        )
    )["items"]
    assert identity_leases, "the dev cluster's apiserver keeps an identity Lease"

    ours = f"{LEASES_API}/namespaces/{NAMESPACE}/leases"
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": LEASE_NAME, "namespace": NAMESPACE},
        "spec": {"holderIdentity": "replica-a", "leaseDurationSeconds": 15},
    }
    status, created = operator.request("POST", ours, lease)
    assert status == 201, created
    status, read = operator.request("GET", f"{ours}/{LEASE_NAME}")
    assert status == 200, read
    read["spec"]["holderIdentity"] = "replica-b"
    status, updated = operator.request("PUT", f"{ours}/{LEASE_NAME}", read)
    assert status == 200, updated

    others = [(f"{ours}/someone-elses-lock", NAMESPACE)] + [
        (f"{LEASES_API}/namespaces/kube-system/leases/{item['metadata']['name']}", "kube-system")
        for item in identity_leases
    ]
    for path, _ in others:
        status, answer = operator.request("GET", path)
        assert status == 403, (path, answer)
        body = {**lease, "metadata": {"name": path.rsplit("/", 1)[1], "namespace": path.split("/")[5]}}
        status, answer = operator.request("PUT", path, body)
        assert status == 403, (path, answer)
        status, answer = operator.request("DELETE", path)
        assert status == 403, (path, answer)
    # The grant create cannot avoid: a Lease of another name may be created in the release
    # namespace, but it is then as out of reach as any other.
    stray = {**lease, "metadata": {"name": "stray", "namespace": NAMESPACE}}
    assert operator.request("POST", ours, stray)[0] == 201
    assert operator.request("PUT", f"{ours}/stray", stray)[0] == 403
    assert operator.request("POST", f"{LEASES_API}/namespaces/kube-system/leases", stray)[0] == 403
    # The other lock is as its owner left it.
    after = json.loads(
        legacy_cluster.kubectl("get", "lease", "someone-elses-lock", "-n", NAMESPACE, "-o", "json")
    )
    assert after["spec"]["holderIdentity"] == "other-controller"


def noop_write(current: dict[str, Any], form: str) -> tuple[dict[str, Any], str, str]:
    """(body, content type, query) of a write that changes nothing, guarded by uid + resourceVersion."""
    metadata = current["metadata"]
    preconditions = {"uid": metadata["uid"], "resourceVersion": metadata["resourceVersion"]}
    if form == "merge-patch":
        return {"metadata": preconditions}, "application/merge-patch+json", ""
    # Server-side apply of identity fields only, as the in-tree storage version migrator does.
    identity = {
        "name": metadata["name"],
        **({"namespace": metadata["namespace"]} if "namespace" in metadata else {}),
    }
    body = {
        "apiVersion": current["apiVersion"],
        "kind": current["kind"],
        "metadata": identity | preconditions,
    }
    return body, "application/apply-patch+yaml", "?fieldManager=kms-storage-migrator"


@pytest.mark.parametrize("form", ["merge-patch", "server-side-apply"])
def test_noop_rewrite_of_rbac_objects_needs_no_escalate_or_bind(
    legacy_cluster: DevCluster, tmp_path: Path, form: str
) -> None:
    operator = service_account_client(legacy_cluster, tmp_path)
    for path, key in RBAC_OBJECTS:
        assert not stored_value(legacy_cluster, key).startswith(KMS_PREFIX), (
            f"{key} should start as plaintext"
        )
        current = json.loads(legacy_cluster.kubectl("get", "--raw", path))
        body, content_type, query = noop_write(current, form)
        status, answer = operator.patch(path + query, body, content_type)
        assert status == 200, f"no-op {form} of {path} refused: {answer.get('message')}"
        assert answer["kind"] == "PartialObjectMetadata"  # the response carried no rules or subjects
        assert stored_value(legacy_cluster, key).startswith(KMS_PREFIX + b"local-kms:"), (
            f"{key} not rewritten"
        )
        after = json.loads(legacy_cluster.kubectl("get", "--raw", path))
        for rbac_field in ("rules", "subjects", "roleRef", "aggregationRule"):
            assert after.get(rbac_field) == current.get(rbac_field)


def test_list_hands_secret_data_only_to_clients_that_ask_for_it(
    legacy_cluster: DevCluster, tmp_path: Path
) -> None:
    """What docs/install.md says plainly: RBAC cannot make `list` metadata-only; the client chooses."""
    legacy_cluster.kubectl(
        "create",
        "secret",
        "generic",
        "api-key",
        "-n",
        "team-a",
        "--from-literal=key=created-not-applied-7734",
    )
    token_holder = service_account_client(legacy_cluster, tmp_path)
    path = "/api/v1/namespaces/team-a/secrets"

    # As the operator asks: metadata only, no `data`.
    status, page = token_holder.request("GET", path, accept=METADATA_LIST)
    assert status == 200
    assert page["kind"] == "PartialObjectMetadataList"
    assert all(set(item) == {"kind", "apiVersion", "metadata"} for item in page["items"])
    assert "created-not-applied-7734" not in json.dumps(page)
    # The caveat the docs name: `kubectl apply` copies the whole object, Secret data included,
    # into an annotation, and annotations are metadata.
    applied = next(item for item in page["items"] if item["metadata"]["name"] == "db-password")
    assert "rbac-test-password-0451" in applied["metadata"]["annotations"][LAST_APPLIED]

    # As anyone holding the token may ask: the same permission returns every Secret's data.
    status, page = token_holder.request("GET", path)
    assert status == 200
    created = next(item for item in page["items"] if item["metadata"]["name"] == "api-key")
    assert base64.b64decode(created["data"]["key"]) == b"created-not-applied-7734"
    # While reading one object by name is refused.
    status, _ = token_holder.request("GET", f"{path}/api-key")
    assert status == 403


@pytest.mark.parametrize(
    ("path", "change"),
    [
        (
            f"{RBAC_API}/namespaces/team-a/roles/secret-reader",
            {"rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["*"]}]},
        ),
        (f"{RBAC_API}/clusterroles/secret-admin", {"metadata": {"labels": {"changed": "yes"}}}),
        (
            f"{RBAC_API}/namespaces/team-a/rolebindings/alice-is-admin",
            {"subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "mallory"}]},
        ),
        (
            f"{RBAC_API}/clusterrolebindings/ops-are-admins",
            {"subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "everyone"}]},
        ),
    ],
    ids=["role-rules", "clusterrole-label", "rolebinding-subjects", "clusterrolebinding-subjects"],
)
def test_a_patch_that_changes_rbac_objects_is_still_refused(
    legacy_cluster: DevCluster, tmp_path: Path, path: str, change: dict[str, Any]
) -> None:
    operator = service_account_client(legacy_cluster, tmp_path)
    status, answer = operator.patch(path, change)
    assert status == 403, answer
    assert "forbidden" in answer["message"]


# --- the operator, out of cluster, as the ServiceAccount ------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_operator(
    cluster: DevCluster, kubeconfig: Path, log_path: Path, health_port: int
) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kms_storage_migrator",
                "run",
                "--kubeconfig",
                str(kubeconfig),
                # Read-only etcd access is separate from RBAC; with it the run ends verified.
                "--etcd-config",
                str(cluster.etcd_config),
                "--metrics-port",
                str(free_port()),
                # The endpoint the chart's liveness and readiness probes use.
                "--health-port",
                str(health_port),
                # As the chart runs it: only while holding the Lease, with the Role's verbs.
                "--leader-elect",
                "--leader-elect-namespace",
                NAMESPACE,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=log_path.parent,
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def etcd_values(cluster: DevCluster, prefix: str) -> dict[str, bytes]:
    listing = json.loads(cluster.etcdctl("get", prefix, "--prefix", "-w", "json"))
    return {
        base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", ""))
        for kv in listing.get("kvs", [])
    }


def apiserver_internal(key: str) -> bool:
    """Keys no API serves (allocator ranges, apiserver leases): only the apiserver rewrites them."""
    return key.removeprefix("/registry/").split("/")[0] in NOT_REWRITABLE_LOCATIONS


def wait_for_end(
    cluster: DevCluster, name: str, process: subprocess.Popen[bytes], log_path: Path
) -> dict[str, Any]:
    deadline = time.monotonic() + 600
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        assert process.poll() is None, (
            f"operator exited {process.returncode}:\n{log_path.read_text()[-4000:]}"
        )
        status = json.loads(cluster.kubectl("get", "storagemigration", name, "-o", "json")).get("status", {})
        if status.get("phase") in ("Succeeded", "Failed"):
            return status
        time.sleep(2)
    raise AssertionError(f"migration {name} did not end in 10 minutes: {json.dumps(status)[:4000]}")


def test_operator_as_the_chart_service_account_completes_a_full_migration(
    make_cluster: Callable[..., DevCluster], tmp_path: Path
) -> None:
    cluster = make_legacy_cluster(make_cluster, seed_objects=160)
    rbac_before = {path: json.loads(cluster.kubectl("get", "--raw", path)) for path, _ in RBAC_OBJECTS}
    plaintext_before = sorted(
        key
        for key, value in etcd_values(cluster, "/registry/").items()
        if not value.startswith(KMS_PREFIX) and not apiserver_internal(key)
    )
    assert len(plaintext_before) > 160

    client = service_account_client(cluster, tmp_path)
    log_path = tmp_path / "operator.log"
    health_port = free_port()
    process = start_operator(cluster, client.kubeconfig, log_path, health_port)
    try:
        cluster.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps(
                {
                    "apiVersion": "kms-storage-migrator.io/v1alpha1",
                    "kind": "StorageMigration",
                    "metadata": {"name": "reencrypt-all"},
                    "spec": {"mode": "Full"},
                }
            ),
        )
        status = wait_for_end(cluster, "reencrypt-all", process, log_path)
        with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/healthz", timeout=10) as health:
            assert health.status == 200
    finally:
        stop(process)
    log = log_path.read_text()
    # It led (create, then renewals by update) and, stopped, released the Lease (update).
    assert "became leader" in log, log[-4000:]
    lease = json.loads(cluster.kubectl("get", "lease", LEASE_NAME, "-n", NAMESPACE, "-o", "json"))
    assert not lease["spec"].get("holderIdentity"), lease["spec"]
    assert process.returncode == 0, log[-4000:]
    assert status["phase"] == "Succeeded", (
        f"status: {json.dumps(status, indent=1)[:4000]}\nlog:\n{log[-4000:]}"
    )
    assert status["totals"]["failed"] == 0
    assert status["verification"]["result"] == "Verified"
    # Any refusal by RBAC would show here, including kopf's own ("Not enough permissions ...").
    assert "forbidden" not in log.lower(), log[-4000:]
    assert "not enough permissions" not in log.lower(), log[-4000:]
    # Never secret data in the operator's output.
    assert "rbac-test-password-0451" not in log
    assert "seed-password-" not in log
    # Events about the migration were posted, into the one namespace the chart allows.
    events = json.loads(
        cluster.kubectl(
            "get",
            "events",
            "-n",
            "default",
            "--field-selector=involvedObject.name=reencrypt-all",
            "-o",
            "json",
        )
    )["items"]
    assert events, "no event about the StorageMigration in namespace default"

    # Every object that was plaintext before is now stored through the KMS v2 provider, RBAC
    # objects and custom resources included, and RBAC objects read back unchanged.
    stored = etcd_values(cluster, "/registry/")
    current = KMS_PREFIX + cluster.provider_name.encode() + b":"
    still_plaintext = [
        key for key in plaintext_before if key in stored and not stored[key].startswith(current)
    ]
    assert still_plaintext == []
    for path, key in RBAC_OBJECTS:
        assert stored[key].startswith(current), key
        after = json.loads(cluster.kubectl("get", "--raw", path))
        for rbac_field in ("rules", "subjects", "roleRef", "aggregationRule"):
            assert after.get(rbac_field) == rbac_before[path].get(rbac_field)
    custom = [key for key in plaintext_before if key.startswith("/registry/demo.kms-storage-migrator.io/")]
    assert len(custom) > 10  # namespaced Gadgets and cluster-scoped Regions
