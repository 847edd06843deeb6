"""The operator image, built from the Dockerfile and run the way the chart's pod spec runs it.

`scripts/build-image.sh --local-base` builds the image with buildah (from a Debian base made
here with debootstrap: no registry is reachable) or reuses it when its inputs are unchanged.
podman then runs it with what the rendered Deployment asks of the pod: read-only root file
system, the chart's UID/GID, every capability dropped, no privilege escalation, a tmpfs at
/tmp, the etcd client Secret's files at the chart's path, and a ServiceAccount token and CA at
the in-cluster path with `KUBERNETES_SERVICE_*` pointing at the dev cluster on loopback (host
networking stands in for the pod network; the apiserver's certificate names 127.0.0.1).

What is judged comes from outside the container: the kernel's record of the process
(/proc/PID/status), the probes over HTTP, etcd read with etcdctl and the project's `scan`, and
podman's exit code.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_harness import apply_migration, free_port, install_crd, wait_finished

from kms_storage_migrator.devcluster.binaries import binary_path
from kms_storage_migrator.devcluster.cluster import DevCluster
from kms_storage_migrator.devcluster.seed import seed

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "build-image.sh"
CHART = REPO / "charts" / "kms-storage-migrator"
RELEASE = "kms-storage-migrator"
NAMESPACE = "kms-storage-migrator"
SERVICE_ACCOUNT = "kms-storage-migrator"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
STORAGE = ("--storage-driver", "vfs")  # where build-image.sh keeps its images
# runc, not podman's default crun (which refuses this VM's hybrid cgroups), and limits below the
# machine's hard limit of open files (see docs/install.md, section 1).
RUNTIME = ("--runtime", "runc", "--ulimit", "nofile=10000:10000", "--ulimit", "nproc=10000:10000")
KMS_PREFIX = b"k8s:enc:kms:v2:"
SEEDED_NAMESPACES = 2
SEEDED_OBJECTS = 120
SEEDED_SELECTION = {
    "include": ["core/configmaps", "core/secrets", "apps/*", "rbac.authorization.k8s.io/*"],
    "exclude": ["apps/controllerrevisions"],
}
# The same types, as `scan --resource` names them: what the independent before/after count reads.
SELECTED_RESOURCES = (
    "configmaps",
    "secrets",
    "deployments.apps",
    "replicasets.apps",
    "statefulsets.apps",
    "daemonsets.apps",
    "roles.rbac.authorization.k8s.io",
    "rolebindings.rbac.authorization.k8s.io",
    "clusterroles.rbac.authorization.k8s.io",
    "clusterrolebindings.rbac.authorization.k8s.io",
)
# What the kubelet gives a pod between SIGTERM and SIGKILL when the pod spec sets nothing.
KUBERNETES_DEFAULT_GRACE_SECONDS = 30
# Issue 13's goal for the image, uncompressed, as podman counts it (SI megabytes). A size, not a
# time: the same Dockerfile and inputs give the same bytes on any machine.
MAX_IMAGE_BYTES = 150 * 10**6
# The generated kubernetes models the Dockerfile keeps (it drops every other model and API
# class): kopf imports the first two at start and swallows the ImportError if they are missing.
KOPF_KUBERNETES_MODELS = ("V1ObjectMeta", "V1OwnerReference")


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(
        ["podman", *STORAGE, *args], capture_output=True, text=True, check=False, timeout=timeout
    )
    if check and completed.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed:\n{completed.stdout}\n{completed.stderr}")
    return completed


@pytest.fixture(scope="module")
def image() -> str:
    # The script installs buildah, podman, runc and debootstrap when they are missing, so this
    # test never needs to skip. A cold build takes minutes; an unchanged one seconds.
    completed = subprocess.run(
        [str(BUILD_SCRIPT), "--local-base"], capture_output=True, text=True, check=False, timeout=1800
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr[-6000:]
    kind, name, _image_id, size = completed.stdout.strip().splitlines()[-1].split()
    assert kind == "image"
    print(f"image {name}: {int(size) / 1e6:.0f} MB")
    return name


# --- what the image holds ---------------------------------------------------------------------

# Runs inside the image: its own user, and every file of a compiler, installer, shell or the
# builder's strip tools that it holds anywhere (not only on the PATH), found by walking the
# whole file system.
IMAGE_PROBE = """
import importlib.util, json, os, re, shutil
unwanted = re.compile(
    r"(gcc(-[0-9.]+)?|g\\+\\+|c\\+\\+|cc|cc1|clang|ld|as|pip[0-9.]*|apt(-get)?|dpkg(-[a-z]+)?"
    r"|sh|bash|dash|perl(5[0-9.]*)?|strip|objcopy|readelf)"
)
found = []
for directory, subdirectories, files in os.walk("/"):
    if directory == "/":
        subdirectories[:] = [d for d in subdirectories if d not in ("proc", "sys", "dev")]
    found += [os.path.join(directory, f) for f in files + subdirectories if unwanted.fullmatch(f)]
