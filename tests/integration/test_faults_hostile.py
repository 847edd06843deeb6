"""Hostile input (issue 10, item 9), on one KMS v2 dev cluster with the operator as a process.

- Generated StorageMigration specs through the real apiserver's admission (server dry run):
  whatever it admits, the engine parses; whatever it refuses, the refusal names a field.
- Names at their length limits, dots, dashes, digits only, a 1 MiB ConfigMap (its limit) and a
  1.4 MiB custom resource: a
  Targeted and a Full migration rewrite them, etcdctl finds them under the plugin's primary
  key, their content is unchanged.
- A CRD deleted while its resource is being migrated: the migration ends, and says so.
- ConfigMaps stored under an aescbc key the apiserver's configuration no longer has: the
  apiserver answers 500; each is reported as undecryptable, naming the key from etcd.

The garbage-bytes case of item 9 is in test_faults_bad_object_*.py.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from fault_tools import (
    FaultWorld,
    content_digest,
    done_count,
    fault_world,
    is_terminal,
    migration_spec,
    phase_of,
)
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kms_storage_migrator.devcluster.seed import crd_manifest
from kms_storage_migrator.migration.plan import MigrationSpec

pytestmark = pytest.mark.integration

LONGEST_PATTERN = "a" * 125 + "/" + "b" * 127  # 253 characters, the CRD's maxLength
MAX_PATTERNS = 100  # the CRD's maxItems


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultWorld]:
    with fault_world(tmp_path_factory.mktemp("faults-hostile"), objects=30, namespaces=1) as world:
        yield world


# --- 1. specs through admission and the engine ------------------------------------------------

name_part = st.from_regex(r"\A(\*|[a-z0-9*]([-a-z0-9.*]{0,12}[a-z0-9*])?)\Z", fullmatch=True)
valid_patterns = st.builds(lambda g, r: f"{g}/{r}", name_part, name_part)
valid_lists = st.lists(valid_patterns, max_size=4) | st.lists(
    st.just(LONGEST_PATTERN), min_size=MAX_PATTERNS - 1, max_size=MAX_PATTERNS
)
invalid_lists = st.lists(valid_patterns | st.text(max_size=12), min_size=1, max_size=4) | st.lists(
    st.just(LONGEST_PATTERN), min_size=MAX_PATTERNS + 1, max_size=MAX_PATTERNS + 1
)
wrong_types = st.none() | st.booleans() | st.text(max_size=8) | st.lists(st.integers(), max_size=2)


def mostly(valid: st.SearchStrategy[Any], invalid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Valid values five times in six, so admitted specs are common enough to check the engine."""
    return st.sampled_from([True] * 5 + [False]).flatmap(lambda ok: valid if ok else invalid)


field_values = {
    "mode": mostly(
        st.sampled_from(["Auto", "Full", "Targeted", "VerifyOnly"]),
        st.sampled_from(["", "full"]) | wrong_types,
    ),
    "concurrency": mostly(
        st.integers(1, 256), st.integers(-1, 0) | st.integers(257, 300) | st.floats(0, 300) | wrong_types
    ),
    "qps": mostly(st.integers(1, 10_000), st.sampled_from([0, 10_001]) | wrong_types),
    "pageSize": mostly(st.integers(1, 5_000), st.sampled_from([0, 5_001]) | wrong_types),
    "maxAttemptsPerObject": mostly(st.integers(1, 100), st.sampled_from([0, 101]) | wrong_types),
    "keyConvergenceTimeout": mostly(
        st.sampled_from(["10s", "90s", "1h30m", "24h", "23h59m59s"]),
        st.sampled_from(["9s", "25h", "m", "1d", ""]) | wrong_types,
    ),
    "resources": mostly(
        st.fixed_dictionaries({}, optional={"include": valid_lists, "exclude": valid_lists}),
        st.fixed_dictionaries({"include": invalid_lists}) | wrong_types,
    ),
    "suspend": mostly(st.booleans(), wrong_types),
    "preflight": mostly(st.sampled_from(["Warn", "Enforce"]), st.sampled_from(["warn", ""]) | wrong_types),
    "mutatingWebhooks": mostly(
        st.sampled_from(["Refuse", "Allow"]), st.sampled_from(["allow", "Skip"]) | wrong_types
    ),
}
specs = st.fixed_dictionaries({}, optional=field_values)


