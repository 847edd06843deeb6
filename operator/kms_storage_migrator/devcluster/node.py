"""A real node for the dev cluster (``dev-cluster up --node``): containerd, kubelet, and the host
set-up they need, and the clean-up that undoes it.

The configuration is rendered by pure functions (``containerd_config``, ``kubelet_config``, the
pause image, which iptables rules are ours); ``NodeHost`` does the I/O. What this VM requires and
why each setting exists is in docs/dev-cluster.md ("A real node").

Host state a node adds, which ``NodeHost.teardown`` removes (after a failed ``up`` too):
the bridge ``ksm-cni0`` (and its ``route_localnet``), the DNAT rule that stands in for
kube-proxy, the iptables chains the kubelet makes by itself, ``/run/containerd`` (the shims'
sockets, a path containerd does not let us move) when it did not exist before, the kubelet's
symlinks in ``/var/log/containers``, the ``kubepods`` cgroups in every hierarchy, and the node's
own root (``/var/lib/kms-storage-migrator/node-<hash>``: containerd's data, the pods' network
namespaces, the kubelet's root, pod logs). A bridge name, a pod subnet and those chains are
machine-wide, so one node runs per machine at a time.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import yaml

from kms_storage_migrator.errors import UserError

NODE_NAME: Final = "ksm-node-1"
BRIDGE: Final = "ksm-cni0"
POD_SUBNET: Final = "10.244.0.0/24"
# The bridge's own address: the node's InternalIP (the kubelet refuses a loopback node IP).
NODE_IP: Final = "10.244.0.1"
# The `kubernetes` Service's ClusterIP, the first address of the dev cluster's service range.
KUBERNETES_SERVICE_IP: Final = "10.0.0.1"
CONTAINERD_NAMESPACE: Final = "k8s.io"  # the namespace the CRI plugin keeps its images in
PAUSE_IMAGE: Final = "localhost/kms-storage-migrator-pause:v1"
RUNC: Final = Path("/usr/sbin/runc")
CNI_BIN_DIR: Final = Path("/usr/lib/cni")
NODE_ROOT_PARENT: Final = Path("/var/lib/kms-storage-migrator")
RUN_CONTAINERD: Final = Path("/run/containerd")
CONTAINER_LOG_LINKS: Final = Path("/var/log/containers")
CGROUP_ROOT: Final = Path("/sys/fs/cgroup")
# What the controller-manager runs besides the dev cluster's own controllers once a node runs:
# Deployments and their ReplicaSets, PodDisruptionBudgets, the not-ready taint lifted, and the
# kube-root-ca.crt ConfigMap that the ServiceAccount token volume needs.
NODE_CONTROLLERS: Final = (
    "deployment",
    "replicaset",
    "disruption",
    "nodelifecycle",
    "root-ca-cert-publisher",
)
# The chains kubelet 1.37 makes on its own (pkg/kubelet/kubelet_network_linux.go), per table.
KUBELET_CHAINS: Final = {
    "filter": ("KUBE-FIREWALL", "KUBE-KUBELET-CANARY"),
    "nat": ("KUBE-KUBELET-CANARY",),
    "mangle": ("KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT"),
}
DNAT_COMMENT: Final = "kms-storage-migrator dev node: pods to the apiserver"
NODE_READY_TIMEOUT: Final = 180.0


@dataclass(frozen=True)
class NodeLayout:
    """Where a node's files live: its configs in the cluster directory (so its processes' command
    lines name that directory, which is how ``down`` recognises them), its state in a short
    host path (unix socket paths are limited to 107 bytes; test directories are deep)."""

    directory: Path  # the cluster's directory
    root: Path

    @classmethod
    def for_cluster(cls, directory: Path) -> NodeLayout:
        digest = hashlib.sha256(str(directory).encode()).hexdigest()[:12]
        return cls(directory, NODE_ROOT_PARENT / f"node-{digest}")

    @property
    def config_dir(self) -> Path:
        return self.directory / "node"

    @property
    def containerd_config(self) -> Path:
        return self.config_dir / "containerd.toml"

    @property
    def kubelet_config(self) -> Path:
        return self.config_dir / "kubelet.yaml"

    @property
    def cni_config_dir(self) -> Path:
        return self.config_dir / "cni"

    @property
    def host_record(self) -> Path:
        """Which shared host paths existed before ``up`` (so ``down`` removes only ours)."""
        return self.config_dir / "host-state.json"

    @property
    def containerd_socket(self) -> Path:
        return self.root / "containerd" / "containerd.sock"

    @property
    def containerd_root(self) -> Path:
        return self.root / "containerd" / "root"

    @property
    def containerd_state(self) -> Path:
        return self.root / "containerd" / "state"

    @property
    def runc_root(self) -> Path:
        return self.root / "runc"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.root / "cni-ipam"

    @property
    def kubelet_root(self) -> Path:
        return self.root / "kubelet"

    @property
    def pod_logs(self) -> Path:
        return self.root / "pod-logs"


def containerd_config(layout: NodeLayout) -> str:
    """containerd's config: Debian's runc with cgroupfs, overlayfs, Debian's CNI plugins, all
    state under the node's root, and the one setting this VM requires (restrict_oom_score_adj)."""
    runtime = "plugins.'io.containerd.cri.v1.runtime'"
    return f"""\
# Rendered by `kms-storage-migrator dev-cluster up --node`.
version = 3
root = {_toml(layout.containerd_root)}
state = {_toml(layout.containerd_state)}

[grpc]
  address = {_toml(layout.containerd_socket)}

[{runtime}]
  # This VM's init drops CAP_SYS_RESOURCE from every process, so oom_score_adj can only go up:
  # without this every sandbox fails ("failed to update /proc/self/oom_score_adj").
  restrict_oom_score_adj = true
  # Pod network namespaces under our state, not in the host's shared /var/run/netns.
  netns_mounts_under_state_dir = true
  [{runtime}.containerd]
    default_runtime_name = 'runc'
    [{runtime}.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [{runtime}.containerd.runtimes.runc.options]
        BinaryName = {_toml(RUNC)}
        Root = {_toml(layout.runc_root)}
        SystemdCgroup = false
  [{runtime}.cni]
    bin_dirs = [{_toml(CNI_BIN_DIR)}]
    conf_dir = {_toml(layout.cni_config_dir)}

[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = {_toml(PAUSE_IMAGE)}
"""