print(json.dumps({
    "uid": os.getuid(), "gid": os.getgid(),
    "unwanted": found,
    "modules": {name: importlib.util.find_spec(name) is not None for name in ("pip", "ensurepip")},
    "operator": shutil.which("kms-storage-migrator"),
}))
"""

# Runs inside the image: imports every module of the operator, and resolves the kubernetes
# models named on its command line, reporting each failure.
IMPORT_PROBE = """
import importlib, json, pkgutil, sys
import kms_storage_migrator
failed = {}
for module in pkgutil.walk_packages(kms_storage_migrator.__path__, "kms_storage_migrator."):
    if not module.name.endswith(".__main__"):  # importing it runs the CLI
        try:
            importlib.import_module(module.name)
        except Exception as error:
            failed[module.name] = repr(error)
import kubernetes.client
models = {}
for name in sys.argv[1:]:
    try:
        models[name] = getattr(kubernetes.client, name).__name__
    except Exception as error:
        models[name] = repr(error)
print(json.dumps({"import_failures": failed, "models": models}))
"""


def test_image_holds_no_compiler_installer_or_shell_and_runs_as_the_chart_user(image: str) -> None:
    config = json.loads(podman("image", "inspect", image).stdout)[0]["Config"]
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["kms-storage-migrator"]
    completed = podman(
        "run", "--rm", *RUNTIME, "--network", "none", "--entrypoint", "python3", image, "-c", IMAGE_PROBE
    )
    found = json.loads(completed.stdout)
    assert (found["uid"], found["gid"]) == (65532, 65532)
    assert found["unwanted"] == []
    assert found["modules"] == {"pip": False, "ensurepip": False}
    assert found["operator"] == "/opt/venv/bin/kms-storage-migrator"


def test_what_the_dockerfile_cut_is_imported_by_no_module_of_the_operator(image: str) -> None:
    # The Dockerfile drops parts of the standard library and most of the kubernetes package;
    # the migration test below runs one path, this imports every module (CLI commands included).
    completed = podman(
        "run",
        "--rm",
        *RUNTIME,
        "--network",
        "none",
        "--entrypoint",
        "python3",
        image,
        "-c",
        IMPORT_PROBE,
        *KOPF_KUBERNETES_MODELS,
    )
    found = json.loads(completed.stdout)
    assert found["import_failures"] == {}
    assert found["models"] == {name: name for name in KOPF_KUBERNETES_MODELS}


def test_image_is_at_most_150_mb(image: str) -> None:
    size = int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout)
    print(f"image {image}: {size} bytes")
    assert size <= MAX_IMAGE_BYTES, f"{size / 1e6:.1f} MB (see docs/install.md, section 1, for where it goes)"


def test_dockerfile_uses_no_image_but_its_base_argument() -> None:
    # The tests build FROM a local Debian base and users FROM python:3.11-slim: both must reach
    # the same stages, so no FROM may name an image of its own (scratch is no image).
    froms = [
        line.split()[1] for line in (REPO / "Dockerfile").read_text().splitlines() if line.startswith("FROM ")
    ]
    assert froms == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}", "scratch"]


# --- the chart's pod spec, run by podman -------------------------------------------------------


def helm_template(*values: str) -> list[dict[str, Any]]:
    completed = subprocess.run(
        [str(binary_path("helm")), "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *values],
        capture_output=True,
        text=True,
        check=True,
    )
    return [document for document in yaml.safe_load_all(completed.stdout) if document]


@dataclass
class PodSpec:
    """What the rendered Deployment asks of the operator's pod, as podman needs it."""

    pod: dict[str, Any]
    container: dict[str, Any]

    @property
    def args(self) -> list[str]:
        return list(self.container["args"])

    def env_value(self, variable: dict[str, Any]) -> str:
        """A variable's value; the downward API's (the pod's own name and namespace) as the
        kubelet would fill them in for a pod of this Deployment."""
        if "value" in variable:
            return str(variable["value"])
        field = variable["valueFrom"]["fieldRef"]["fieldPath"]
        return {"metadata.name": f"{SERVICE_ACCOUNT}-0", "metadata.namespace": NAMESPACE}[field]

    def mount_path(self, volume: str) -> str:
        return next(m["mountPath"] for m in self.container["volumeMounts"] if m["name"] == volume)

    def probe(self, kind: str) -> dict[str, Any]:
        http: dict[str, Any] = self.container[kind]["httpGet"]
        return http

    def port(self, name: str) -> int:
        return int(next(p["containerPort"] for p in self.container["ports"] if p["name"] == name))

    def podman_flags(self) -> list[str]:
        """podman's spelling of the pod's and container's security context, env and tmpfs."""
        security = self.container["securityContext"]
        pod_security = self.pod["securityContext"]
        # Each field is translated only after checking it asks for what this translation gives.
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}  # podman's default
        tmp = next(v for v in self.pod["volumes"] if v["name"] == "tmp")
        tmp_bytes = quantity_bytes(tmp["emptyDir"]["sizeLimit"])
        flags = [
            "--read-only",
            "--read-only-tmpfs=false",  # podman would add tmpfs at /run and /var/tmp: the pod has none
            "--user",
            f"{pod_security['runAsUser']}:{pod_security['runAsGroup']}",
            "--group-add",
            str(pod_security["fsGroup"]),
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--tmpfs",
            f"{self.mount_path('tmp')}:rw,nosuid,nodev,mode=1777,size={tmp_bytes}",
        ]
        for variable in self.container.get("env", []):
            flags += ["--env", f"{variable['name']}={self.env_value(variable)}"]
        return flags