def dry_run(world: FaultWorld, spec: Any) -> tuple[dict[str, Any] | None, str]:
    """What the apiserver would store for this spec (defaults applied), or its refusal."""
    document = {
        "apiVersion": "kms-storage-migrator.io/v1alpha1",
        "kind": "StorageMigration",
        "metadata": {"name": "fuzzed"},
        "spec": spec,
    }
    completed = subprocess.run(
        [
            str(world.cluster.binary("kubectl")),
            "--kubeconfig",
            str(world.cluster.kubeconfig),
            "create",
            "--dry-run=server",
            "-o",
            "json",
            "-f",
            "-",
        ],
        input=json.dumps(document),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if completed.returncode == 0:
        return json.loads(completed.stdout), ""
    return None, completed.stderr


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(spec=specs)
@example(spec={"resources": {"include": [LONGEST_PATTERN] * MAX_PATTERNS}})
@example(spec={"resources": {"exclude": [LONGEST_PATTERN] * (MAX_PATTERNS + 1)}})
@example(spec={"resources": {"include": ["a" + "*a" * 125 + "/*"]}})
@example(spec={"mode": "Full", "unknownField": 1})
def test_fuzzed_specs_admission_and_engine_agree(world: FaultWorld, spec: dict[str, Any]) -> None:
    stored, refusal = dry_run(world, spec)
    print(f"admission {'accepted' if stored else 'refused'}: {json.dumps(spec)[:120]}")
    if stored is None:
        # A refusal names the field: spec.<field>, or the unknown field's own path.
        named = [f"spec.{name}" for name in spec]
        assert any(name in refusal for name in named), f"{spec!r}: {refusal[-600:]}"
        return
    # What admission stores, the engine runs: it must parse (defaults included).
    parsed = MigrationSpec.from_spec(stored["spec"])
    include = (stored["spec"].get("resources") or {}).get("include") or ["*/*"]
    assert [str(p) for p in parsed.selection.include] == include
    # The two policies default at admission (a null counts as unset), and the engine reads
    # what was stored.
    assert stored["spec"]["preflight"] == (spec.get("preflight") or "Warn") == parsed.preflight.value
    assert stored["spec"]["mutatingWebhooks"] == (spec.get("mutatingWebhooks") or "Refuse")
    assert parsed.mutating_webhooks.value == stored["spec"]["mutatingWebhooks"]


# --- 2. unusual names and objects near the size limit ---------------------------------------

DIGITS_NAMESPACE = "0123456789"
LONG_NAMESPACE = ("n-" + "0123456789" * 7)[:63]
LONGEST_NAME = ".".join(["x" * 63, "y" * 63, "z-z" + "9" * 60, "1" * 61])  # 253 characters
# A ConfigMap holds at most 1 MiB of data (the apiserver's own limit); a custom resource can
# come nearer etcd's 1.5 MiB request limit.
BIG_CONFIGMAP_BYTES = 1024 * 1024 - 4096
BIG_GADGET_BYTES = 1_400 * 1024
SEED_GROUP = "demo.kms-storage-migrator.io"


def _random_text(size: int) -> str:
    return base64.b64encode(secrets.token_bytes(size * 3 // 4 + 3)).decode()[:size]


def _unusual_objects() -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": DIGITS_NAMESPACE}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": LONG_NAMESPACE}},
    ]
    for namespace in (DIGITS_NAMESPACE, LONG_NAMESPACE):
        for name in (LONGEST_NAME, "0", "12345", "a.b-c.d", "a--b", "x" * 63):
            items.append(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": name, "namespace": namespace},
                    "data": {"value": name[:20]},
                }
            )
        items.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": LONGEST_NAME, "namespace": namespace},
                "stringData": {"token": secrets.token_hex(8)},
            }
        )
    items.append(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "big-1mib", "namespace": DIGITS_NAMESPACE},
            "data": {"blob": _random_text(BIG_CONFIGMAP_BYTES)},
        }
    )
    items.append(
        {
            "apiVersion": f"{SEED_GROUP}/v1",
            "kind": "Gadget",
            "metadata": {"name": "big-1.4mib", "namespace": LONG_NAMESPACE},
            "spec": {"blob": _random_text(BIG_GADGET_BYTES)},
        }
    )
    return items


UNUSUAL_PREFIXES = [
    f"/registry/{resource}/{namespace}/"
    for resource in ("configmaps", "secrets", f"{SEED_GROUP}/gadgets")
    for namespace in (DIGITS_NAMESPACE, LONG_NAMESPACE)
]
UNUSUAL_SELECTION = ["core/configmaps", "core/secrets", f"{SEED_GROUP}/gadgets"]


