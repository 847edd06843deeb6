"""A local control plane: real etcd, KMS v2 plugins and one or more real kube-apiservers.

Every piece runs as a detached process on loopback with free ports; all state (PKI, data,
logs, PIDs, ports) lives in one directory, so several clusters can run side by side (tests
do) and ``down`` knows exactly what to stop. ``state.json`` in that directory is the record.

With ``apiservers=N`` (N > 1) it is a small HA control plane: N kube-apiservers on the one
etcd, each with its own KMS plugin process (all sharing the keyring file, as each control-plane
node runs its own plugin), its own host name (so its own identity Lease) and its own
kubeconfig, behind HAProxy; ``DIR/kubeconfig`` then points at HAProxy.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kms_storage_migrator.convergence.identity import apiserver_id_hash, expected_apiserver_id
from kms_storage_migrator.convergence.keyids import match_key_id
from kms_storage_migrator.convergence.metrics import MetricsFormatError, parse_apiserver_keys
from kms_storage_migrator.devcluster import binaries, node, processes, topology
from kms_storage_migrator.devcluster.encryption import (
    PROVIDER_NAME,
    EncryptionMode,
    encryption_configuration,
    validate_kms_endpoint,
    validate_provider_name,
)
from kms_storage_migrator.devcluster.pki import ClusterPki, create_pki
from kms_storage_migrator.errors import UserError
from kms_storage_migrator.kms.keyring import create_keyring, load_keyring, rotate_keyring

SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
APISERVER_READY_TIMEOUT = 240.0
ETCD_READY_TIMEOUT = 60.0
KMS_READY_TIMEOUT = 30.0
LOAD_BALANCER_READY_TIMEOUT = 30.0
# Unix socket paths are limited to 107 bytes; deep temporary directories exceed that.
MAX_SOCKET_PATH = 100
PORT_ATTEMPTS = 3
# The node's processes (`up --node`), stopped before the control plane.
NODE_CONTAINERD = "containerd"
NODE_KUBELET = "kubelet"
NODE_SCHEDULER = "kube-scheduler"
# Only what a node-less cluster can use, plus the in-tree migrator that benchmarks compare with.
CONTROLLERS = (
    "garbagecollector",
    "namespace",
    "serviceaccount",
    "serviceaccount-token",
    "storage-version-migrator-controller",
)


@dataclass
class ApiserverState:
    """One kube-apiserver of the cluster and the KMS plugin beside it."""

    index: int
    port: int
    hostname: str
    kms_socket: str = ""  # empty with an external plugin


@dataclass
class ClusterState:
    """What ``state.json`` records about a running (or stopped) dev cluster."""

    encryption: str = EncryptionMode.KMS.value
    etcd_client_port: int = 0
    etcd_peer_port: int = 0
    # The front door: HAProxy's port with several apiservers, else the one apiserver's.
    apiserver_port: int = 0
    controller_manager_port: int = 0
    kms_socket: str = ""  # the first plugin's (what single-apiserver callers knew)
    pids: dict[str, int] = field(default_factory=dict)
    # Start time of each PID (clock ticks since boot): a reused PID has another one.
    start_ticks: dict[str, int] = field(default_factory=dict)
    apiservers: list[ApiserverState] = field(default_factory=list)
    load_balancer_port: int = 0
    kms_endpoint: str = ""  # an external KMS v2 plugin's socket; empty: the bundled plugins
    kms_provider_name: str = PROVIDER_NAME
    audit_policy: str = ""  # the audit policy file in DIR when the audit log is on
    node: bool = False  # `up --node`: containerd, a kubelet and a kube-scheduler run too
    node_ports: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> ClusterState:
        apiservers = [ApiserverState(**entry) for entry in document.pop("apiservers", [])]
        state = cls(**document, apiservers=apiservers)
        if not state.apiservers and state.apiserver_port:
            # Recorded before clusters had several apiservers: the one there was.
            state.apiservers = [
                ApiserverState(1, state.apiserver_port, socket.gethostname(), state.kms_socket)
            ]
        return state

    def apiserver(self, index: int) -> ApiserverState:
        for entry in self.apiservers:
            if entry.index == index:
                return entry
        raise UserError(f"this dev cluster has no apiserver {index} (it has {len(self.apiservers)})")


@dataclass(frozen=True)
class Apiserver:
    """One kube-apiserver, as tests and `status` see it."""

    index: int
    component: str  # its name in state.json and its log file (logs/<component>.log)
    port: int
    url: str
    kubeconfig: Path  # talks to this apiserver alone, not through the load balancer
    hostname: str
    identity: str  # its identity Lease in kube-system, and what its apiserver_id_hash hashes
    kms_socket: str


class DevCluster:
    """One dev cluster, all of whose state lives in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory.resolve()
        self.pki = ClusterPki(self.directory / "pki")
        # What this object started, in order; a failed start stops exactly these.
        self._started: list[processes.Started] = []

    # Paths users and tests need.
    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig; with several apiservers it points at the load balancer."""
        return self.directory / "kubeconfig"

    @property
    def etcd_config(self) -> Path:
        return self.directory / "etcd.json"

    @property
    def keyring(self) -> Path:
        return self.directory / "kms" / "keyring.json"

    @property
    def encryption_config(self) -> Path:
        """The first apiserver's encryption configuration (each has its own plugin socket)."""
        return self.apiserver_directory(1) / "encryption-config.yaml"

    @property
    def state_path(self) -> Path:
        return self.directory / "state.json"

    def apiserver_directory(self, index: int) -> Path:
        return self.directory / f"apiserver-{index}"

    def audit_log(self, index: int = 1) -> Path:
        return self.apiserver_directory(index) / "audit.log"

    def log_path(self, component: str) -> Path:
        return self.directory / "logs" / f"{component}.log"

    @property
    def api_url(self) -> str:
        return f"https://127.0.0.1:{self.load_state().apiserver_port}"

    @property
    def etcd_endpoint(self) -> str:
        return f"https://127.0.0.1:{self.load_state().etcd_client_port}"

    @property
    def provider_name(self) -> str:
        """The KMS v2 provider name in the encryption configuration (and in stored prefixes)."""
        if not self.state_path.exists():
            return PROVIDER_NAME
        return self.load_state().kms_provider_name

    @property
    def apiservers(self) -> list[Apiserver]:
        """Every kube-apiserver of the cluster, in index order."""
        return [self._apiserver_view(entry) for entry in self.load_state().apiservers]

    def binary(self, name: str) -> Path:
        return binaries.binary_path(name)

    # State.
    def load_state(self) -> ClusterState:
        if not self.state_path.exists():
            raise UserError(
                f"no dev cluster in {self.directory}: start one with `kms-storage-migrator dev-cluster up`"
            )
        return ClusterState.from_json(json.loads(self.state_path.read_text()))

    def _save_state(self, state: ClusterState) -> None:
        temporary = self.state_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(state), indent=2) + "\n")
        temporary.replace(self.state_path)

    def is_up(self) -> bool:
        """Whether any apiserver of this cluster runs."""
        if not self.state_path.exists():
            return False
        state = self.load_state()
        return any(
            self._component_running(state, topology.apiserver_component(entry.index))
            for entry in state.apiservers
        )

    def _component_running(self, state: ClusterState, component: str) -> bool:
        return processes.is_running(
            state.pids.get(component),
            *self._identity(component),
            start_ticks=state.start_ticks.get(component),
        )

    # Lifecycle.
    def up(
        self,
        encryption: str = EncryptionMode.KMS.value,
        *,
        with_controller_manager: bool = False,
        apiserver_port: int | None = None,
        etcd_port: int | None = None,
        apiservers: int = 1,
        kms_endpoint: str | None = None,
        kms_provider_name: str | None = None,
        audit_policy: Path | None = None,
        audit_log: bool = False,
        with_node: bool = False,
    ) -> None:
        """Start etcd, the KMS plugins, the apiservers (and HAProxy before several); return once
        every apiserver is ready and answers through ``DIR/kubeconfig``.

        ``kms_endpoint`` (``unix:///PATH``) and ``kms_provider_name`` use an external KMS v2 plugin
        instead of the bundled ones. ``audit_policy`` (or ``audit_log`` for a policy that records
        every request and response) writes each apiserver's audit log to ``DIR/apiserver-N/audit.log``.
        ``with_node`` adds a real node (containerd, kubelet, kube-scheduler and the controllers
        that run Deployments; see node.py), which needs root and one apiserver.
        """
        mode = EncryptionMode(encryption)
        try:
            topology.validate_apiserver_count(apiservers)
            if kms_endpoint is not None:
                validate_kms_endpoint(kms_endpoint)
                if kms_provider_name is None:
                    raise ValueError(
                        "--kms-endpoint needs --kms-provider-name: the provider name the external "
                        "plugin's objects are stored under (k8s:enc:kms:v2:<name>:)"
                    )
            elif kms_provider_name is not None:
                raise ValueError("--kms-provider-name names an external plugin: pass --kms-endpoint too")
            provider_name = validate_provider_name(kms_provider_name or PROVIDER_NAME)
        except ValueError as error:
            raise UserError(str(error)) from None
        if self.is_up():
            raise UserError(
                f"a dev cluster is already running in {self.directory}; "
                "run `kms-storage-migrator dev-cluster down` first"
            )
        if with_node:
            self._check_node_host(apiservers)
            with_controller_manager = True
        front = "kube-apiserver" if apiservers == 1 else "the load balancer"
        for port, owner in ((apiserver_port, front), (etcd_port, "etcd")):
            if port:
                processes.ensure_port_free(port, owner)
        needed: tuple[str, ...] = ("etcd", "etcdctl", "kube-apiserver")
        if with_controller_manager:
            needed += ("kube-controller-manager",)
        if with_node:
            needed += binaries.NODE_BINARIES
        binaries.ensure_binaries(needed)
        if apiservers > 1:
            _haproxy_binary()
            _unshare_binary()

        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.pki.exists():
            create_pki(self.pki.directory)
        if kms_endpoint is None and not self.keyring.exists():
            self.keyring.parent.mkdir(parents=True, exist_ok=True)
            create_keyring(self.keyring)
        policy = self._install_audit_policy(audit_policy, audit_log)
        # Free ports are picked, then bound by another process: two clusters starting at once
        # can pick the same one. A component that loses that race is retried on fresh ports.
        attempts = 1 if (apiserver_port or etcd_port) else PORT_ATTEMPTS
        machine = socket.gethostname()
        for attempt in range(1, attempts + 1):
            members = [
                ApiserverState(
                    index=index,
                    port=(apiserver_port if apiservers == 1 and apiserver_port else processes.free_port()),
                    hostname=topology.apiserver_hostname(index, apiservers, machine),
                    kms_socket="" if kms_endpoint else self._kms_socket_path(index),
                )
                for index in range(1, apiservers + 1)
            ]
            load_balancer_port = (apiserver_port or processes.free_port()) if apiservers > 1 else 0
            state = ClusterState(
                encryption=mode.value,
                etcd_client_port=etcd_port or processes.free_port(),
                etcd_peer_port=processes.free_port(),
                apiserver_port=load_balancer_port or members[0].port,
                kms_socket=members[0].kms_socket,
                apiservers=members,
                load_balancer_port=load_balancer_port,
                kms_endpoint=kms_endpoint or "",
                kms_provider_name=provider_name,
                audit_policy=str(policy) if policy else "",
                node=with_node,
            )
            self._save_state(state)
            self._write_client_files(state)
            for member in members:
                self._write_encryption_config(state, member)
            self._started = []
            try:
                self._start_components(state, with_controller_manager=with_controller_manager)
                return
            except processes.PortInUse:
                self._abort_start(state)
                self._teardown_node(state, after_failure=True)
                if attempt == attempts:
                    raise
            except BaseException:
                self._abort_start(state)
                self._teardown_node(state, after_failure=True)
                raise

    def _start_components(self, state: ClusterState, *, with_controller_manager: bool) -> None:
        self._start_etcd(state)
        if not state.kms_endpoint:
            for member in state.apiservers:
                self._start_kms_plugin(state, member)
        # All apiservers at once: they start in parallel, and each is waited for in turn.
        launched = [self._launch_apiserver(state, member) for member in state.apiservers]
        for member, process in zip(state.apiservers, launched, strict=True):
            self._wait_apiserver_ready(state, member, process)
        if state.load_balancer_port:
            self._start_load_balancer(state)
        if with_controller_manager:
            self._start_controller_manager(state)
        if state.node:
            self._start_node(state)

    def _abort_start(self, state: ClusterState) -> None:
        """Stop what this start started, newest first, by handle, and check nothing is left.

        By handle and not through ``down``: our children's PIDs cannot be reused before we
        reap them, so no /proc guess can make us skip one (an orphaned kube-apiserver once was).
        """
        survivors = [process.component for process in reversed(self._started) if not process.kill_and_check()]
        for process in self._started:
            state.pids.pop(process.component, None)
            state.start_ticks.pop(process.component, None)
            base, index = topology.split_component(process.component)
            if base == topology.KMS_PLUGIN:
                with contextlib.suppress(FileNotFoundError, UserError):
                    Path(state.apiserver(index).kms_socket).unlink()
        self._save_state(state)
        self._started = []
        if survivors:
            raise UserError(
                f"could not stop {', '.join(survivors)} after a failed start in {self.directory}; "
                "stop it by hand (see `dev-cluster status`)"
            )

    def down(self) -> None:
        """Stop every component; leaves the directory (data, logs, PKI) for inspection."""
        if not self.state_path.exists():
            return
        state = self.load_state()
        if state.node:
            # The kubelet first (it would restart the pods), then the pods, then containerd.
            for component in (NODE_KUBELET, NODE_SCHEDULER):
                self._stop_component(state, component)
            node.NodeHost(self.node_layout).kill_pods()
            self._stop_component(state, NODE_CONTAINERD)
        for component in topology.stop_order(state.pids):
            self._stop_component(state, component)
        self._save_state(state)
        self._teardown_node(state, after_failure=False)
        for member in state.apiservers:
            if member.kms_socket:
                with contextlib.suppress(FileNotFoundError):
                    Path(member.kms_socket).unlink()

    def _stop_component(self, state: ClusterState, component: str) -> None:
        processes.stop(
            state.pids.get(component),
            *self._identity(component),
            start_ticks=state.start_ticks.get(component),
        )
        state.pids.pop(component, None)
        state.start_ticks.pop(component, None)

    # One component at a time (tests stop and start pieces of a running cluster).
    def stop_apiserver(self, index: int = 1) -> None:
        state = self.load_state()
        state.apiserver(index)
        self._stop_component(state, topology.apiserver_component(index))
        self._save_state(state)

    def start_apiserver(self, index: int = 1) -> None:
        """Start apiserver ``index`` again on its port; return once it is ready."""
        state = self.load_state()
        member = state.apiserver(index)
        self._run_start(state, lambda: self._restart_apiserver_process(state, member))

    def stop_kms_plugin(self, index: int = 1) -> None:
        state = self.load_state()
        member = state.apiserver(index)
        self._require_bundled_plugin(state)
        self._stop_component(state, topology.kms_plugin_component(index))
        self._save_state(state)
        with contextlib.suppress(FileNotFoundError):
            Path(member.kms_socket).unlink()

    def start_kms_plugin(self, index: int = 1) -> None:
        state = self.load_state()
        member = state.apiserver(index)
        self._require_bundled_plugin(state)
        self._run_start(state, lambda: self._start_kms_plugin(state, member))

    def stop_etcd(self) -> None:
        state = self.load_state()
        self._stop_component(state, topology.ETCD)
        self._save_state(state)

    def start_etcd(self) -> None:
        state = self.load_state()
        self._run_start(state, lambda: self._start_etcd(state))

    def _run_start(self, state: ClusterState, start: Callable[[], None]) -> None:
        self._started = []
        try:
            start()
        except BaseException:
            self._abort_start(state)
            raise

    def restart_apiserver(self, index: int | None = None) -> None:
        """Restart one apiserver (``index``) or all, one after another, so a changed encryption
        configuration or KEK applies at once; the others keep serving meanwhile."""
        state = self.load_state()
        members = [state.apiserver(index)] if index is not None else state.apiservers
        for member in members:
            self._stop_component(state, topology.apiserver_component(member.index))
            self._save_state(state)
            self._run_start(state, functools.partial(self._restart_apiserver_process, state, member))

    def _restart_apiserver_process(self, state: ClusterState, member: ApiserverState) -> None:
        # The port must stay the same (kubeconfigs and the load balancer name it), and the old
        # process can hold it for a moment after it is gone from the process table.
        for attempt in range(1, PORT_ATTEMPTS + 1):
            processes.wait_for_port_release(member.port, timeout_seconds=30)
            try:
                process = self._launch_apiserver(state, member)
                self._wait_apiserver_ready(state, member, process)
                return
            except processes.PortInUse:
                if attempt == PORT_ATTEMPTS:
                    raise
                self._abort_start(state)

    def encrypt(self) -> None:
        """Switch a plaintext cluster to KMS v2 writes (identity stays as a read fallback)."""
        state = self.load_state()
        state.encryption = EncryptionMode.KMS.value
        self._save_state(state)
        for member in state.apiservers:
            self._write_encryption_config(state, member)
        self.restart_apiserver()

    def rotate_kek(self, *, restart: bool = False) -> str:
        """Make a new primary KEK in the shared keyring; every plugin serves it at its next call.

        By default (as the CLI's ``rotate-kek``) nothing is restarted: each apiserver switches
        at its own next KMS Status poll (about once a minute), as in production.
        ``restart=True`` (``--restart``) restarts the apiservers so they write with it at once.
        """
        state = self.load_state()
        self._require_bundled_plugin(state)
        new_key_id = rotate_keyring(self.keyring)
        if restart:
            self.restart_apiserver()
        return new_key_id

    def current_key_id(self) -> str:
        """The primary key id of the bundled plugins' keyring."""
        if self.state_path.exists():
            self._require_bundled_plugin(self.load_state())
        return load_keyring(self.keyring).primary_key_id

    def key_ids(self) -> list[str]:
        """Every key id of the bundled plugins' keyring, oldest first."""
        return [key.id for key in load_keyring(self.keyring).keys]

    def _require_bundled_plugin(self, state: ClusterState) -> None:
        if state.kms_endpoint:
            raise UserError(
                f"this dev cluster uses the external KMS v2 plugin at {state.kms_endpoint}: "
                "manage its keys with that plugin's own tools"
            )

    # What each apiserver writes with (its own metrics).
    def apiserver_metrics(self, index: int = 1) -> str:
        """The Prometheus text of apiserver ``index``'s /metrics (asked of it directly)."""
        member = self.load_state().apiserver(index)
        context = self._client_ssl_context(self.pki.admin)
        url = f"https://127.0.0.1:{member.port}/metrics"
        with urllib.request.urlopen(url, context=context, timeout=10) as response:
            text: str = response.read().decode()
        return text

    def get_json(self, path: str) -> dict[str, Any]:
        """GET ``path`` of the API as the cluster admin: cheaper than a kubectl process when polled."""
        context = self._client_ssl_context(self.pki.admin)
        url = f"{self.api_url}{path}"  # https, built here
        with urllib.request.urlopen(url, context=context, timeout=10) as response:  # noqa: S310
            document: dict[str, Any] = json.loads(response.read())
        return document

    def write_key_id_hash(self, index: int = 1) -> str | None:
        """The ``key_id_hash`` of the key apiserver ``index`` wrote with last, from its metrics.

        None when it wrote nothing through KMS v2 yet, or cannot be asked.
        """
        member = self.load_state().apiserver(index)
        try:
            reports = parse_apiserver_keys(self.apiserver_metrics(index))
        except (urllib.error.URLError, OSError, TimeoutError, MetricsFormatError):
            return None
        report = reports.get(apiserver_id_hash(self._identity_of(member)))
        if report is None and len(reports) == 1:
            report = next(iter(reports.values()))
        provider = self.provider_name
        for keys in report.providers if report else ():
            if keys.provider_name == provider and keys.latest_write:
                return keys.latest_write.key_id_hash
        return None

    def write_key_id(self, index: int = 1) -> str | None:
        """The key id apiserver ``index`` writes with: its metrics' hash matched to the keyring."""
        hashed = self.write_key_id_hash(index)
        if hashed is None or self.load_state().kms_endpoint:
            return None
        return match_key_id(hashed, self.key_ids())

    def status(self) -> dict[str, Any]:
        state = self.load_state()
        components = {}
        ports = {
            topology.ETCD: state.etcd_client_port,
            topology.CONTROLLER_MANAGER: state.controller_manager_port,
            topology.LOAD_BALANCER: state.load_balancer_port,
        }
        for member in state.apiservers:
            ports[topology.apiserver_component(member.index)] = member.port
        for component in topology.stop_order(state.pids)[::-1]:
            components[component] = {
                "pid": state.pids[component],
                "running": self._component_running(state, component),
                "port": ports.get(component),
                "log": str(self.log_path(component)),
            }
            base, index = topology.split_component(component)
            if base == topology.KMS_PLUGIN:
                components[component]["socket"] = state.apiserver(index).kms_socket
        if not state.kms_endpoint:
            components.setdefault(topology.KMS_PLUGIN, {})["socket"] = state.kms_socket
        apiservers = []
        for view in self.apiservers:
            pid = state.pids.get(view.component)
            running = self._component_running(state, view.component)
            hashed = self.write_key_id_hash(view.index) if running else None
            apiservers.append(
                {
                    "index": view.index,
                    "port": view.port,
                    "pid": pid,
                    "running": running,
                    "hostname": view.hostname,
                    "identityLease": f"kube-system/{view.identity}",
                    "kubeconfig": str(view.kubeconfig),
                    "writeKeyIdHash": hashed,
                    "writeKeyId": (
                        match_key_id(hashed, self.key_ids()) if hashed and not state.kms_endpoint else None
                    ),
                }
            )
        return {
            "directory": str(self.directory),
            "encryption": state.encryption,
            "provider": state.kms_provider_name,
            "kmsEndpoint": state.kms_endpoint or None,
            "currentKeyId": None if state.kms_endpoint else self.current_key_id(),
            "kubeconfig": str(self.kubeconfig),
            "etcdConfig": str(self.etcd_config),
            "loadBalancer": f"https://127.0.0.1:{state.load_balancer_port}"
            if state.load_balancer_port
            else None,
            "auditLogs": [str(self.audit_log(m.index)) for m in state.apiservers]
            if state.audit_policy
            else [],
            "apiservers": apiservers,
            "components": components,
        }

    # Tools against this cluster.
    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, kubeconfig: Path | None = None
    ) -> str:
        completed = subprocess.run(
            [str(self.binary("kubectl")), "--kubeconfig", str(kubeconfig or self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
        )
        if check and completed.returncode != 0:
            raise subprocess.CalledProcessError(
                completed.returncode, ["kubectl", *args], completed.stdout, completed.stderr
            )
        return completed.stdout

    def wait_established(self, crd: str, timeout: float = 60.0) -> None:
        """Until the CRD named ``crd`` reports Established.

        Polled with `kubectl get`, not `kubectl wait`: right after an apply, `kubectl wait` was
        seen to fail at once (exit 1, in a CI rehearsal) instead of waiting, so a CRD created a
        moment before must also be allowed not to be found yet.
        """
        query = "jsonpath={.status.conditions[?(@.type=='Established')].status}"
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.kubectl("get", "crd", crd, "-o", query).strip() == "True":
                    return
                seen = "no Established condition"
            except subprocess.CalledProcessError as error:
                seen = str(error.stderr or "").strip() or f"kubectl exited {error.returncode}"
            if time.monotonic() > deadline:
                raise UserError(f"CRD {crd} not Established after {timeout:.0f} s: {seen}")
            time.sleep(0.2)

    def etcdctl(self, *args: str) -> bytes:
        reader = self.pki.etcd_reader
        completed = subprocess.run(
            [
                str(self.binary("etcdctl")),
                f"--endpoints={self.etcd_endpoint}",
                f"--cacert={self.pki.ca.cert}",
                f"--cert={reader.cert}",
                f"--key={reader.key}",
                *args,
            ],
            capture_output=True,
            check=True,
        )
        return completed.stdout

    def scan_command(self, *resources: str) -> list[str]:
        """`kms-storage-migrator scan -o json` against this cluster's current key id."""
        command = [
            sys.executable,
            "-m",
            "kms_storage_migrator",
            "scan",
            "--etcd-config",
            str(self.etcd_config),
        ]
        command += ["--expect-key-id", self.current_key_id(), "-o", "json"]
        for resource in resources:
            command += ["--resource", resource]
        return command

    def scan_report(self, *resources: str) -> dict[str, Any]:
        """The etcd inventory as `scan -o json` prints it: a separate process, independent of callers."""
        completed = subprocess.run(
            self.scan_command(*resources), capture_output=True, text=True, check=True, timeout=300
        )
        report: dict[str, Any] = json.loads(completed.stdout)
        return report

    def etcd_value(self, key: str) -> bytes | None:
        """The raw stored bytes of one etcd key (None when absent)."""
        output = self.etcdctl("get", key, "--print-value-only")
        # etcdctl ends the value with one newline of its own.
        return output[:-1] if output else None

    # Components.
    def _identity(self, component: str) -> tuple[str, str]:
        """What only this cluster's ``component`` has in its command line: the program and our
        directory (every component is given paths inside it)."""
        return topology.program_of(component), f"{self.directory}/"

    def _identity_of(self, member: ApiserverState) -> str:
        return expected_apiserver_id(member.hostname)

    def _apiserver_view(self, member: ApiserverState) -> Apiserver:
        return Apiserver(
            index=member.index,
            component=topology.apiserver_component(member.index),
            port=member.port,
            url=f"https://127.0.0.1:{member.port}",
            kubeconfig=self.apiserver_directory(member.index) / "kubeconfig",
            hostname=member.hostname,
            identity=self._identity_of(member),
            kms_socket=member.kms_socket,
        )

    def _kms_socket_path(self, index: int) -> str:
        name = "kms.sock" if index == 1 else f"kms-{index}.sock"
        preferred = self.directory / "kms" / name
        if len(str(preferred)) <= MAX_SOCKET_PATH:
            return str(preferred)
        digest = hashlib.sha256(str(self.directory).encode()).hexdigest()[:12]
        return str(Path(tempfile.gettempdir()) / f"ksm-{digest}-{name}")

    def _launch(self, state: ClusterState, component: str, command: list[str]) -> processes.Started:
        """Start one component, record it in state.json at once (so `down` finds it) and here."""
        process = processes.start(command, self.log_path(component), component=component)
        self._started.append(process)
        state.pids[component] = process.pid
        if process.start_ticks is not None:
            state.start_ticks[component] = process.start_ticks
        self._save_state(state)
        return process

    def _start_etcd(self, state: ClusterState) -> None:
        client_url = f"https://127.0.0.1:{state.etcd_client_port}"
        peer_url = f"http://127.0.0.1:{state.etcd_peer_port}"
        server = self.pki.etcd_server
        command = [
            str(self.binary("etcd")),
            "--name=dev",
            f"--data-dir={self.directory / 'etcd-data'}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=dev={peer_url}",
            f"--cert-file={server.cert}",
            f"--key-file={server.key}",
            f"--trusted-ca-file={self.pki.ca.cert}",
            "--client-cert-auth",
            # A throwaway cluster: durability is not worth the fsync latency.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]
        process = self._launch(state, topology.ETCD, command)
        processes.wait_until(
            lambda: self._etcd_healthy(client_url),
            what=f"etcd on {client_url}",
            process=process,
            timeout_seconds=ETCD_READY_TIMEOUT,
        )

    def _start_kms_plugin(self, state: ClusterState, member: ApiserverState) -> None:
        with contextlib.suppress(FileNotFoundError):
            Path(member.kms_socket).unlink()
        command = [
            sys.executable,
            "-m",
            "kms_storage_migrator",
            "kms-plugin",
            "--listen",
            f"unix://{member.kms_socket}",
            "--keyring",
            str(self.keyring),
        ]
        watched = list(self._started)
        process = self._launch(state, topology.kms_plugin_component(member.index), command)
        processes.wait_until(
            lambda: Path(member.kms_socket).exists(),
            what=f"the KMS v2 plugin on unix://{member.kms_socket}",
            process=process,
            timeout_seconds=KMS_READY_TIMEOUT,
            also_watch=watched,
        )

    def _launch_apiserver(self, state: ClusterState, member: ApiserverState) -> processes.Started:
        pki = self.pki
        etcd_client = pki.apiserver_etcd_client
        front = f"https://127.0.0.1:{state.apiserver_port}"
        arguments = [
            f"--etcd-servers=https://127.0.0.1:{state.etcd_client_port}",
            f"--etcd-cafile={pki.ca.cert}",
            f"--etcd-certfile={etcd_client.cert}",
            f"--etcd-keyfile={etcd_client.key}",
            "--bind-address=127.0.0.1",
            f"--advertise-address={topology.advertise_address(member.index)}",
            # The lease reconciler refuses a loopback advertise address; the dev cluster needs none.
            "--endpoint-reconciler-type=none",
            f"--secure-port={member.port}",
            f"--tls-cert-file={pki.apiserver.cert}",
            f"--tls-private-key-file={pki.apiserver.key}",
            f"--client-ca-file={pki.ca.cert}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--allow-privileged=true",
            "--authorization-mode=RBAC",
            # One issuer for all apiservers, so a token one of them signed is valid on each.
            f"--service-account-issuer={front}",
            f"--service-account-key-file={pki.service_account_public_key}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            "--profiling=false",
        ]
        if state.node:
            # Pods get the ServiceAccount token volume; the apiserver reaches the kubelet (logs)
            # at its InternalIP (the node has no resolvable host name) with the admin certificate.
            arguments += [
                "--kubelet-preferred-address-types=InternalIP,Hostname",
                f"--kubelet-client-certificate={pki.admin.cert}",
                f"--kubelet-client-key={pki.admin.key}",
            ]
        else:
            # No controller-manager mints ServiceAccount token Secrets here; TokenRequest still works.
            arguments.append("--disable-admission-plugins=ServiceAccount")
        if state.encryption == EncryptionMode.KMS.value:
            config = self.apiserver_directory(member.index) / "encryption-config.yaml"
            arguments.append(f"--encryption-provider-config={config}")
        if state.audit_policy:
            arguments += [
                f"--audit-policy-file={state.audit_policy}",
                f"--audit-log-path={self.audit_log(member.index)}",
            ]
        command = [str(self.binary("kube-apiserver")), *arguments]
        if len(state.apiservers) > 1:
            command = _with_own_hostname(member.hostname, command)
        return self._launch(state, topology.apiserver_component(member.index), command)

    def _wait_apiserver_ready(
        self, state: ClusterState, member: ApiserverState, process: processes.Started
    ) -> None:
        url = f"https://127.0.0.1:{member.port}"
        processes.wait_until(
            lambda: self._apiserver_ready(url),
            what=f"{process.component} on {url}",
            process=process,
            timeout_seconds=APISERVER_READY_TIMEOUT,
            also_watch=[started for started in self._started if started is not process],
        )

    def _start_load_balancer(self, state: ClusterState) -> None:
        directory = self.directory / "load-balancer"
        directory.mkdir(exist_ok=True)
        config = directory / "haproxy.cfg"
        backends = [
            topology.Backend(topology.apiserver_component(member.index), member.port)
            for member in state.apiservers
        ]
        config.write_text(topology.haproxy_config(state.load_balancer_port, backends))
        # -db: stay in the foreground (we manage the process); -f: our configuration only.
        command = [str(_haproxy_binary()), "-db", "-f", str(config)]
        process = self._launch(state, topology.LOAD_BALANCER, command)
        processes.wait_until(
            lambda: self._apiserver_ready(f"https://127.0.0.1:{state.load_balancer_port}"),
            what=f"the load balancer (HAProxy) on 127.0.0.1:{state.load_balancer_port}",
            process=process,
            timeout_seconds=LOAD_BALANCER_READY_TIMEOUT,
            also_watch=[started for started in self._started if started is not process],
        )

    def _start_controller_manager(self, state: ClusterState) -> None:
        state.controller_manager_port = processes.free_port()
        command = [
            str(self.binary("kube-controller-manager")),
            f"--kubeconfig={self.kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={state.controller_manager_port}",
            f"--service-account-private-key-file={self.pki.service_account_key}",
            f"--root-ca-file={self.pki.ca.cert}",
            f"--controllers={','.join(CONTROLLERS + (node.NODE_CONTROLLERS if state.node else ()))}",
        ]
        self._launch(state, topology.CONTROLLER_MANAGER, command)

    # The node (`up --node`).
    @property
    def node_layout(self) -> node.NodeLayout:
        return node.NodeLayout.for_cluster(self.directory)

    def import_image(self, archive: Path) -> None:
        """Import an OCI archive into the node's containerd, where pods with pullPolicy Never find it."""
        if not self.load_state().node:
            raise UserError(f"the dev cluster in {self.directory} has no node: start it with `up --node`")
        node.NodeHost(self.node_layout).import_image(self.binary("ctr"), archive.resolve())

    def node_leftovers(self) -> list[str]:
        """The node's host state still present (bridge, DNAT rule, kubelet chains, cgroups, root)."""
        return node.NodeHost(self.node_layout).leftovers()

    def _check_node_host(self, apiservers: int) -> None:
        if apiservers != 1:
            raise UserError("--node runs with one apiserver (its pods reach it through one DNAT rule)")
        node.require_root()
        node.check_host_tools()
        node.NodeHost(self.node_layout).ensure_no_other_node()

    def _start_node(self, state: ClusterState) -> None:
        host = node.NodeHost(self.node_layout)
        state.node_ports = {
            "kubelet": processes.free_port(),
            "kubelet-healthz": processes.free_port(),
            "kube-scheduler": processes.free_port(),
        }
        self._save_state(state)
        host.write_configs(
            apiserver_port=state.apiserver_port,
            kubelet_port=state.node_ports["kubelet"],
            healthz_port=state.node_ports["kubelet-healthz"],
            ca=self.pki.ca.cert,
        )
        host.set_up_network(state.apiserver_port)
        layout = self.node_layout
        containerd = self._launch(
            state,
            NODE_CONTAINERD,
            [str(self.binary("containerd")), "--config", str(layout.containerd_config)],
        )
        processes.wait_until(
            layout.containerd_socket.exists,
            what=f"containerd on {layout.containerd_socket}",
            process=containerd,
            timeout_seconds=60,
            also_watch=[started for started in self._started if started is not containerd],
        )
        host.import_pause_image(self.binary("ctr"), self.binary("pause"))
        self._launch(
            state,
            NODE_SCHEDULER,
            [
                str(self.binary("kube-scheduler")),
                f"--kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={state.node_ports['kube-scheduler']}",
            ],
        )
        kubelet = self._launch(
            state,
            NODE_KUBELET,
            [
                str(self.binary("kubelet")),
                f"--config={layout.kubelet_config}",
                f"--kubeconfig={self.kubeconfig}",
                f"--root-dir={layout.kubelet_root}",
                f"--node-ip={node.NODE_IP}",
                f"--hostname-override={node.NODE_NAME}",
            ],
        )
        processes.wait_until(
            self._node_ready,
            what=f"node {node.NODE_NAME} Ready and untainted",
            process=kubelet,
            timeout_seconds=node.NODE_READY_TIMEOUT,
            also_watch=[started for started in self._started if started is not kubelet],
        )

    def _node_ready(self) -> bool:
        # Ready, and the node-lifecycle controller has lifted the not-ready taint: pods can land.
        output = self.kubectl("get", "node", node.NODE_NAME, "-o", "json", check=False)
        try:
            document = json.loads(output)
        except ValueError:
            return False
        conditions = document.get("status", {}).get("conditions", [])
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        taints = document.get("spec", {}).get("taints") or []
        return ready and not any(t.get("effect") == "NoSchedule" for t in taints)

    def _teardown_node(self, state: ClusterState, *, after_failure: bool) -> None:
        if not state.node:
            return
        problems = node.NodeHost(self.node_layout).teardown()
        if problems and not after_failure:
            raise UserError(
                f"the node of {self.directory} stopped, but some host state is left: " + "; ".join(problems)
            )
        if problems:
            print("could not undo all of the node's host state: " + "; ".join(problems), file=sys.stderr)

    # Readiness probes.
    def _client_ssl_context(self, client: Any) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki.ca.cert))
        context.load_cert_chain(str(client.cert), str(client.key))
        return context

    def _etcd_healthy(self, client_url: str) -> bool:
        return self._https_ok(f"{client_url}/health", self._client_ssl_context(self.pki.etcd_reader))

    def _apiserver_ready(self, url: str) -> bool:
        context = self._client_ssl_context(self.pki.admin)
        # /readyz covers etcd and the KMS provider; the default namespace appears a moment later.
        return self._https_ok(f"{url}/readyz", context) and self._https_ok(
            f"{url}/api/v1/namespaces/default", context
        )

    @staticmethod
    def _https_ok(url: str, context: ssl.SSLContext) -> bool:
        try:
            with urllib.request.urlopen(url, context=context, timeout=5) as response:  # noqa: S310
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError, TimeoutError):
            return False

    # Files.
    def _install_audit_policy(self, audit_policy: Path | None, audit_log: bool) -> Path | None:
        if audit_policy is None and not audit_log:
            return None
        target = self.directory / "audit-policy.yaml"
        if audit_policy is None:
            target.write_text(topology.DEFAULT_AUDIT_POLICY)
            return target
        try:
            text = audit_policy.read_text()
        except OSError as error:
            raise UserError(f"--audit-policy {audit_policy}: cannot read it ({error.strerror})") from None
        target.write_text(text)
        return target

    def _write_encryption_config(self, state: ClusterState, member: ApiserverState) -> None:
        endpoint = state.kms_endpoint or f"unix://{member.kms_socket}"
        directory = self.apiserver_directory(member.index)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "encryption-config.yaml").write_text(
            encryption_configuration(
                EncryptionMode(state.encryption), endpoint, provider_name=state.kms_provider_name
            )
        )

    def _write_client_files(self, state: ClusterState) -> None:
        _write_private(self.kubeconfig, self._kubeconfig_text(state.apiserver_port))
        for member in state.apiservers:
            directory = self.apiserver_directory(member.index)
            directory.mkdir(parents=True, exist_ok=True)
            _write_private(directory / "kubeconfig", self._kubeconfig_text(member.port))
        reader = self.pki.etcd_reader
        etcd_config = {
            "endpoints": [f"https://127.0.0.1:{state.etcd_client_port}"],
            "cacert": str(self.pki.ca.cert),
            "cert": str(reader.cert),
            "key": str(reader.key),
        }
        self.etcd_config.write_text(json.dumps(etcd_config, indent=2) + "\n")

    def _kubeconfig_text(self, port: int) -> str:
        def embed(path: Path) -> str:
            return base64.b64encode(path.read_bytes()).decode()

        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "dev-cluster",
                    "cluster": {
                        "server": f"https://127.0.0.1:{port}",
                        "certificate-authority-data": embed(self.pki.ca.cert),
                    },
                }
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {
                        "client-certificate-data": embed(self.pki.admin.cert),
                        "client-key-data": embed(self.pki.admin.key),
                    },
                }
            ],
            "contexts": [{"name": "dev-cluster", "context": {"cluster": "dev-cluster", "user": "admin"}}],
            "current-context": "dev-cluster",
        }
        return yaml.safe_dump(kubeconfig, sort_keys=False)