BINARY_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def quantity_bytes(quantity: str) -> int:
    """A Kubernetes quantity such as ``64Mi`` in bytes (tmpfs does not read the suffixes)."""
    for suffix, factor in BINARY_SUFFIXES.items():
        if quantity.endswith(suffix):
            return int(quantity.removesuffix(suffix)) * factor
    return int(quantity)


def rendered_pod(etcd_endpoint: str, metrics_port: int, health_port: int) -> PodSpec:
    documents = helm_template(
        "--set",
        "etcd.enabled=true",
        "--set",
        "etcd.existingSecret=etcd-client",
        "--set",
        f"etcd.endpoints={{{etcd_endpoint}}}",
        # Host networking: the ports must be free on this machine.
        "--set",
        f"metrics.port={metrics_port}",
        "--set",
        f"health.port={health_port}",
    )
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == SERVICE_ACCOUNT
    (container,) = pod["containers"]
    return PodSpec(pod, container)


def install_chart_rbac(cluster: DevCluster) -> None:
    """The chart's ServiceAccount, ClusterRole, Role and their bindings, as helm renders them."""
    cluster.kubectl("create", "namespace", NAMESPACE)
    rbac = [
        d
        for d in helm_template()
        if d["kind"] in {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    ]
    # Every kind, not a count: the chart's namespaced Roles (events, leader election, failure
    # list) grow with its features, and each of them must reach the cluster.
    assert {d["kind"] for d in rbac} == {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": rbac}))


def projected_service_account(cluster: DevCluster, directory: Path) -> Path:
    """The kubelet's projected volume, by hand: a TokenRequest token, the cluster CA, the namespace."""
    directory.mkdir()
    token = cluster.kubectl("create", "token", SERVICE_ACCOUNT, "--namespace", NAMESPACE, "--duration=1h")
    (directory / "token").write_text(token.strip())
    shutil.copy(cluster.pki.ca.cert, directory / "ca.crt")
    (directory / "namespace").write_text(NAMESPACE)
    for path in directory.iterdir():
        path.chmod(0o644)  # the kubelet's default mode for these files
    return directory


def etcd_client_secret(cluster: DevCluster, directory: Path, group: int) -> Path:
    """The chart's etcd-client Secret volume: mode 0440, readable through fsGroup."""
    directory.mkdir()
    reader = cluster.pki.etcd_reader
    for source, name in ((cluster.pki.ca.cert, "ca.crt"), (reader.cert, "tls.crt"), (reader.key, "tls.key")):
        target = directory / name
        shutil.copy(source, target)
        os.chown(target, 0, group)
        target.chmod(0o440)
    return directory


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, OSError):
        return None


def requests_by_service_accounts(cluster: DevCluster) -> float:
    """Requests the apiserver's flow control dispatched for the "service-accounts" FlowSchema."""
    total = 0.0
    for line in cluster.kubectl("get", "--raw", "/metrics").splitlines():
        if line.startswith("apiserver_flowcontrol_dispatched_requests_total{") and (
            'flow_schema="service-accounts"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def process_status(pid: int) -> dict[str, str]:
    """The kernel's own record of a process: its ids, capabilities and no_new_privs flag."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def process_mounts(pid: int) -> dict[str, tuple[set[str], str]]:
    """Mount point -> (mount options, file system type), as the kernel shows them to ``pid``."""
    mounts: dict[str, tuple[set[str], str]] = {}
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        # "id parent major:minor root mount-point options [optional fields] - type source super"
        before, _, after = line.partition(" - ")
        fields = before.split()
        mounts[fields[4]] = (set(fields[5].split(",")), after.split()[0])
    return mounts


@dataclass
class RunningOperator:
    name: str
    spec: PodSpec
    log: Path

    def logs(self) -> str:
        completed = podman("logs", self.name, check=False)
        return completed.stdout + completed.stderr

    def pid(self) -> int:
        return int(podman("inspect", "--format", "{{.State.Pid}}", self.name).stdout)


@pytest.fixture
def legacy_cluster(make_cluster: Any) -> DevCluster:
    """A cluster whose seeded objects were stored in plaintext, then switched to KMS v2."""
    cluster: DevCluster = make_cluster(encryption="none")
    seed(cluster, SEEDED_OBJECTS, SEEDED_NAMESPACES, progress=False)
    cluster.encrypt()
    install_crd(cluster)
    install_chart_rbac(cluster)
    return cluster


@pytest.fixture
def operator_container(image: str, legacy_cluster: DevCluster, tmp_path: Path) -> Iterator[RunningOperator]:
    cluster = legacy_cluster
    spec = rendered_pod(cluster.etcd_endpoint, free_port(), free_port())
    service_account = projected_service_account(cluster, tmp_path / "serviceaccount")
    etcd_dir = etcd_client_secret(cluster, tmp_path / "etcd-client", spec.pod["securityContext"]["fsGroup"])
    name = f"kms-storage-migrator-test-{os.getpid()}-{time.monotonic_ns()}"
    run = [
        "run",
        "--detach",
        "--name",
        name,
        *RUNTIME,
        "--network",
        "host",
        *spec.podman_flags(),
        "--volume",
        f"{service_account}:{SERVICE_ACCOUNT_DIR}:ro",
        "--volume",
        f"{etcd_dir}:{spec.mount_path('etcd-client')}:ro",
        # What the kubelet sets for the `kubernetes` Service; here the apiserver on loopback.
        "--env",
        "KUBERNETES_SERVICE_HOST=127.0.0.1",
        "--env",
        f"KUBERNETES_SERVICE_PORT={cluster.load_state().apiserver_port}",
        image,
        *spec.args,
    ]
    try:
        podman(*run)
        yield RunningOperator(name, spec, tmp_path / "operator.log")
    finally:
        # Also when `podman run` failed: it may have created the container before failing.
        podman("rm", "--force", "--time", "0", name, check=False)


def wait_ready(operator: RunningOperator, timeout: float = 90) -> str:
    probe = operator.spec.probe("readinessProbe")
    url = f"http://127.0.0.1:{operator.spec.port(probe['port'])}{probe['path']}"
    deadline = time.monotonic() + timeout
    while http_status(url) != 200:
        assert time.monotonic() < deadline, f"{url} never answered 200:\n{operator.logs()[-4000:]}"
        time.sleep(0.5)
    return url


def test_operator_runs_in_the_image_as_the_chart_runs_it(
    operator_container: RunningOperator, legacy_cluster: DevCluster
) -> None:
    cluster = legacy_cluster
    operator = operator_container
    secret_key = "/registry/secrets/legacy-001/secret-1"
    before = cluster.etcd_value(secret_key)
    assert before is not None
    assert not before.startswith(KMS_PREFIX)
    stale_before = cluster.scan_report(*SELECTED_RESOURCES)["summary"]["stale"]
    assert stale_before >= SEEDED_OBJECTS // 2  # the seeded core, apps and RBAC objects at least

    service_account_requests_before = requests_by_service_accounts(cluster)
    # Liveness and readiness probe the same endpoint (the chart's health port, /healthz).
    url = wait_ready(operator)
    assert operator.spec.probe("livenessProbe") == operator.spec.probe("readinessProbe")

    # The kernel's view of the container's process: the chart's user and group, no
    # capabilities at all, no way to gain privileges.
    status = process_status(operator.pid())
    assert status["Uid"].split() == ["65532"] * 4
    assert status["Gid"].split() == ["65532"] * 4
    assert "65532" in status["Groups"].split()  # fsGroup
    for capabilities in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[capabilities], 16) == 0, capabilities
    assert status["NoNewPrivs"] == "1"
    # ...and its mounts: the root file system read-only, /tmp the only writable place.
    mounts = process_mounts(operator.pid())
    assert "ro" in mounts["/"][0]
    assert mounts["/tmp"][1] == "tmpfs"
    assert "rw" in mounts["/tmp"][0]
    assert "ro" in mounts[SERVICE_ACCOUNT_DIR][0]

    apply_migration(cluster, "from-the-image", {"mode": "Targeted", "resources": SEEDED_SELECTION})
    finished = wait_finished(cluster, "from-the-image", log=operator.log, timeout=300)["status"]
    assert finished["phase"] == "Succeeded", f"{finished.get('message')}\n{operator.logs()[-4000:]}"
    assert finished["verification"]["result"] == "Verified"
    totals = finished["totals"]
    assert totals["rewritten"] + totals["conflicts"] + totals["gone"] == stale_before, totals
    assert totals["failed"] == 0
    assert http_status(url) == 200

    # Judged from outside: etcd holds the Secret under the cluster's KMS v2 key now, and the
    # project's scanner (a separate process reading etcd) finds nothing stale.
    after = cluster.etcd_value(secret_key)
    assert after is not None
    assert after.startswith(KMS_PREFIX + b"local-kms:")
    inventory = cluster.scan_report(*SELECTED_RESOURCES)
    assert inventory["summary"]["stale"] == 0, inventory["summary"]

    # The apiserver's own account of who asked: requests authenticated as a ServiceAccount land
    # in the "service-accounts" FlowSchema, and on this cluster (no controller-manager, tests act
    # as system:masters, which is exempt) only the operator in the container holds such a token.
    assert requests_by_service_accounts(cluster) - service_account_requests_before >= SEEDED_OBJECTS
    assert "seed-password-" not in operator.logs()  # secret payloads never reach the log

    started = time.monotonic()
    podman("kill", "--signal", "TERM", operator.name)
    exit_code = podman("wait", operator.name, timeout=60).stdout.strip()
    stopped_after = time.monotonic() - started
    print(f"exit {exit_code} {stopped_after:.1f} s after SIGTERM")
    assert exit_code == "0", operator.logs()[-4000:]
    # The bound that matters is the pod's grace period, after which the kubelet kills it (a
    # tighter one would measure this machine's load, not the operator).
    assert stopped_after < operator.spec.pod.get(
        "terminationGracePeriodSeconds", KUBERNETES_DEFAULT_GRACE_SECONDS
    )