def _unusual_hashes(world: FaultWorld) -> dict[str, str]:
    hashes = {}
    for namespace in (DIGITS_NAMESPACE, LONG_NAMESPACE):
        listing = json.loads(
            world.cluster.kubectl(
                "get", f"configmaps,secrets,gadgets.{SEED_GROUP}", "-n", namespace, "-o", "json"
            )
        )
        for item in listing["items"]:
            if item["metadata"]["name"] != "kube-root-ca.crt":
                hashes[f"{item['kind']}/{namespace}/{item['metadata']['name']}"] = content_digest(item)
    return hashes


@pytest.mark.parametrize("mode", ["Targeted", "Full"])
def test_unusual_names_and_a_big_object_are_rewritten(world: FaultWorld, mode: str) -> None:
    if not world.cluster.kubectl("get", "namespace", DIGITS_NAMESPACE, "--ignore-not-found", "-o", "name"):
        world.cluster.kubectl(
            "create",
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": _unusual_objects()}),
        )
    world.make_all_stale()
    before = _unusual_hashes(world)
    stored = world.etcd.values(UNUSUAL_PREFIXES)
    assert f"/registry/configmaps/{DIGITS_NAMESPACE}/{LONGEST_NAME}" in stored
    assert f"/registry/secrets/{LONG_NAMESPACE}/{LONGEST_NAME}" in stored
    assert f"/registry/{SEED_GROUP}/gadgets/{LONG_NAMESPACE}/big-1.4mib" in stored
    assert len(world.etcd.stale(UNUSUAL_PREFIXES)) == len(stored), "the rotation left them all stale"
    world.start_operator()
    name = f"unusual-{mode.lower()}"
    started = time.monotonic()
    world.apply(name, migration_spec(mode, resources={"include": UNUSUAL_SELECTION}))
    status = world.wait_until(name, is_terminal, timeout=300)
    world.stop_operator()
    print(
        f"{mode}: {len(stored)} unusual objects (names of 253/63 characters, digits only, a 1 MiB "
        f"ConfigMap, a 1.4 MiB custom resource) in {time.monotonic() - started:.1f}s; "
        f"totals {status['totals']}"
    )
    assert status["phase"] == "Succeeded", status.get("message")
    assert status["totals"]["failed"] == 0, status.get("failures")
    stale = world.etcd.stale(UNUSUAL_PREFIXES)
    assert not stale, stale
    assert set(world.etcd.values(UNUSUAL_PREFIXES)) == set(stored)
    assert _unusual_hashes(world) == before, "content changed"


# --- 3. a CRD deleted mid-migration ----------------------------------------------------------

DOOMED_GROUP = "hostile.kms-storage-migrator.io"
DOOMED_CRD = f"widgets.{DOOMED_GROUP}"
DOOMED_NAMESPACE = "doomed"
DOOMED_OBJECTS = 300


def test_a_crd_deleted_while_its_resource_is_migrated_ends_the_migration_clearly(world: FaultWorld) -> None:
    world.cluster.kubectl(
        "apply", "-f", "-", input=json.dumps(crd_manifest(DOOMED_GROUP, "widgets", "Widget", "Namespaced"))
    )
    world.cluster.wait_established(DOOMED_CRD, timeout=30)
    items: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": DOOMED_NAMESPACE}}
    ]
    items += [
        {
            "apiVersion": f"{DOOMED_GROUP}/v1",
            "kind": "Widget",
            "metadata": {"name": f"w-{index:04d}", "namespace": DOOMED_NAMESPACE},
            "spec": {"index": index},
        }
        for index in range(DOOMED_OBJECTS)
    ]
    world.cluster.kubectl(
        "create", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    )
    world.start_operator()
    name = "crd-deleted"
    # Slow on purpose (Full rewrites every object): the deletion lands mid-walk.
    world.apply(
        name, migration_spec("Full", resources={"include": [f"{DOOMED_GROUP}/*"]}, qps=20, pageSize=10)
    )
    at_delete = world.wait_until(
        name, lambda m: phase_of(m) == "Migrating" and done_count(m.get("status") or {}) >= 30, timeout=300
    )
    assert done_count(at_delete) < DOOMED_OBJECTS, "the walk finished before the CRD was deleted"
    world.cluster.kubectl("delete", "crd", DOOMED_CRD, "--wait=true", "--timeout=120s")
    status = world.wait_until(name, is_terminal, timeout=300)
    world.stop_operator()
    resource = next(r for r in status["resources"] if r["name"] == f"{DOOMED_GROUP}/widgets")
    print(
        f"CRD deleted at {done_count(at_delete)} of {DOOMED_OBJECTS} done: phase {status['phase']}, "
        f"message {status.get('message')!r}; resource {json.dumps(resource)[:600]}"
    )
    # Finished, not stuck: the resource is reported as no longer served (a list answered 404)
    # or its objects as gone (writes answered 404 while the CRD's objects were being deleted).
    assert status["phase"] == "Succeeded", status.get("message")
    assert resource["phase"] == "Done", resource
    assert resource.get("message") == "no longer served" or resource["gone"] > 0, resource
    assert resource["failed"] == 0, resource
    assert resource["rewritten"] + resource["unchanged"] + resource["gone"] < DOOMED_OBJECTS, resource


