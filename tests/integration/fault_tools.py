"""What the fault suite judges with, none of it from the code under test.

- ``EtcdInspector`` reads etcd with the ``etcdctl`` binary and the cluster's ``etcd.json``
  certificates and classifies each value by its prefix itself (no use of the project's
  scanner or classifier), so "nothing stale" is checked against the KMS plugin's own primary
  key id (``DevCluster.current_key_id`` reads the plugin's keyring).
- ``content_hashes`` is what must survive a migration: each object as ``kubectl`` returns it,
  without resourceVersion, managedFields and status.
- ``LoadGenerator`` creates, updates and deletes ConfigMaps through the API at a bounded rate
  and remembers what it wrote last, so "last write wins" can be checked object by object.
- ``FaultWorld`` is one seeded dev cluster with the operator as a real process.

Sizes: ``KSM_FAULT_SCALE=full`` runs the documented sizes (scripts/reliability.sh); anything
else runs the small CI sizes.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import random
import secrets
import ssl
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from operator_harness import (
    TERMINAL,
    OperatorProcess,
    apply_migration,
    install_crd,
    migration,
)

from kms_storage_migrator.devcluster.cluster import DevCluster
from kms_storage_migrator.devcluster.seed import seed

FULL_SCALE = os.environ.get("KSM_FAULT_SCALE", "small").lower() == "full"

# The seeded types, as the spec selects them, as kubectl names them, and where etcd keeps them.
SELECTION = [
    "core/configmaps",
    "core/secrets",
    "apps/deployments",
    "rbac.authorization.k8s.io/roles",
    "rbac.authorization.k8s.io/rolebindings",
    "demo.kms-storage-migrator.io/*",
]
KINDS = (
    "configmaps,secrets,deployments.apps,roles.rbac.authorization.k8s.io,"
    "rolebindings.rbac.authorization.k8s.io,gadgets.demo.kms-storage-migrator.io,"
    "regions.demo.kms-storage-migrator.io"
)
PREFIXES = (
    "/registry/configmaps/",
    "/registry/secrets/",
    "/registry/deployments/",
    "/registry/roles/",
    "/registry/rolebindings/",
    "/registry/demo.kms-storage-migrator.io/gadgets/",
    "/registry/demo.kms-storage-migrator.io/regions/",
)
SEED_NAMESPACE_PREFIX = "legacy-"

KMS_V2 = b"k8s:enc:kms:v2:"
ENCRYPTED = b"k8s:enc:"
PLAINTEXT_PROTOBUF = b"k8s\x00"
PLAINTEXT_CBOR = b"\xd9\xd9\xf7"
PLAINTEXT = "plaintext"
UNKNOWN = "unknown"
SEED_DEK_SOURCE = 1  # HKDF_SHA256_XNONCE_AES_GCM_SEED, what kube-apiserver writes today


def scaled(small: int, full: int) -> int:
    return full if FULL_SCALE else small


# --- etcd, read independently ---------------------------------------------------------


def _varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= len(data):
            raise ValueError("truncated varint")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7


def encrypted_object_key(body: bytes) -> tuple[str, int]:
    """(keyID, encryptedDEKSourceType) of a KMS v2 ``EncryptedObject`` (fields 2 and 5)."""
    key_id = ""
    source_type = 0  # proto3 leaves a zero enum out
    position = 0
    while position < len(body):
        tag, position = _varint(body, position)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, position = _varint(body, position)
            if number == 5:
                source_type = value
        elif wire == 2:
            length, position = _varint(body, position)
            chunk = body[position : position + length]
            position += length
            if number == 2:
                key_id = chunk.decode("utf-8", "replace")
        elif wire == 1:
            position += 8
        elif wire == 5:
            position += 4
        else:
            raise ValueError(f"wire type {wire} in an EncryptedObject")
    return key_id, source_type


def classify(value: bytes) -> str:
    """How one etcd value is stored: ``plaintext``, ``kms-v2:<provider>:<keyID>[:dek-type-N]``,
    ``<provider kind>:<name>`` for other encrypted forms, or ``unknown``."""
    if value.startswith(KMS_V2):
        provider, separator, body = value[len(KMS_V2) :].partition(b":")
        if not separator:
            return UNKNOWN
        try:
            key_id, source_type = encrypted_object_key(body)
        except ValueError:
            return UNKNOWN
        label = f"kms-v2:{provider.decode('utf-8', 'replace')}:{key_id}"
        return label if source_type == SEED_DEK_SOURCE else f"{label}:dek-type-{source_type}"
    if value.startswith(ENCRYPTED):
        parts = value.split(b":", 5)
        if len(parts) < 5:
            return UNKNOWN
        return f"{parts[2].decode('ascii', 'replace')}-{parts[3].decode('ascii', 'replace')}:" + parts[
            4
        ].decode("utf-8", "replace")
    if value.startswith((PLAINTEXT_PROTOBUF, b"{", PLAINTEXT_CBOR)):
        return PLAINTEXT
    return UNKNOWN


@dataclass(frozen=True)
class StoredValue:
    key: str
    mod_revision: int
    form: str


class EtcdInspector:
    """etcd as ``etcdctl`` shows it, with the certificates in the cluster's etcd.json."""

    def __init__(self, cluster: DevCluster) -> None:
        self.cluster = cluster

    def _etcdctl(self, *args: str, input: bytes | None = None, timeout: float = 120) -> bytes:
        config = json.loads(self.cluster.etcd_config.read_text())
        command = [
            str(self.cluster.binary("etcdctl")),
            f"--endpoints={','.join(config['endpoints'])}",
            f"--cacert={config['cacert']}",
            f"--cert={config['cert']}",
            f"--key={config['key']}",
            "--command-timeout=60s",
            *args,
        ]
        completed = subprocess.run(command, input=input, capture_output=True, timeout=timeout, check=False)
        if completed.returncode != 0:
            raise RuntimeError(
                f"etcdctl {args[0]} failed: {completed.stderr.decode(errors='replace')[-500:]}"
            )
        return completed.stdout

    def values(self, prefixes: Iterable[str] = PREFIXES) -> dict[str, StoredValue]:
        found: dict[str, StoredValue] = {}
        for prefix in prefixes:
            reply = json.loads(self._etcdctl("get", "--prefix", prefix, "-w", "json"))
            for kv in reply.get("kvs") or []:
                key = base64.b64decode(kv["key"]).decode()
                value = base64.b64decode(kv.get("value", ""))
                found[key] = StoredValue(key, int(kv["mod_revision"]), classify(value))
        return found

    def revision(self) -> int:
        reply = json.loads(self._etcdctl("get", "--prefix", "/", "--keys-only", "--limit=1", "-w", "json"))
        return int(reply["header"]["revision"])

    def compact(self, revision: int) -> None:
        self._etcdctl("compact", str(revision))

    def put(self, key: str, value: bytes) -> None:
        """Write raw bytes under a key (etcdctl reads the value from stdin when none is given)."""
        self._etcdctl("put", key, input=value)

    def delete(self, key: str) -> None:
        self._etcdctl("del", key)

    def current_form(self) -> str:
        """How the apiserver writes now: the KMS plugin's primary key id, read from its keyring."""
        return f"kms-v2:{self.cluster.provider_name}:{self.cluster.current_key_id()}"

    def stale(self, prefixes: Iterable[str] = PREFIXES) -> dict[str, str]:
        """Every stored object not in the current write form, with the form it is in."""
        current = self.current_form()
        return {key: v.form for key, v in self.values(prefixes).items() if v.form != current}