def _with_own_hostname(hostname: str, command: list[str]) -> list[str]:
    """Run ``command`` in a UTS namespace of its own under ``hostname`` (its apiserver identity).

    The shell sets the name and execs the program, so the PID stays the one we started. As
    root a UTS namespace is enough; otherwise a user namespace maps us to root inside it.
    """
    unshare = [str(_unshare_binary()), "--uts"]
    if os.geteuid() != 0:
        unshare += ["--user", "--map-root-user"]
    script = 'echo "$0" > /proc/sys/kernel/hostname && exec "$@"'
    return [*unshare, "--", "/bin/sh", "-c", script, hostname, *command]


def _haproxy_binary() -> Path:
    found = shutil.which("haproxy") or next(
        (path for path in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.access(path, os.X_OK)), None
    )
    if not found:
        raise UserError(
            "haproxy not found: a dev cluster with several apiservers needs it as its load balancer; "
            "run scripts/setup.sh as root, or `apt-get install haproxy`"
        )
    return Path(found)


def _unshare_binary() -> Path:
    found = shutil.which("unshare")
    if not found:
        raise UserError(
            "unshare (util-linux) not found: each of several apiservers needs a host name of its own "
            "to get its own identity; install util-linux"
        )
    return Path(found)


def _write_private(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