def _toml(value: object) -> str:
    # A TOML basic string and a JSON string agree for the paths and names used here.
    return json.dumps(str(value))


def cni_conflist(layout: NodeLayout) -> str:
    """One bridge on the pod subnet. No ipMasq: nothing touches the host's NAT table but our rule."""
    config = {
        "cniVersion": "1.0.0",
        "name": "ksm-node",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_SUBNET, "gateway": NODE_IP}]],
                    "dataDir": str(layout.cni_ipam_dir),
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            }
        ],
    }
    return json.dumps(config, indent=2) + "\n"


def kubelet_config(layout: NodeLayout, *, port: int, healthz_port: int, client_ca: Path) -> str:
    """The KubeletConfiguration for this VM (cgroup v1, no swap check) on a shared machine."""
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "cgroupDriver": "cgroupfs",
        # kubelet 1.37 refuses cgroup v1 by default (KEP 5573); this VM mounts only v1.
        "failCgroupV1": False,
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "podLogsDir": str(layout.pod_logs),
        # The apiserver reaches the kubelet (logs, exec) with the admin certificate.
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(client_ca)},
        },
        "authorization": {"mode": "Webhook"},
        "address": NODE_IP,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        # Other engineers' runs fill this machine's disk and memory: never evict for that.
        "evictionHard": {},
        "imageGCHighThresholdPercent": 100,
        "enforceNodeAllocatable": [],
        "localStorageCapacityIsolation": False,
        "resolvConf": "/etc/resolv.conf",
    }
    return yaml.safe_dump(config, sort_keys=False)


def dnat_rule(apiserver_port: int) -> list[str]:
    """The nat PREROUTING rule (after ``-A``/``-D PREROUTING``) that stands in for kube-proxy:
    pods reach the apiserver at the `kubernetes` Service address, 10.0.0.1:443, which the
    apiserver certificate names; it goes to the apiserver on loopback (with route_localnet)."""
    return [
        *("-s", POD_SUBNET, "-d", f"{KUBERNETES_SERVICE_IP}/32", "-p", "tcp", "--dport", "443"),
        *("-m", "comment", "--comment", DNAT_COMMENT),
        *("-j", "DNAT", "--to-destination", f"127.0.0.1:{apiserver_port}"),
    ]