# --- 4. objects under a provider no longer configured ---------------------------------------

ORPHAN_NAMESPACE = "orphaned"
ORPHANS = 3
RETIRED_KEY = "retired-key"


def _raw_value(world: FaultWorld, key: str) -> bytes:
    reply = json.loads(world.etcd._etcdctl("get", key, "-w", "json"))
    return base64.b64decode(reply["kvs"][0]["value"])


def _with_retired_key(configuration: str) -> str:
    """ConfigMaps written with an aescbc key first (identity to read the rest), all else as is."""
    document = yaml.safe_load(configuration)
    secret = base64.b64encode(secrets.token_bytes(32)).decode()
    aescbc = {"aescbc": {"keys": [{"name": RETIRED_KEY, "secret": secret}]}}
    document["resources"].insert(0, {"resources": ["configmaps"], "providers": [aescbc, {"identity": {}}]})
    return yaml.safe_dump(document, sort_keys=False)


def test_objects_under_a_removed_provider_are_reported_undecryptable_naming_the_key(
    world: FaultWorld,
) -> None:
    cluster = world.cluster
    config_path = cluster.encryption_config
    configured = config_path.read_text()
    keys = [f"/registry/configmaps/{ORPHAN_NAMESPACE}/orphan-{index}" for index in range(ORPHANS)]
    # Write the ConfigMaps under the aescbc key, keep their stored bytes, and take them out of
    # etcd while the apiserver restarts without that key: it does not turn ready with values
    # it cannot decode in a resource it watches. Then the same bytes go back under their keys.
    config_path.write_text(_with_retired_key(configured))
    try:
        cluster.restart_apiserver()
        cluster.kubectl("create", "namespace", ORPHAN_NAMESPACE)
        for index in range(ORPHANS):
            cluster.kubectl(
                "create", "configmap", f"orphan-{index}", "-n", ORPHAN_NAMESPACE, "--from-literal=v=x"
            )
        values = {key: _raw_value(world, key) for key in keys}
        assert all(v.startswith(f"k8s:enc:aescbc:v1:{RETIRED_KEY}:".encode()) for v in values.values())
        for key in keys:
            world.etcd.delete(key)
    finally:
        config_path.write_text(configured)
        cluster.restart_apiserver()
    for key, value in values.items():
        world.etcd.put(key, value)
    try:
        refusal = cluster.kubectl("get", "configmap", "orphan-0", "-n", ORPHAN_NAMESPACE, check=False)
        assert refusal == ""  # the apiserver cannot read it back
        world.start_operator()
        name = "orphaned-provider"
        started = time.monotonic()
        world.apply(name, migration_spec("Targeted", resources={"include": ["core/configmaps"]}))
        status = world.wait_until(name, is_terminal, timeout=400)
        world.stop_operator()
        failures = [f for f in status.get("failures") or [] if f.get("namespace") == ORPHAN_NAMESPACE]
        print(
            f"{ORPHANS} ConfigMaps under a removed aescbc key, Targeted: phase {status['phase']} in "
            f"{time.monotonic() - started:.1f}s, totals {status['totals']}; failure: "
            f"{json.dumps(failures[:1])[:700]}; message {status.get('message')!r}"
        )
        assert status["phase"] == "Failed", status.get("message")
        assert sorted(f["name"] for f in failures) == [f"orphan-{index}" for index in range(ORPHANS)]
        for failure in failures:
            assert failure["reason"] == "CannotDecrypt", failure
            assert "cannot decrypt" in failure["message"], failure
            assert f"aescbc key '{RETIRED_KEY}'" in failure["message"], failure
        # Every other ConfigMap is current (etcdctl judges); only the orphans are not.
        stale = world.etcd.stale(["/registry/configmaps/"])
        assert set(stale) == set(keys), sorted(set(stale) ^ set(keys))[:5]
    finally:
        for key in keys:
            world.etcd.delete(key)
