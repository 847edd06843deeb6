"""A local control plane: real etcd, the local KMS v2 plugin and a real kube-apiserver.

Every piece runs as a detached process on loopback with free ports; all state (PKI, data,
logs, PIDs, ports) lives in one directory, so several clusters can run side by side (tests
do) and ``down`` knows exactly what to stop. ``state.json`` in that directory is the record.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import ssl
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kms_storage_migrator.devcluster import binaries, processes
from kms_storage_migrator.devcluster.encryption import (
    PROVIDER_NAME,
    EncryptionMode,
    encryption_configuration,
)
from kms_storage_migrator.devcluster.pki import ClusterPki, create_pki
from kms_storage_migrator.errors import UserError
from kms_storage_migrator.kms.keyring import create_keyring, load_keyring, rotate_keyring

SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
APISERVER_READY_TIMEOUT = 240.0
ETCD_READY_TIMEOUT = 60.0
KMS_READY_TIMEOUT = 30.0
# Unix socket paths are limited to 107 bytes; deep temporary directories exceed that.
MAX_SOCKET_PATH = 100
PORT_ATTEMPTS = 3
# Only what a node-less cluster can use, plus the in-tree migrator that benchmarks compare with.
CONTROLLERS = (
    "garbagecollector",
    "namespace",
    "serviceaccount",
    "serviceaccount-token",
    "storage-version-migrator-controller",
)


@dataclass
class ClusterState:
    """What ``state.json`` records about a running (or stopped) dev cluster."""

    encryption: str = EncryptionMode.KMS.value
    etcd_client_port: int = 0
    etcd_peer_port: int = 0
    apiserver_port: int = 0
    controller_manager_port: int = 0
    kms_socket: str = ""
    pids: dict[str, int] = field(default_factory=dict)
    # Start time of each PID (clock ticks since boot): a reused PID has another one.
    start_ticks: dict[str, int] = field(default_factory=dict)


COMPONENT_PROGRAMS = {
    "etcd": "etcd",
    "kms-plugin": "kms-plugin",
    "kube-apiserver": "kube-apiserver",
    "kube-controller-manager": "kube-controller-manager",
}


class DevCluster:
    """One dev cluster, all of whose state lives in ``directory``."""

    provider_name = PROVIDER_NAME

    def __init__(self, directory: Path) -> None:
        self.directory = directory.resolve()
        self.pki = ClusterPki(self.directory / "pki")
        # What this object started, in order; a failed start stops exactly these.
        self._started: list[processes.Started] = []

    # Paths users and tests need.
    @property
    def kubeconfig(self) -> Path:
        return self.directory / "kubeconfig"

    @property
    def etcd_config(self) -> Path:
        return self.directory / "etcd.json"

    @property
    def keyring(self) -> Path:
        return self.directory / "kms" / "keyring.json"

    @property
    def encryption_config(self) -> Path:
        return self.directory / "encryption-config.yaml"

    @property
    def state_path(self) -> Path:
        return self.directory / "state.json"

    def log_path(self, component: str) -> Path:
        return self.directory / "logs" / f"{component}.log"

    @property
    def api_url(self) -> str:
        return f"https://127.0.0.1:{self.load_state().apiserver_port}"

    @property
    def etcd_endpoint(self) -> str:
        return f"https://127.0.0.1:{self.load_state().etcd_client_port}"

    def binary(self, name: str) -> Path:
        return binaries.binary_path(name)

    # State.
    def load_state(self) -> ClusterState:
        if not self.state_path.exists():
            raise UserError(
                f"no dev cluster in {self.directory}: start one with `kms-storage-migrator dev-cluster up`"
            )
        return ClusterState(**json.loads(self.state_path.read_text()))

    def _save_state(self, state: ClusterState) -> None:
        temporary = self.state_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(state), indent=2) + "\n")
        temporary.replace(self.state_path)

    def is_up(self) -> bool:
        if not self.state_path.exists():
            return False
        return self._component_running(self.load_state(), "kube-apiserver")

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
    ) -> None:
        """Start etcd, the KMS plugin and kube-apiserver; return once the apiserver is ready."""
        mode = EncryptionMode(encryption)
        if self.is_up():
            raise UserError(
                f"a dev cluster is already running in {self.directory}; "
                "run `kms-storage-migrator dev-cluster down` first"
            )
        for port, owner in ((apiserver_port, "kube-apiserver"), (etcd_port, "etcd")):
            if port:
                processes.ensure_port_free(port, owner)
        needed: tuple[str, ...] = ("etcd", "etcdctl", "kube-apiserver")
        if with_controller_manager:
            needed += ("kube-controller-manager",)
        binaries.ensure_binaries(needed)

        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.pki.exists():
            create_pki(self.pki.directory)
        if not self.keyring.exists():
            self.keyring.parent.mkdir(parents=True, exist_ok=True)
            create_keyring(self.keyring)
        # Free ports are picked, then bound by another process: two clusters starting at once
        # can pick the same one. A component that loses that race is retried on fresh ports.
        attempts = 1 if (apiserver_port or etcd_port) else PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            state = ClusterState(
                encryption=mode.value,
                etcd_client_port=etcd_port or processes.free_port(),
                etcd_peer_port=processes.free_port(),
                apiserver_port=apiserver_port or processes.free_port(),
                kms_socket=self._kms_socket_path(),
            )
            self._save_state(state)
            self._write_client_files(state)
            self.encryption_config.write_text(encryption_configuration(mode, f"unix://{state.kms_socket}"))
            self._started = []
            try:
                self._start_components(state, with_controller_manager=with_controller_manager)
                return
            except processes.PortInUse:
                self._abort_start(state)
                if attempt == attempts:
                    raise
            except BaseException:
                self._abort_start(state)
                raise

    def _abort_start(self, state: ClusterState) -> None:
        """Stop what this ``up`` started, newest first, by handle, and check nothing is left.

        By handle and not through ``down``: our children's PIDs cannot be reused before we
        reap them, so no /proc guess can make us skip one (an orphaned kube-apiserver once was).
        """
        survivors = [process.component for process in reversed(self._started) if not process.kill_and_check()]
        for process in self._started:
            state.pids.pop(process.component, None)
            state.start_ticks.pop(process.component, None)
        self._save_state(state)
        if any(process.component == "kms-plugin" for process in self._started):
            with contextlib.suppress(FileNotFoundError):
                Path(state.kms_socket).unlink()
        self._started = []
        if survivors:
            raise UserError(
                f"could not stop {', '.join(survivors)} after a failed start in {self.directory}; "
                "stop it by hand (see `dev-cluster status`)"
            )

    def _start_components(self, state: ClusterState, *, with_controller_manager: bool) -> None:
        self._start_etcd(state)
        self._start_kms_plugin(state)
        self._start_apiserver(state)
        if with_controller_manager:
            self._start_controller_manager(state)

    def down(self) -> None:
        """Stop every component; leaves the directory (data, logs, PKI) for inspection."""
        if not self.state_path.exists():
            return
        state = self.load_state()
        # Reverse start order: clients of a component stop before it does.
        for component in ("kube-controller-manager", "kube-apiserver", "kms-plugin", "etcd"):
            processes.stop(
                state.pids.get(component),
                *self._identity(component),
                start_ticks=state.start_ticks.get(component),
            )
            state.pids.pop(component, None)
            state.start_ticks.pop(component, None)
        self._save_state(state)
        with contextlib.suppress(FileNotFoundError):
            Path(state.kms_socket).unlink()

    def restart_apiserver(self) -> None:
        """Restart kube-apiserver so a changed encryption config or KEK applies at once."""
        state = self.load_state()
        processes.stop(
            state.pids.get("kube-apiserver"),
            *self._identity("kube-apiserver"),
            start_ticks=state.start_ticks.get("kube-apiserver"),
        )
        # The port must stay the same (kubeconfigs name it), and the old process can hold it
        # for a moment after it is gone from the process table.
        for attempt in range(1, PORT_ATTEMPTS + 1):
            processes.wait_for_port_release(state.apiserver_port, timeout_seconds=30)
            self._started = []
            try:
                self._start_apiserver(state)
                return
            except processes.PortInUse:
                self._abort_start(state)
                if attempt == PORT_ATTEMPTS:
                    raise
            except BaseException:
                self._abort_start(state)
                raise

    def encrypt(self) -> None:
        """Switch a plaintext cluster to KMS v2 writes (identity stays as a read fallback)."""
        state = self.load_state()
        state.encryption = EncryptionMode.KMS.value
        self._save_state(state)
        self.encryption_config.write_text(
            encryption_configuration(EncryptionMode.KMS, f"unix://{state.kms_socket}")
        )
        self.restart_apiserver()

    def rotate_kek(self) -> str:
        """Make a new primary KEK and restart the apiserver so new writes use it at once."""
        new_key_id = rotate_keyring(self.keyring)
        self.restart_apiserver()
        return new_key_id

    def current_key_id(self) -> str:
        return load_keyring(self.keyring).primary_key_id

    def status(self) -> dict[str, Any]:
        state = self.load_state()
        components = {}
        ports = {
            "etcd": state.etcd_client_port,
            "kube-apiserver": state.apiserver_port,
            "kube-controller-manager": state.controller_manager_port,
        }
        for component in COMPONENT_PROGRAMS:
            pid = state.pids.get(component)
            if pid is None:
                continue
            components[component] = {
                "pid": pid,
                "running": self._component_running(state, component),
                "port": ports.get(component),
                "log": str(self.log_path(component)),
            }
        components["kms-plugin"] = {**components.get("kms-plugin", {}), "socket": state.kms_socket}
        return {
            "directory": str(self.directory),
            "encryption": state.encryption,
            "provider": self.provider_name,
            "currentKeyId": self.current_key_id(),
            "kubeconfig": str(self.kubeconfig),
            "etcdConfig": str(self.etcd_config),
            "components": components,
        }

    # Tools against this cluster.
    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        completed = subprocess.run(
            [str(self.binary("kubectl")), "--kubeconfig", str(self.kubeconfig), *args],
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
        return COMPONENT_PROGRAMS[component], f"{self.directory}/"

    def _kms_socket_path(self) -> str:
        preferred = self.directory / "kms" / "kms.sock"
        if len(str(preferred)) <= MAX_SOCKET_PATH:
            return str(preferred)
        digest = hashlib.sha256(str(self.directory).encode()).hexdigest()[:12]
        return str(Path(tempfile.gettempdir()) / f"ksm-{digest}.sock")

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
        process = self._launch(state, "etcd", command)
        processes.wait_until(
            lambda: self._etcd_healthy(client_url),
            what=f"etcd on {client_url}",
            process=process,
            timeout_seconds=ETCD_READY_TIMEOUT,
        )

    def _start_kms_plugin(self, state: ClusterState) -> None:
        with contextlib.suppress(FileNotFoundError):
            Path(state.kms_socket).unlink()
        command = [
            sys.executable,
            "-m",
            "kms_storage_migrator",
            "kms-plugin",
            "--listen",
            f"unix://{state.kms_socket}",
            "--keyring",
            str(self.keyring),
        ]
        watched = list(self._started)
        process = self._launch(state, "kms-plugin", command)
        processes.wait_until(
            lambda: Path(state.kms_socket).exists(),
            what=f"the KMS v2 plugin on unix://{state.kms_socket}",
            process=process,
            timeout_seconds=KMS_READY_TIMEOUT,
            also_watch=watched,
        )

    def _start_apiserver(self, state: ClusterState) -> None:
        pki = self.pki
        etcd_client = pki.apiserver_etcd_client
        command = [
            str(self.binary("kube-apiserver")),
            f"--etcd-servers=https://127.0.0.1:{state.etcd_client_port}",
            f"--etcd-cafile={pki.ca.cert}",
            f"--etcd-certfile={etcd_client.cert}",
            f"--etcd-keyfile={etcd_client.key}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            # The lease reconciler refuses a loopback advertise address; one apiserver needs none.
            "--endpoint-reconciler-type=none",
            f"--secure-port={state.apiserver_port}",
            f"--tls-cert-file={pki.apiserver.cert}",
            f"--tls-private-key-file={pki.apiserver.key}",
            f"--client-ca-file={pki.ca.cert}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--allow-privileged=true",
            "--authorization-mode=RBAC",
            # No controller-manager mints ServiceAccount token Secrets here; TokenRequest still works.
            "--disable-admission-plugins=ServiceAccount",
            f"--service-account-issuer=https://127.0.0.1:{state.apiserver_port}",
            f"--service-account-key-file={pki.service_account_public_key}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            "--profiling=false",
        ]
        if state.encryption == EncryptionMode.KMS.value:
            command.append(f"--encryption-provider-config={self.encryption_config}")
        watched = list(self._started)
        process = self._launch(state, "kube-apiserver", command)
        processes.wait_until(
            self._apiserver_ready,
            what=f"kube-apiserver on https://127.0.0.1:{state.apiserver_port}",
            process=process,
            timeout_seconds=APISERVER_READY_TIMEOUT,
            also_watch=watched,
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
            f"--controllers={','.join(CONTROLLERS)}",
        ]
        self._launch(state, "kube-controller-manager", command)

    def _launch(self, state: ClusterState, component: str, command: list[str]) -> processes.Started:
        """Start one component, record it in state.json at once (so `down` finds it) and here."""
        process = processes.start(command, self.log_path(component), component=component)
        self._started.append(process)
        state.pids[component] = process.pid
        if process.start_ticks is not None:
            state.start_ticks[component] = process.start_ticks
        self._save_state(state)
        return process

    # Readiness probes.
    def _client_ssl_context(self, client: Any) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki.ca.cert))
        context.load_cert_chain(str(client.cert), str(client.key))
        return context

    def _etcd_healthy(self, client_url: str) -> bool:
        return self._https_ok(f"{client_url}/health", self._client_ssl_context(self.pki.etcd_reader))

    def _apiserver_ready(self) -> bool:
        context = self._client_ssl_context(self.pki.admin)
        # /readyz covers etcd and the KMS provider; the default namespace appears a moment later.
        return self._https_ok(f"{self.api_url}/readyz", context) and self._https_ok(
            f"{self.api_url}/api/v1/namespaces/default", context
        )

    @staticmethod
    def _https_ok(url: str, context: ssl.SSLContext) -> bool:
        try:
            with urllib.request.urlopen(url, context=context, timeout=5) as response:  # noqa: S310
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError, TimeoutError):
            return False

    # Client files.
    def _write_client_files(self, state: ClusterState) -> None:
        def embed(path: Path) -> str:
            return base64.b64encode(path.read_bytes()).decode()

        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "dev-cluster",
                    "cluster": {
                        "server": f"https://127.0.0.1:{state.apiserver_port}",
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
        _write_private(self.kubeconfig, yaml.safe_dump(kubeconfig, sort_keys=False))
        reader = self.pki.etcd_reader
        etcd_config = {
            "endpoints": [f"https://127.0.0.1:{state.etcd_client_port}"],
            "cacert": str(self.pki.ca.cert),
            "cert": str(reader.cert),
            "key": str(reader.key),
        }
        self.etcd_config.write_text(json.dumps(etcd_config, indent=2) + "\n")


def _write_private(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
