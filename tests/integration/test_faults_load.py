"""Load on other clients (issue 10, item 12): a Full migration at the default qps while another
client times its own light requests.

The other client (``benchmarks/other_clients.py``) runs under a ServiceAccount of its own, as an
in-cluster controller would, and sends 20 requests/s: GET of a ConfigMap, LIST with limit=50 in
its namespace, a merge PATCH of its own ConfigMap. Its latency is measured idle (the operator
running, no migration) for a first window, then while the migration writes and, in turn, while
it is suspended (``spec.suspend``), so idle and loaded samples come from the same minutes of
this shared machine. The loaded p99 must stay within 2x the idle p99; in CI the idle p99 is taken
as at least ``P99_FLOOR`` (why: below), at full size it is the issue's 2x as measured.

The operator runs under the chart's ServiceAccount (its RBAC rendered by ``helm template`` and
applied) at nice 19, without and with the chart's ``flowControl`` option. Where the requests
landed is judged by the apiserver, not by the chart: its
``apiserver_flowcontrol_dispatched_requests_total`` per flow schema and priority level, and the
APF headers on every one of the other client's answers. The migration must end Succeeded, with
nothing stale by etcdctl and each object counted once.

Sizes: CI seeds 1,200 objects (about 22 s of writes at 50 qps); ``KSM_FAULT_SCALE=full``
100,000 and longer windows; ``KSM_LOAD_OBJECTS`` overrides the count.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from fault_tools import (
    FULL_SCALE,
    ApiClient,
    EtcdInspector,
    done_count,
    is_terminal,
    phase_of,
    scaled,
    stale_summary,
)
from operator_harness import OperatorProcess, apply_migration, install_crd

from kms_storage_migrator.devcluster.binaries import binary_path
from kms_storage_migrator.devcluster.cluster import DevCluster

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from other_clients import (
    OtherClient,
    ProbeTarget,
    RequestKind,
    Sample,
    dispatched_by_flow,
    dispatched_since,
    latency_bound,
    summarise,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kms-storage-migrator"
OPERATOR = "kms-storage-migrator"  # the chart's ServiceAccount, FlowSchema and priority level
OPERATOR_NAMESPACE = "kms-storage-migrator"
PROBE = "other-client"
PROBE_NAMESPACE = "other-client"
SELECTION = ["core/configmaps", "core/secrets"]
PREFIXES = ("/registry/configmaps/", "/registry/secrets/")

# KSM_LOAD_OBJECTS=<n> runs another size (a full-size case of 100k took 42 min here, alone).
OBJECTS = int(os.environ.get("KSM_LOAD_OBJECTS") or scaled(1_200, 100_000))
NAMESPACES = 20
BATCH = 500
PROBE_RATE = 20.0
IDLE_SECONDS = scaled(10, 60)
# The migration writes and is suspended in turn (see _alternate).
WRITING_SECONDS = scaled(8, 150)
SUSPENDED_SECONDS = scaled(8, 15)
FACTOR = 2.0
# In CI the idle p99 is taken as at least 2.5 s, so the bound is never below 5 s, Kubernetes'
# API call latency SLO for namespace-scoped LISTs (single-object calls: 1 s). Why so high: CI runs
# this beside the rest of the suite on two cores, where the apiserver's share of the CPU is what
# limits it. With other engineers' work on the machine (load average 16-25) a migration at the
# default 50 writes/s raised the other client's p99 from 24-255 ms idle to 141-2,602 ms in the
# same minutes, 0.8-35x; on the quiet machine, alone, 1.0-1.8x (docs/reliability.md, "Load on
# other clients"). What CI asserts holds on any machine: no request of the other client fails,
# and its p99 stays within the SLO. The full-size run (scripts/reliability.sh -k load, run
# alone) asserts the issue's claim itself: no floor, the p99 within 2x the idle p99.
P99_FLOOR = 0.0 if FULL_SCALE else 2.5
MIGRATIONS = "/apis/kms-storage-migrator.io/v1alpha1/storagemigrations"
SERVICE_ACCOUNTS = ("service-accounts", "workload-low")
OWN_LEVEL = (OPERATOR, OPERATOR)


@dataclass
class LoadWorld:
    cluster: DevCluster
    directory: Path
    etcd: EtcdInspector
    operator_kubeconfig: Path
    probe: ProbeTarget
    admin: ApiClient


def _as_list(items: list[dict[str, Any]]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def _seed(cluster: DevCluster, count: int) -> None:
    """ConfigMaps and Secrets (3:1) over ``NAMESPACES`` namespaces, four ``kubectl create``s at a
    time: the fastest path through the API (~300 objects/s here)."""
    namespaces = [f"legacy-{index:03d}" for index in range(NAMESPACES)]
    cluster.kubectl(
        "create",
        "-f",
        "-",
        input=_as_list(
            [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in namespaces]
        ),
    )

    def item(index: int) -> dict[str, Any]:
        metadata = {"name": f"load-{index}", "namespace": namespaces[index % NAMESPACES]}
        if index % 4 == 3:
            return {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": metadata,
                "stringData": {"v": f"s-{index}"},
            }
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": metadata,
            "data": {"v": f"value-{index}"},
        }

    batches = [[item(i) for i in range(start, min(start + BATCH, count))] for start in range(0, count, BATCH)]
    with ThreadPoolExecutor(4) as pool:
        list(
            pool.map(lambda b: cluster.kubectl("create", "-f", "-", "-o", "name", input=_as_list(b)), batches)
        )


def _chart(*values: str) -> list[dict[str, Any]]:
    rendered = subprocess.run(
        [
            str(binary_path("helm")),
            "template",
            OPERATOR,
            str(CHART),
            "--namespace",
            OPERATOR_NAMESPACE,
            *values,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [document for document in yaml.safe_load_all(rendered) if document]


def _apply_chart_objects(cluster: DevCluster, kinds: set[str], *values: str) -> None:
    """The chart's objects of ``kinds``, applied as helm would write them (no pod: no kubelet)."""
    documents = [d for d in _chart(*values) if d["kind"] in kinds]
    cluster.kubectl("apply", "-f", "-", input=_as_list(documents))