# --- content, through the API ----------------------------------------------------------


def _object_key(item: dict[str, Any]) -> str:
    meta = item["metadata"]
    return f"{item['kind']}/{meta.get('namespace', '')}/{meta['name']}"


def content_digest(item: dict[str, Any]) -> str:
    """A hash of what a migration must not change: all but resourceVersion, managedFields, status."""
    copy = json.loads(json.dumps(item))
    copy["metadata"].pop("resourceVersion", None)
    copy["metadata"].pop("managedFields", None)
    copy.pop("status", None)
    return hashlib.sha256(json.dumps(copy, sort_keys=True).encode()).hexdigest()


def list_objects(cluster: DevCluster, kinds: str = KINDS) -> list[dict[str, Any]]:
    return list(json.loads(cluster.kubectl("get", kinds, "-A", "-o", "json", "--chunk-size=500"))["items"])


def content_hashes(
    cluster: DevCluster, kinds: str = KINDS, namespace_prefix: str = SEED_NAMESPACE_PREFIX
) -> dict[str, str]:
    """Content hash of every object of ``kinds`` that is cluster-scoped or in a matching namespace
    (the seeded ones: kube-system's objects are the apiserver's own, rewritten at its will)."""
    hashes = {}
    for item in list_objects(cluster, kinds):
        namespace = item["metadata"].get("namespace", "")
        if not namespace or namespace.startswith(namespace_prefix):
            hashes[_object_key(item)] = content_digest(item)
    return hashes


def changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Objects whose content differs, or that went missing or appeared, between two hash sets."""
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


# --- load -----------------------------------------------------------------------------


class ApiClient:
    """One keep-alive HTTPS connection to the apiserver as the admin user (for the load)."""

    def __init__(self, cluster: DevCluster) -> None:
        self.cluster = cluster
        self._context = ssl.create_default_context(cafile=str(cluster.pki.ca.cert))
        self._context.load_cert_chain(str(cluster.pki.admin.cert), str(cluster.pki.admin.key))
        self._connection: http.client.HTTPSConnection | None = None

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Accept": "application/json"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = (
                "application/merge-patch+json" if method == "PATCH" else "application/json"
            )
        for attempt in range(2):
            if self._connection is None:
                port = self.cluster.load_state().apiserver_port
                self._connection = http.client.HTTPSConnection(
                    "127.0.0.1", port, context=self._context, timeout=30
                )
            try:
                self._connection.request(method, path, body=payload, headers=headers)
                response = self._connection.getresponse()
                data = response.read()
                return response.status, json.loads(data) if data else {}
            except (OSError, http.client.HTTPException):
                self._connection.close()
                self._connection = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()


@dataclass
class LoadRecord:
    """What the writers did: the last value written to each object, and what they deleted."""

    last_value: dict[str, str] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    created: set[str] = field(default_factory=set)
    operations: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.operations / self.seconds if self.seconds else 0.0


class LoadGenerator:
    """Writers creating, updating and deleting ConfigMaps in ``namespaces`` at ``rate`` ops/s.

    Each writer owns its namespace, so the record of what it wrote last is exact (no two
    writers race on one object); an operation counts only once the apiserver accepted it.
    """

    def __init__(self, cluster: DevCluster, namespaces: list[str], *, rate: float, seed_objects: int) -> None:
        self.cluster = cluster
        self.namespaces = namespaces
        self.rate = rate
        self.seed_objects = seed_objects
        self.record = LoadRecord()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = 0.0

    def prepare(self) -> None:
        """The namespaces and their first objects (created before the migration starts)."""
        items: list[dict[str, Any]] = []
        for namespace in self.namespaces:
            items.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
            for index in range(self.seed_objects):
                items.append(_load_configmap(namespace, f"w-{index}", "0"))
                self.record.last_value[f"{namespace}/w-{index}"] = "0"
        self.cluster.kubectl(
            "create", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
        )

    def start(self) -> None:
        self._started = time.monotonic()
        for index, namespace in enumerate(self.namespaces):
            thread = threading.Thread(target=self._write, args=(namespace, random.Random(index)), daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> LoadRecord:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        self.record.seconds = time.monotonic() - self._started
        return self.record

    def _write(self, namespace: str, rng: random.Random) -> None:
        client = ApiClient(self.cluster)
        interval = len(self.namespaces) / self.rate
        live = [f"w-{index}" for index in range(self.seed_objects)]
        counter = 0
        next_at = time.monotonic()
        base = f"/api/v1/namespaces/{namespace}/configmaps"
        try:
            while not self._stop.is_set():
                counter += 1
                choice = rng.random()
                if choice < 0.2 or len(live) < 3:
                    name = f"new-{counter}"
                    code, _ = client.request("POST", base, _load_configmap(namespace, name, str(counter)))
                    if code == 201:
                        live.append(name)
                        self._done(namespace, name, str(counter), created=True)
                elif choice < 0.35:
                    name = live.pop(rng.randrange(len(live)))
                    code, _ = client.request("DELETE", f"{base}/{name}")
                    if code in (200, 202):
                        self._done(namespace, name, None)
                else:
                    name = rng.choice(live)
                    code, _ = client.request("PATCH", f"{base}/{name}", {"data": {"value": str(counter)}})
                    if code == 200:
                        self._done(namespace, name, str(counter))
                if code >= 300:
                    with self._lock:
                        self.record.errors.append(f"{namespace}/{name}: HTTP {code}")
                next_at += interval
                self._stop.wait(max(0.0, next_at - time.monotonic()))
        finally:
            client.close()

    def _done(self, namespace: str, name: str, value: str | None, *, created: bool = False) -> None:
        key = f"{namespace}/{name}"
        with self._lock:
            self.record.operations += 1
            if value is None:
                self.record.last_value.pop(key, None)
                self.record.deleted.add(key)
            else:
                self.record.last_value[key] = value
                if created:
                    self.record.created.add(key)


def _load_configmap(namespace: str, name: str, value: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": {"fault-suite": "load"}},
        "data": {"value": value},
    }


# --- the world: a seeded cluster and the operator ---------------------------------------


@dataclass
class FaultWorld:
    cluster: DevCluster
    directory: Path
    etcd: EtcdInspector
    log: Path
    operator: OperatorProcess | None = None
    runs: int = 0

    def start_operator(self, *, etcd: bool = True) -> OperatorProcess:
        self.stop_operator()
        self.operator = OperatorProcess(self.cluster, self.log, etcd=etcd).start()
        return self.operator

    def stop_operator(self) -> None:
        if self.operator is not None:
            self.operator.stop()
            self.operator = None

    def make_all_stale(self) -> str:
        """A new primary KEK, applied at once: every stored object is now under an old key."""
        return self.cluster.rotate_kek(restart=True)

    def apply(self, name: str, spec: dict[str, Any]) -> None:
        apply_migration(self.cluster, name, spec)

    def status(self, name: str) -> dict[str, Any]:
        return dict(migration(self.cluster, name).get("status") or {})

    def finished(self, name: str, timeout: float = 600) -> dict[str, Any]:
        return self.wait_until(name, is_terminal, timeout=timeout)

    def wait_until(self, name: str, condition: Any, timeout: float = 300) -> dict[str, Any]:
        """The status once ``condition(migration)`` holds; fails at once if the operator died."""
        deadline = time.monotonic() + timeout
        while True:
            current = migration(self.cluster, name)
            if condition(current):
                return dict(current.get("status") or {})
            process = self.operator.process if self.operator else None
            if process is not None and process.poll() is not None:
                raise AssertionError(f"the operator exited ({process.returncode}):\n{self.log_tail()}")
            if time.monotonic() > deadline:
                status = json.dumps(current.get("status"), indent=1)[:3000]
                raise AssertionError(f"{name} did not get there in {timeout}s: {status}\n{self.log_tail()}")
            time.sleep(0.3)

    def log_tail(self, characters: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-characters:] if self.log.exists() else ""


def migration_spec(mode: str, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "mode": mode,
        "resources": {"include": list(SELECTION)},
        "qps": 200,
        "concurrency": 8,
        "pageSize": 50,
    }
    spec.update(extra)
    return spec


@contextmanager
def fault_world(
    directory: Path, *, objects: int, namespaces: int = 10, **up_options: Any
) -> Iterator[FaultWorld]:
    """A KMS v2 dev cluster (``DevCluster.up`` options) seeded with ``objects`` objects, the CRD
    installed, no operator yet."""
    cluster = DevCluster(directory / "cluster")
    cluster.up("kms", **up_options)
    world = FaultWorld(cluster, directory, EtcdInspector(cluster), directory / "operator.log")
    try:
        seed(cluster, objects, namespaces, progress=False)
        install_crd(cluster)
        yield world
    finally:
        world.stop_operator()
        cluster.down()


def phase_of(document: dict[str, Any]) -> str:
    return str((document.get("status") or {}).get("phase") or "")


def is_terminal(document: dict[str, Any]) -> bool:
    return phase_of(document) in TERMINAL


def done_count(status: dict[str, Any]) -> int:
    """Objects the status says reached an outcome (retries are attempts, not objects)."""
    totals = status.get("totals") or {}
    return sum(int(totals.get(k, 0)) for k in ("rewritten", "unchanged", "conflicts", "gone", "failed"))


def stale_summary(stale: dict[str, str], limit: int = 5) -> str:
    examples = ", ".join(f"{k} ({v})" for k, v in sorted(stale.items())[:limit])
    return f"{len(stale)} stale in etcd, e.g. {examples}"


def assert_migrated(
    world: FaultWorld, status: dict[str, Any], before: dict[str, str], keys_before: int
) -> None:
    """The four end checks: phase and message; nothing stale in etcd; content unchanged; counts.

    ``keys_before`` is how many objects of the selected types etcd held when the migration
    started; every one was stale then, so every one must be counted exactly once.
    """
    message = status.get("message", "")
    assert status.get("phase") == "Succeeded", f"phase {status.get('phase')}: {message}\n{world.log_tail()}"
    assert (status.get("verification") or {}).get("result") == "Verified", status.get("verification")
    stale = world.etcd.stale()
    assert not stale, stale_summary(stale)
    assert not changed(before, content_hashes(world.cluster)), "content changed"
    totals = status["totals"]
    assert totals["failed"] == 0, status.get("failures")
    assert done_count(status) == keys_before, (
        f"status counts {totals} add up to {done_count(status)}, etcd held {keys_before} objects"
    )


@contextmanager
def etcd_stopped(cluster: DevCluster) -> Iterator[None]:
    """etcd stopped, then started again on the same port and data: every client of it, the
    apiserver and the operator's reader, sees its connections refused meanwhile."""
    cluster.stop_etcd()
    try:
        yield
    finally:
        cluster.start_etcd()