def rules_to_delete(listing: str, *, jump_targets: Iterable[str] = (), comment: str = "") -> list[list[str]]:
    """From ``iptables -t TABLE -S`` output: the ``-D`` arguments of every rule that jumps to one of
    ``jump_targets`` or carries ``comment``, so each is deleted exactly as it was added."""
    targets = set(jump_targets)
    deletions: list[list[str]] = []
    for line in listing.splitlines():
        if not line.startswith("-A "):
            continue
        words = shlex.split(line)
        jumps = {words[i + 1] for i, word in enumerate(words[:-1]) if word in ("-j", "-g")}
        if jumps & targets or (comment and comment in words):
            deletions.append(["-D", *words[1:]])
    return deletions


def chains_in(listing: str) -> set[str]:
    """The user-defined chains an ``iptables -t TABLE -S`` listing declares (``-N NAME``)."""
    return {line.split()[1] for line in listing.splitlines() if line.startswith("-N ")}


def pause_image_archive(pause_binary: bytes, name: str = PAUSE_IMAGE) -> bytes:
    """An OCI image archive (``ctr images import`` reads it) of one layer holding ``/pause``.

    The sandbox image cannot be pulled here (no registry is reachable), and this is the smallest
    image that does its job; it is deterministic, so the same program gives the same digest.
    """
    layer = _tar({"pause": (pause_binary, 0o755)})
    layer_digest = _digest(layer)
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": ["/pause"], "User": "65535:65535"},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }
    config_blob = _canonical(image_config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": _descriptor("application/vnd.oci.image.config.v1+json", config_blob),
        "layers": [_descriptor("application/vnd.oci.image.layer.v1.tar", layer)],
    }
    manifest_blob = _canonical(manifest)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                **_descriptor("application/vnd.oci.image.manifest.v1+json", manifest_blob),
                "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name},
            }
        ],
    }
    files: dict[str, tuple[bytes, int]] = {
        "oci-layout": (_canonical({"imageLayoutVersion": "1.0.0"}), 0o644),
        "index.json": (_canonical(index), 0o644),
    }
    for blob in (layer, config_blob, manifest_blob):
        files[f"blobs/sha256/{_digest(blob).removeprefix('sha256:')}"] = (blob, 0o644)
    return _tar(files)