def _token_kubeconfig(cluster: DevCluster, directory: Path, name: str, namespace: str) -> tuple[Path, str]:
    token = cluster.kubectl("create", "token", name, "--namespace", namespace, "--duration=3h").strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())["clusters"][0]["cluster"]
    kubeconfig = directory / f"{name}.kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "dev", "cluster": admin}],
                "users": [{"name": name, "user": {"token": token}}],
                "contexts": [{"name": name, "context": {"cluster": "dev", "user": name}}],
                "current-context": name,
            }
        )
    )
    kubeconfig.chmod(0o600)
    return kubeconfig, token


def _probe_identity(cluster: DevCluster) -> None:
    """The other client's namespace, ServiceAccount, rights on its ConfigMaps, and 60 ConfigMaps
    for its LIST (limit 50: one full page) plus the one it GETs and PATCHes."""
    items: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": PROBE_NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": PROBE, "namespace": PROBE_NAMESPACE},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": PROBE, "namespace": PROBE_NAMESPACE},
            "rules": [
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "get", "list", "patch"]}
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": PROBE, "namespace": PROBE_NAMESPACE},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": PROBE},
            "subjects": [{"kind": "ServiceAccount", "name": PROBE, "namespace": PROBE_NAMESPACE}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "other-client-target", "namespace": PROBE_NAMESPACE},
            "data": {"sequence": "0"},
        },
    ]
    items += [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"listed-{index}", "namespace": PROBE_NAMESPACE},
            "data": {"v": str(index)},
        }
        for index in range(60)
    ]
    cluster.kubectl("create", "-f", "-", input=_as_list(items))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoadWorld]:
    directory = tmp_path_factory.mktemp("faults-load")
    cluster = DevCluster(directory / "cluster")
    cluster.up("kms")
    try:
        started = time.monotonic()
        _seed(cluster, OBJECTS)
        print(f"seeded {OBJECTS} objects in {time.monotonic() - started:.1f}s")
        install_crd(cluster)
        cluster.kubectl("create", "namespace", OPERATOR_NAMESPACE)
        # The chart's identity and RBAC, its flowControl option off: the default install.
        _apply_chart_objects(
            cluster, {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
        )
        _probe_identity(cluster)
        operator_kubeconfig, _ = _token_kubeconfig(cluster, directory, OPERATOR, OPERATOR_NAMESPACE)
        probe_kubeconfig, _ = _token_kubeconfig(cluster, directory, PROBE, PROBE_NAMESPACE)
        probe = ProbeTarget.from_kubeconfig(probe_kubeconfig, PROBE_NAMESPACE)
        admin = ApiClient(cluster)
        yield LoadWorld(cluster, directory, EtcdInspector(cluster), operator_kubeconfig, probe, admin)
        admin.close()
    finally:
        cluster.down()


def _uid(cluster: DevCluster, kind: str, name: str) -> str:
    return str(json.loads(cluster.kubectl("get", kind, name, "-o", "json"))["metadata"]["uid"])


def _flow_of(kubeconfig: Path) -> tuple[str, str]:
    """The (FlowSchema uid, priority level uid) the apiserver gives a request with this token."""
    config = yaml.safe_load(kubeconfig.read_text())
    cluster, token = config["clusters"][0]["cluster"], config["users"][0]["user"]["token"]
    context = ssl.create_default_context(
        cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
    )
    request = urllib.request.Request(
        cluster["server"] + "/api/v1/namespaces/default/configmaps?limit=1",
        headers={"Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=30) as response:
            headers = response.headers
    except urllib.error.HTTPError as error:  # a 403 went through APF too
        headers = error.headers
    return headers["X-Kubernetes-PF-FlowSchema-UID"], headers["X-Kubernetes-PF-PriorityLevel-UID"]


def _set_flow_control(world: LoadWorld, enabled: bool) -> tuple[str, str]:
    """Apply or remove the chart's FlowSchema and priority level; return the (schema, level) names
    the operator's requests land in, once the apiserver's APF controller has taken the change."""
    cluster = world.cluster
    if enabled:
        _apply_chart_objects(
            cluster, {"FlowSchema", "PriorityLevelConfiguration"}, "--set", "flowControl.enabled=true"
        )
        expected = OWN_LEVEL
    else:
        cluster.kubectl("delete", "flowschema,prioritylevelconfiguration", OPERATOR, "--ignore-not-found")
        expected = SERVICE_ACCOUNTS
    uids = (
        _uid(cluster, "flowschema", expected[0]),
        _uid(cluster, "prioritylevelconfiguration", expected[1]),
    )
    deadline = time.monotonic() + 60
    while (seen := _flow_of(world.operator_kubeconfig)) != uids and time.monotonic() < deadline:
        time.sleep(1)
    assert seen == uids, f"the operator's requests are not yet in {expected} after 60 s"
    return expected


def _dispatched(cluster: DevCluster) -> dict[tuple[str, str], float]:
    return dispatched_by_flow(cluster.kubectl("get", "--raw", "/metrics"))


def _get(world: LoadWorld, path: str) -> dict[str, Any]:
    """GET as the admin; 429 and 5xx are asked again for up to a minute, as kubectl would."""
    deadline = time.monotonic() + 60
    while True:
        code, body = world.admin.request("GET", path)
        if code == 200:
            return body
        transient = code == 429 or code >= 500
        assert transient, f"GET {path}: HTTP {code} {body.get('message')}"
        assert time.monotonic() < deadline, f"GET {path}: HTTP {code} for a minute: {body.get('message')}"
        time.sleep(1)


def _wait(
    world: LoadWorld, operator: OperatorProcess, name: str, done: Any, timeout: float
) -> dict[str, Any]:
    """Poll the StorageMigration until ``done(it)``. Over one keep-alive connection, not kubectl:
    a kubectl process per poll costs the shared cores more than the requests measured."""
    deadline = time.monotonic() + timeout
    while True:
        current = _get(world, f"{MIGRATIONS}/{name}")
        if done(current):
            return current
        assert operator.process is not None
        assert operator.process.poll() is None, f"the operator exited:\n{operator.log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"{name} not there in {timeout}s: {current.get('status')}"
        time.sleep(0.3)


def _poll_for(world: LoadWorld, seconds: float) -> None:
    """As ``_wait`` polls, for ``seconds``, before there is a migration: the first idle window
    carries the test's own requests like the others."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        _get(world, MIGRATIONS)
        time.sleep(0.3)


def _by_kind(samples: list[Sample], seconds: float) -> str:
    """p99 per request kind, to see which of the mix a migration slows."""
    parts = []
    for kind in RequestKind:
        of_kind = [s for s in samples if s.kind is kind]
        if of_kind:
            parts.append(f"{kind.value} p99 {summarise(of_kind, seconds).p99 * 1000:.1f} ms")
    return ", ".join(parts)


def _yield_the_cpu(operator: OperatorProcess) -> None:
    """Every thread of the operator at nice 19. In a cluster the operator runs on a worker node,
    not on the apiserver's cores; here the two share two cores, so without this the operator's
    own Python CPU would be taken from the apiserver and counted as load its requests cause.
    Linux niceness is per thread and inherited by new threads: the pass is made twice, so a
    thread started during the first pass is caught too."""
    assert operator.process is not None
    for _ in range(2):
        for task in Path(f"/proc/{operator.process.pid}/task").iterdir():
            os.setpriority(os.PRIO_PROCESS, int(task.name), 19)
        time.sleep(0.5)


def _set_suspend(world: LoadWorld, name: str, suspend: bool) -> None:
    patch = json.dumps({"spec": {"suspend": suspend}})
    world.cluster.kubectl("patch", "storagemigration", name, "--type=merge", "-p", patch)


@dataclass
class Windows:
    """Spans of time.monotonic(): writing (phase Migrating) and suspended, taken in turn."""

    writing: list[tuple[float, float]]
    suspended: list[tuple[float, float]]

    def seconds(self, spans: list[tuple[float, float]]) -> float:
        return sum(end - start for start, end in spans)


def _alternate(world: LoadWorld, operator: OperatorProcess, name: str) -> Windows:
    """Let the migration write for ``WRITING_SECONDS``, suspend it for ``SUSPENDED_SECONDS``, and
    so on until it leaves Migrating on its own. The other client's idle and loaded samples then
    come from the same minutes, so a burst of the machine's other work (this is a shared two-core
    machine) falls on both. The switches themselves (up to a page to stop, a rediscovery to
    resume) belong to neither."""
    windows = Windows([], [])
    writing_from = time.monotonic()
    while True:
        current = _wait(
            world,
            operator,
            name,
            lambda m, since=writing_from: (
                phase_of(m) != "Migrating" or time.monotonic() - since >= WRITING_SECONDS
            ),
            scaled(600, 7200),
        )
        windows.writing.append((writing_from, time.monotonic()))
        if phase_of(current) != "Migrating":
            return windows
        _set_suspend(world, name, True)
        current = _wait(world, operator, name, lambda m: phase_of(m) != "Migrating", 120)
        if phase_of(current) != "Suspended":
            return windows  # the last page was written before the suspension took effect
        suspended_from = time.monotonic()
        # Polled as while writing, so both kinds of window carry the test's own requests.
        _wait(
            world, operator, name, lambda m, t=suspended_from: time.monotonic() - t >= SUSPENDED_SECONDS, 120
        )
        windows.suspended.append((suspended_from, time.monotonic()))
        _set_suspend(world, name, False)
        current = _wait(world, operator, name, lambda m: phase_of(m) != "Suspended", 120)
        if phase_of(current) != "Migrating":
            return windows
        writing_from = time.monotonic()


@pytest.mark.parametrize("flow_control", [False, True], ids=["default-apf", "chart-flowschema"])
def test_other_clients_p99_within_twice_idle_floored_at_the_slo_during_a_migration(
    world: LoadWorld, flow_control: bool
) -> None:
    cluster = world.cluster
    started = time.monotonic()
    cluster.rotate_kek(restart=True)  # every stored object is now under an old key
    operator_flow = _set_flow_control(world, flow_control)
    print(f"rotation and flow control set in {time.monotonic() - started:.1f}s")
    keys_before = len(world.etcd.values(PREFIXES))
    assert len(world.etcd.stale(PREFIXES)) == keys_before, "the rotation left every object stale"
    schema_uid = _uid(cluster, "flowschema", SERVICE_ACCOUNTS[0])
    level_uid = _uid(cluster, "prioritylevelconfiguration", SERVICE_ACCOUNTS[1])

    log = world.directory / f"operator-{flow_control}.log"
    operator = OperatorProcess(cluster, log, run_args=("--kubeconfig", str(world.operator_kubeconfig)))
    name = f"load-{'flowschema' if flow_control else 'default'}"
    with operator, OtherClient(world.probe, rate=PROBE_RATE).running() as probe:
        _yield_the_cpu(operator)
        time.sleep(5)  # the operator's start (kopf's first lists and watch) is not "idle"
        idle_from = time.monotonic()
        _poll_for(world, IDLE_SECONDS)
        first_idle = probe.samples_between(idle_from, time.monotonic())
        # The probe's requests are counted over two spans: the outer one brackets both metric
        # readings (each takes a second or so), the inner one lies between them.
        outer_from = time.monotonic()
        before = _dispatched(cluster)
        inner_from = time.monotonic()
        # The default qps, concurrency and page size: what a user who sets nothing gets.
        apply_migration(cluster, name, {"mode": "Full", "resources": {"include": SELECTION}})
        _wait(
            world,
            operator,
            name,
            lambda m: phase_of(m) in ("Migrating", "Verifying", "Succeeded", "Failed"),
            300,
        )
        windows = _alternate(world, operator, name)
        final = _wait(world, operator, name, is_terminal, scaled(300, 1800))
        inner_to = time.monotonic()
        after = _dispatched(cluster)
        outer_to = time.monotonic()
        idle_samples = first_idle + [s for span in windows.suspended for s in probe.samples_between(*span)]
        load_samples = [s for span in windows.writing for s in probe.samples_between(*span)]
        probe_outer = len(probe.samples_between(outer_from, outer_to))
        probe_inner = len(probe.samples_between(inner_from, inner_to))

    idle_seconds = IDLE_SECONDS + windows.seconds(windows.suspended)
    seconds = windows.seconds(windows.writing)
    first = summarise(first_idle, IDLE_SECONDS)
    idle = summarise(idle_samples, idle_seconds)
    load = summarise(load_samples, seconds)
    bound = latency_bound(idle.p99, factor=FACTOR, floor=P99_FLOOR)
    dispatched = dispatched_since(before, after)
    status = final.get("status") or {}
    print(
        f"{'chart FlowSchema' if flow_control else 'default APF'}: {keys_before} objects, writing "
        f"{seconds:.1f}s in {len(windows.writing)} spans ({keys_before / seconds:.0f} objects/s), suspended "
        f"{windows.seconds(windows.suspended):.1f}s; first idle: {first.line()}; idle: {idle.line()}; "
        f"during: {load.line()}; idle by kind: {_by_kind(idle_samples, idle_seconds)}; "
        f"during by kind: {_by_kind(load_samples, seconds)}; "
        f"p99 ratio {load.p99 / idle.p99:.2f}, bound {bound * 1000:.1f} ms; operator in {operator_flow}; "
        f"dispatched {dict(sorted(dispatched.items()))}; probe sent {probe_inner}-{probe_outer}; "
        f"totals {status.get('totals')}"
    )

    # The migration did its job: judged by etcdctl against the KMS plugin's primary key.
    assert status.get("phase") == "Succeeded", f"{status.get('message')}\n{log.read_text()[-3000:]}"
    assert (status.get("verification") or {}).get("result") == "Verified", status.get("verification")
    stale = world.etcd.stale(PREFIXES)
    assert not stale, stale_summary(stale)
    assert status["totals"]["failed"] == 0, status.get("failures")
    assert done_count(status) == keys_before, f"totals {status['totals']}, etcd held {keys_before}"

    # The other client was answered, every time, from the service-accounts schema.
    assert idle.errors == 0, "the other client had failed requests while idle"
    assert load.errors == 0, "the other client had failed requests during the migration"
    assert {(s.flow_schema_uid, s.priority_level_uid) for s in idle_samples + load_samples} == {
        (schema_uid, level_uid)
    }
    # The apiserver's own count of where the operator's requests went: at least one PATCH per
    # object, in the operator's level with the option, beside the other client's without it.
    # Nothing else in the dev cluster runs under a ServiceAccount (no controller-manager), so
    # service-accounts holds the probe's requests and, without the option, the operator's. The
    # slack of 5 is for requests in flight while a reading was taken.
    in_service_accounts = dispatched.get(SERVICE_ACCOUNTS, 0)
    if flow_control:
        assert dispatched.get(OWN_LEVEL, 0) >= keys_before, dispatched
        assert in_service_accounts <= probe_outer + 5, dispatched
    else:
        assert OWN_LEVEL not in dispatched, dispatched
        assert in_service_accounts >= keys_before + probe_inner - 5, dispatched

    # The issue's claim: the other client's p99 within twice its idle p99 (floored in CI).
    assert load.p99 <= bound, (
        f"the other client's p99 rose from {idle.p99 * 1000:.1f} ms idle to {load.p99 * 1000:.1f} ms "
        f"during the migration (bound {bound * 1000:.1f} ms)"
    )