def wait_apiserver_ready(cluster: DevCluster, timeout: float = 180) -> float:
    """Seconds until the apiserver answers /readyz again."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if cluster.kubectl("get", "--raw", "/readyz", check=False).strip() == "ok":
                return time.monotonic() - started
        except subprocess.SubprocessError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"the apiserver was not ready {timeout}s after the fault")


def create_configmaps(cluster: DevCluster, namespace: str, names: Iterable[str]) -> None:
    items: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}]
    items += [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace},
            "data": {"value": name},
        }
        for name in names
    ]
    cluster.kubectl(
        "create", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    )


def fault_point(objects: int) -> int:
    """How many objects are done when a mid-migration fault strikes. After an outage the
    operator's rate creeps back up from its floor for a minute or more (issue 10, item 11),
    so in CI the fault comes late, leaving less to do at that rate; at full size, early."""
    return objects // 4 if FULL_SCALE else objects * 3 // 4


def migrate_through_etcd_outage(world: FaultWorld, mode: str, *, seconds: float) -> None:
    """A migration with etcd stopped for ``seconds`` at its ``fault_point``: it must end
    Succeeded with the four end checks holding."""
    world.make_all_stale()
    before = content_hashes(world.cluster)
    keys_before = len(world.etcd.values())
    world.start_operator()
    name = f"etcd-{int(seconds)}s-{mode.lower()}"
    world.apply(name, migration_spec(mode, qps=scaled(60, 200), pageSize=scaled(25, 100)))
    at_fault = world.wait_until(
        name, lambda m: done_count(m.get("status") or {}) >= fault_point(keys_before), timeout=300
    )
    assert at_fault["phase"] == "Migrating", at_fault.get("message")
    fault_at = time.monotonic()
    with etcd_stopped(world.cluster):
        time.sleep(seconds)
    ready_after = wait_apiserver_ready(world.cluster)
    status = world.finished(name, timeout=scaled(600, 3600))
    print(
        f"{mode}: {keys_before} objects, etcd away {seconds}s at {done_count(at_fault)} done; apiserver "
        f"ready {ready_after:.1f}s after; finished {time.monotonic() - fault_at:.1f}s after the fault; "
        f"totals {status['totals']}; message {status.get('message')!r}"
    )
    assert_migrated(world, status, before, keys_before)
    world.stop_operator()


# --- kills ---------------------------------------------------------------------------

TARGET_PHASES = ("Discovering", "Scanning", "Migrating", "Verifying", "Migrating")
PHASE_ORDER = ("Pending", "Discovering", "Scanning", "Migrating", "Verifying", "Succeeded", "Failed")


def kill_repeatedly(world: FaultWorld, name: str, rng: random.Random, kills: int) -> list[str]:
    """Kill the operator ``kills`` times, each in the next target phase; return where each landed."""
    landed: list[str] = []
    for index in range(kills):
        target = TARGET_PHASES[index % len(TARGET_PHASES)]
        deadline = time.monotonic() + 60
        phase = ""
        while time.monotonic() < deadline:
            phase = phase_of(migration(world.cluster, name))
            # A phase already past (they are short at small sizes) is not waited for.
            if phase in PHASE_ORDER and PHASE_ORDER.index(phase) >= PHASE_ORDER.index(target):
                break
            time.sleep(0.05)
        if phase in ("Succeeded", "Failed"):
            break
        # Short phases are hit at once; a walk at a random point of it.
        time.sleep(rng.uniform(0, 1.5) if target == "Migrating" else rng.uniform(0, 0.1))
        phase = phase_of(migration(world.cluster, name))
        assert world.operator is not None
        world.operator.kill_9()
        landed.append(phase or "(before the first status)")
        world.start_operator()
    return landed


def migrate_through_kills(world: FaultWorld, mode: str, *, kills: int, seed: int) -> None:
    """A migration whose operator is SIGKILLed ``kills`` times: the four end checks must hold."""
    rng = random.Random(f"{seed}-{mode}")
    world.make_all_stale()
    before = content_hashes(world.cluster)
    keys_before = len(world.etcd.values())
    assert len(world.etcd.stale()) == keys_before, "the rotation left every object stale"
    world.start_operator()
    name = f"kills-{mode.lower()}"
    # A modest rate so a 900-object run lasts long enough for the kills to land mid-walk.
    world.apply(name, migration_spec(mode, qps=scaled(60, 200), pageSize=scaled(25, 100)))
    started = time.monotonic()
    landed = kill_repeatedly(world, name, rng, kills)
    status = world.finished(name, timeout=scaled(300, 3600))
    elapsed = time.monotonic() - started
    print(
        f"{mode}: {keys_before} objects, kills in {landed}, {elapsed:.1f}s, "
        f"totals {status['totals']} (seed {seed})"
    )
    assert len(landed) >= min(2, kills), (
        f"the migration finished before the kills (landed {landed}, seed {seed})"
    )
    assert_migrated(world, status, before, keys_before)
    world.stop_operator()


# --- secret markers --------------------------------------------------------------------


def _marker(what: str) -> str:
    return f"ksm-leak-{what}-{secrets.token_hex(12)}"


def needles(marker: str) -> list[str]:
    """The marker, and its base64 at each of the three byte alignments (without the edge
    characters, which depend on the bytes around it)."""
    raw = marker.encode()
    found = [marker]
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw).decode()
        found.append(encoded[4 if shift else 0 : -4])
    return found


def _secret(namespace: str, name: str, **fields: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        **fields,
    }


def _configmap(namespace: str, name: str, value: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"token": value},
    }


def plant_markers(cluster: DevCluster, namespace: str) -> dict[str, str]:
    """Secrets and ConfigMaps holding fresh marker values, some made with ``kubectl apply`` (which
    copies the manifest, data included, into the last-applied-configuration annotation that
    metadata-only lists carry); returns the markers by how they were planted."""
    markers = {
        what: _marker(what)
        for what in (
            "applied-stringdata",
            "applied-data",
            "created-secret",
            "applied-configmap",
            "created-configmap",
        )
    }
    cluster.kubectl("create", "namespace", namespace)
    applied = [
        _secret(namespace, "applied-stringdata", stringData={"password": markers["applied-stringdata"]}),
        _secret(
            namespace,
            "applied-data",
            data={"password": base64.b64encode(markers["applied-data"].encode()).decode()},
        ),
        _configmap(namespace, "applied-configmap", markers["applied-configmap"]),
    ]
    for item in applied:
        cluster.kubectl("apply", "-f", "-", input=json.dumps(item))
    created = [
        _secret(namespace, "created-secret", stringData={"password": markers["created-secret"]}),
        _configmap(namespace, "created-configmap", markers["created-configmap"]),
    ]
    for item in created:
        cluster.kubectl("create", "-f", "-", input=json.dumps(item))
    return markers


# --- undecodable values ----------------------------------------------------------------

# Three undecodable values among ConfigMaps and Secrets (issue 10, item 8).
GARBAGE_SELECTION = ["core/configmaps", "core/secrets"]
GARBAGE_PREFIXES = ["/registry/configmaps/", "/registry/secrets/"]
GARBAGE_KEYS = (
    "/registry/configmaps/legacy-000/garbage-0",
    "/registry/configmaps/legacy-001/garbage-1",
    "/registry/secrets/legacy-002/garbage-2",
)


def make_stale_then_plant_garbage(world: FaultWorld) -> None:
    """A KEK rotation, then the garbage. Not the other way round: an apiserver restarted with
    undecodable values in etcd never turns ready (its watch cache of the resource cannot
    initialise: /readyz fails informer-sync), so it must not restart while they are there."""
    for key in GARBAGE_KEYS:
        world.etcd.delete(key)
    world.make_all_stale()
    for key in GARBAGE_KEYS:
        # Not a known prefix: neither plaintext (k8s\0, {, CBOR) nor k8s:enc:.
        world.etcd.put(key, b"\x07garbage" + secrets.token_bytes(24))


def migrate_past_garbage(world: FaultWorld, mode: str) -> None:
    """A migration of ConfigMaps and Secrets with garbage under three of their keys: each bad
    object named, every other object migrated."""
    make_stale_then_plant_garbage(world)
    stored = world.etcd.values(GARBAGE_PREFIXES)
    assert all(stored[key].form == UNKNOWN for key in GARBAGE_KEYS)
    world.start_operator()
    name = f"bad-object-{mode.lower()}"
    world.apply(name, migration_spec(mode, resources={"include": GARBAGE_SELECTION}))
    status = world.wait_until(name, is_terminal, timeout=300)
    world.stop_operator()
    print(f"{mode}: phase {status['phase']}: {status.get('message')!r}; totals {status['totals']}")
    print(json.dumps({"failures": status.get("failures"), "verification": status.get("verification")})[:2000])

    # Everything but the bad objects migrated.
    stale = world.etcd.stale(GARBAGE_PREFIXES)
    assert set(stale) == set(GARBAGE_KEYS), sorted(set(stale) - set(GARBAGE_KEYS))[:5]
    totals = status["totals"]
    migrated = totals["rewritten"] + totals["unchanged"] + totals["conflicts"]
    assert migrated == len(stored) - len(GARBAGE_KEYS), totals
    # The end names every bad object: it is not Succeeded, and the message says which keys.
    assert status["phase"] == "Failed"
    text = json.dumps(status)
    for key in GARBAGE_KEYS:
        assert key.rsplit("/", 1)[1] in text, f"{key} is not named in the status"