def _tar(files: dict[str, tuple[bytes, int]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for path, (content, mode) in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(content), mode, 0
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _canonical(document: object) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _digest(blob: bytes) -> str:
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def _descriptor(media_type: str, blob: bytes) -> dict[str, object]:
    return {"mediaType": media_type, "digest": _digest(blob), "size": len(blob)}


def mount_points_under(mountinfo: str, roots: Sequence[Path]) -> list[str]:
    """Mount points (from /proc/self/mountinfo) at or under ``roots``, deepest first."""
    found = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        # Spaces and other specials are octal-escaped (\040) in mountinfo.
        point = fields[4].encode().decode("unicode_escape")
        if any(point == str(root) or point.startswith(f"{root}/") for root in roots):
            found.append(point)
    return sorted(set(found), key=lambda point: (-point.count("/"), point))


# --- I/O ---------------------------------------------------------------------------------------


def require_root() -> None:
    if os.geteuid() != 0:
        raise UserError(
            "dev-cluster up --node needs root: the node creates a bridge, iptables rules, cgroups and "
            "mounts (run it with sudo, or leave out --node)"
        )


def check_host_tools() -> None:
    """What the node takes from Debian's packages (scripts/build-image.sh installs runc)."""
    missing = []
    if not os.access(RUNC, os.X_OK):
        missing.append(f"{RUNC} (apt-get install runc)")
    if not (CNI_BIN_DIR / "bridge").exists():
        missing.append(f"{CNI_BIN_DIR}/bridge (apt-get install containernetworking-plugins)")
    for tool, package in (("iptables", "iptables"), ("ip", "iproute2"), ("umount", "mount")):
        if shutil.which(tool) is None:
            missing.append(f"{tool} (apt-get install {package})")
    if missing:
        raise UserError(f"dev-cluster up --node needs: {'; '.join(missing)}")


class NodeHost:
    """The host side of one node: set up before its processes start, undone after they stop."""

    def __init__(self, layout: NodeLayout) -> None:
        self.layout = layout

    def ensure_no_other_node(self) -> None:
        if Path(f"/sys/class/net/{BRIDGE}").exists():
            raise UserError(
                f"the bridge {BRIDGE} exists: another dev-cluster node runs on this machine (one at a "
                "time: the bridge, pod subnet and the kubelet's iptables chains are machine-wide); "
                "stop it with `dev-cluster down --dir` on its directory"
            )

    def write_configs(self, *, apiserver_port: int, kubelet_port: int, healthz_port: int, ca: Path) -> None:
        layout = self.layout
        layout.cni_config_dir.mkdir(parents=True, exist_ok=True)
        for directory in (layout.root, layout.cni_ipam_dir, layout.pod_logs, layout.kubelet_root):
            directory.mkdir(parents=True, exist_ok=True)
        layout.containerd_config.write_text(containerd_config(layout))
        (layout.cni_config_dir / "10-ksm-node.conflist").write_text(cni_conflist(layout))
        layout.kubelet_config.write_text(
            kubelet_config(layout, port=kubelet_port, healthz_port=healthz_port, client_ca=ca)
        )
        record = {
            "run_containerd_existed": RUN_CONTAINERD.exists(),
            "container_log_links_existed": CONTAINER_LOG_LINKS.exists(),
            "apiserver_port": apiserver_port,
        }
        layout.host_record.write_text(json.dumps(record) + "\n")

    def set_up_network(self, apiserver_port: int) -> None:
        """The bridge with the node IP (before the kubelet validates it), route_localnet so DNAT to
        127.0.0.1 is routed, and the DNAT rule."""
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        _run("ip", "addr", "add", f"{NODE_IP}/24", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        Path(f"/proc/sys/net/ipv4/conf/{BRIDGE}/route_localnet").write_text("1\n")
        _run("iptables", "-t", "nat", "-A", "PREROUTING", *dnat_rule(apiserver_port))

    def import_image(self, ctr: Path, archive: Path) -> str:
        """Import an OCI (or docker) archive into the CRI's image namespace; returns ctr's output."""
        if not archive.is_file():
            raise UserError(
                f"image archive {archive}: no such file (make one with `podman save --format oci-archive`)"
            )
        if not self.layout.containerd_socket.exists():
            raise UserError(
                f"no containerd socket at {self.layout.containerd_socket}: start the node first "
                "(`dev-cluster up --node`)"
            )
        completed = subprocess.run(
            [
                *(str(ctr), "--address", str(self.layout.containerd_socket), "-n", CONTAINERD_NAMESPACE),
                *("images", "import", str(archive)),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        if completed.returncode != 0:
            raise UserError(
                f"importing {archive} into containerd failed (exit {completed.returncode}): "
                f"{completed.stderr.strip()[-800:]}"
            )
        return completed.stdout

    def import_pause_image(self, ctr: Path, pause_binary: Path) -> None:
        archive = self.layout.config_dir / "pause-image.tar"
        archive.write_bytes(pause_image_archive(pause_binary.read_bytes()))
        self.import_image(ctr, archive)

    # Teardown: every step runs even when an earlier one fails; the errors are reported together.
    def kill_pods(self) -> None:
        """SIGKILL whatever runs in the kubepods cgroups (the pods), then the runc shims of our
        containerd (they outlive it), found by the socket address in their command line."""
        for _ in range(3):
            pids = _kubepods_pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
        address = str(self.layout.containerd_socket)
        for pid in _pids_with_arguments("containerd-shim-runc-v2", address):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def teardown(self) -> list[str]:
        """Undo the host state; returns what could not be undone (empty: all clean)."""
        problems: list[str] = []
        record = self._host_record()
        self._step(problems, "kill the pods", self.kill_pods)
        self._step(problems, "unmount the node's mounts", self._unmount_all)
        self._step(problems, "remove the kubepods cgroups", _remove_kubepods_cgroups)
        self._step(problems, "remove the iptables rules", self._remove_iptables)
        self._step(problems, f"delete the bridge {BRIDGE}", _delete_bridge)
        self._step(problems, "remove the pod log links", self._remove_log_links)
        if not record.get("container_log_links_existed", True):
            self._step(
                problems, f"remove {CONTAINER_LOG_LINKS}", lambda: _remove_empty_dir(CONTAINER_LOG_LINKS)
            )
        if not record.get("run_containerd_existed", True):
            self._step(
                problems,
                f"remove {RUN_CONTAINERD}",
                lambda: shutil.rmtree(RUN_CONTAINERD, ignore_errors=False),
            )
        self._step(problems, f"remove {self.layout.root}", functools.partial(shutil.rmtree, self.layout.root))
        _remove_empty_dir(NODE_ROOT_PARENT)
        return problems

    @staticmethod
    def _step(problems: list[str], what: str, action: Callable[[], object]) -> None:
        try:
            action()
        except FileNotFoundError:
            pass
        except (OSError, subprocess.SubprocessError, UserError) as error:
            problems.append(f"{what}: {error}")

    def _host_record(self) -> dict[str, object]:
        try:
            record: dict[str, object] = json.loads(self.layout.host_record.read_text())
        except (OSError, ValueError):
            return {}
        return record

    def _unmount_all(self) -> None:
        roots = [self.layout.root, RUN_CONTAINERD]
        for _ in range(3):
            points = mount_points_under(Path("/proc/self/mountinfo").read_text(), roots)
            if not points:
                return
            for point in points:
                subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)
        left = mount_points_under(Path("/proc/self/mountinfo").read_text(), roots)
        if left:
            raise UserError(f"still mounted: {', '.join(left[:5])}")

    def _remove_iptables(self) -> None:
        failures = []
        for binary in ("iptables", "ip6tables"):
            if shutil.which(binary) is None:
                continue
            for table, chains in KUBELET_CHAINS.items():
                listing = _iptables_listing(binary, table)
                if listing is None:
                    continue
                comment = DNAT_COMMENT if (binary, table) == ("iptables", "nat") else ""
                for deletion in rules_to_delete(listing, jump_targets=chains, comment=comment):
                    failures += _try(binary, "-t", table, *deletion)
                for chain in sorted(chains_in(listing) & set(chains)):
                    failures += _try(binary, "-t", table, "-F", chain)
                    failures += _try(binary, "-t", table, "-X", chain)
        if failures:
            raise UserError("; ".join(failures))

    def _remove_log_links(self) -> None:
        if not CONTAINER_LOG_LINKS.is_dir():
            return
        for link in CONTAINER_LOG_LINKS.iterdir():
            if link.is_symlink() and str(os.readlink(link)).startswith(f"{self.layout.pod_logs}/"):
                link.unlink()

    def leftovers(self) -> list[str]:
        """What of this node's host state is still there (empty after a clean teardown)."""
        found = []
        if Path(f"/sys/class/net/{BRIDGE}").exists():
            found.append(f"bridge {BRIDGE}")
        nat = _iptables_listing("iptables", "nat") or ""
        if DNAT_COMMENT in nat:
            found.append("the DNAT rule")
        for table, chains in KUBELET_CHAINS.items():
            for chain in sorted(chains_in(_iptables_listing("iptables", table) or "") & set(chains)):
                found.append(f"iptables {table} chain {chain}")
        found += [f"cgroup {path}" for path in _kubepods_cgroups()]
        mountinfo = Path("/proc/self/mountinfo").read_text()
        found += [f"mount {point}" for point in mount_points_under(mountinfo, [self.layout.root])]
        if self.layout.root.exists():
            found.append(str(self.layout.root))
        return found


def _run(*command: str) -> None:
    completed = subprocess.run(list(command), capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise UserError(f"`{' '.join(command)}` failed: {completed.stderr.strip()}")


def _try(*command: str) -> list[str]:
    completed = subprocess.run(list(command), capture_output=True, text=True, check=False)
    return [] if completed.returncode == 0 else [f"`{' '.join(command)}`: {completed.stderr.strip()}"]


def _iptables_listing(binary: str, table: str) -> str | None:
    completed = subprocess.run([binary, "-t", table, "-S"], capture_output=True, text=True, check=False)
    return completed.stdout if completed.returncode == 0 else None


def _delete_bridge() -> None:
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        _run("ip", "link", "delete", BRIDGE)


def _kubepods_cgroups() -> list[Path]:
    if not CGROUP_ROOT.is_dir():
        return []
    return [
        hierarchy / "kubepods"
        for hierarchy in sorted(CGROUP_ROOT.iterdir())
        if (hierarchy / "kubepods").is_dir()
    ]


def _kubepods_pids() -> set[int]:
    pids: set[int] = set()
    for top in _kubepods_cgroups():
        for procs in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(line) for line in procs.read_text().split())
    return pids


def _remove_kubepods_cgroups() -> None:
    # A cgroup directory is removed with rmdir (its files are the kernel's), deepest first.
    for top in _kubepods_cgroups():
        directories = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for directory in [*directories, top]:
            for attempt in range(20):
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    # Busy for a moment after its last process was killed.
                    if attempt == 19:
                        raise
                    time.sleep(0.1)


def _pids_with_arguments(*needles: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        text = [argument.decode(errors="replace") for argument in arguments]
        if all(any(needle in argument for argument in text) for needle in needles):
            found.append(int(entry.name))
    return found


def _remove_empty_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()
