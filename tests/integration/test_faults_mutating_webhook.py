"""A mutating webhook that changes ConfigMaps on every UPDATE, in the way of a Full migration.

A migration write is a no-op patch, but admission runs on it: a mutating webhook could turn it
into a real change of the object. The promise is that a migration never changes stored content
without saying so:

- ``spec.mutatingWebhooks: Refuse`` (the default): the objects the webhook intercepts are not
  written at all. Each is a failure naming the webhook; etcd shows their values and mod
  revisions untouched and their content hashes are the same, while every other ConfigMap is
  rewritten under the new key.
- ``Allow``: they are written, and the webhook's label shows in the write's answer: each is a
  ``MutatedByWebhook`` failure, and exactly the reported objects are the ones whose content
  changed (judged from outside, by the content hashes).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fault_tools import (
    FaultWorld,
    changed,
    content_hashes,
    create_configmaps,
    done_count,
    fault_world,
    is_terminal,
    migration_spec,
)
from webhook_server import AdmissionWebhook, Verdict, webhook_configuration

pytestmark = pytest.mark.integration

MUTATED = "mutated"  # the Refuse case's namespace
STAMPED = "stamped"  # the Allow case's: its objects carry the label afterwards
NAMES = [f"cm-{index}" for index in range(10)]
WEBHOOK = "stamp.faults.kms-storage-migrator.io"
LABEL = "stamped-by-webhook"
CONFIGMAPS = ["/registry/configmaps/"]
MUTATED_KEYS = {f"/registry/configmaps/{MUTATED}/{name}" for name in NAMES}
SELECTION = {"include": ["core/configmaps"]}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultWorld]:
    with fault_world(tmp_path_factory.mktemp("faults-mutating"), objects=100) as world:
        create_configmaps(world.cluster, MUTATED, NAMES)
        create_configmaps(world.cluster, STAMPED, NAMES)
        yield world


def _stamp(request: dict[str, Any]) -> Verdict:
    labels = request["object"]["metadata"].get("labels")
    patch: list[dict[str, Any]] = (
        [{"op": "add", "path": f"/metadata/labels/{LABEL}", "value": "yes"}]
        if labels
        else [{"op": "add", "path": "/metadata/labels", "value": {LABEL: "yes"}}]
    )
    return Verdict(patch=patch)


@contextmanager
def _stamping_webhook(world: FaultWorld, name: str, namespace: str) -> Iterator[AdmissionWebhook]:
    """The webhook, serving and configured for UPDATEs of ConfigMaps in one namespace, then removed."""
    with AdmissionWebhook(world.directory / name, _stamp) as webhook:
        configuration = webhook_configuration(
            "MutatingWebhookConfiguration",
            "stamp",
            namespace,
            f"https://127.0.0.1:{webhook.port}/mutate",
            webhook.ca_pem,
        )
        world.cluster.kubectl("apply", "-f", "-", input=json.dumps(configuration))
        try:
            yield webhook
        finally:
            world.cluster.kubectl("delete", "mutatingwebhookconfiguration", "stamp")


def _summary(status: dict[str, Any]) -> str:
    return f"phase {status['phase']}: {status.get('message')}; totals {status['totals']}"


def test_refuse_writes_nothing_a_mutating_webhook_intercepts_and_migrates_the_rest(world: FaultWorld) -> None:
    cluster = world.cluster
    with _stamping_webhook(world, "refuse-webhook", MUTATED) as webhook:
        world.make_all_stale()
        before = content_hashes(cluster, kinds="configmaps", namespace_prefix="")
        stored_before = world.etcd.values(CONFIGMAPS)
        world.start_operator()
        world.apply("mutating-refuse", migration_spec("Full", resources=SELECTION))
        status = world.wait_until("mutating-refuse", is_terminal, timeout=300)
        calls = dict(webhook.calls)
    world.stop_operator()
    print(f"{len(stored_before)} ConfigMaps; webhook calls {calls}; {_summary(status)}")

    # Reported: each of the webhook's objects once, naming the webhook and why.
    failed = {(f["namespace"], f["name"]) for f in status["failures"]}
    assert failed == {(MUTATED, name) for name in NAMES}, status["failures"]
    for failure in status["failures"]:
        assert failure["reason"] == "MutatingWebhook", failure
        assert f"mutating webhook {WEBHOOK} (MutatingWebhookConfiguration stamp)" in failure["message"]
    assert status["totals"]["failed"] == status["failuresTotal"] == len(NAMES)
    assert done_count(status) == len(stored_before), status["totals"]
    assert status["phase"] == "Failed", status.get("message")
    assert status["verification"]["stale"] == len(NAMES), status["verification"]

    # Never written: the webhook was never called, and etcd holds the same values at the same
    # mod revisions; every other ConfigMap is under the new key.
    assert sum(calls.values()) == 0, calls
    stored_after = world.etcd.values(CONFIGMAPS)
    for key in MUTATED_KEYS:
        assert stored_after[key] == stored_before[key], (stored_before[key], stored_after[key])
    stale = world.etcd.stale(CONFIGMAPS)
    assert set(stale) == MUTATED_KEYS, stale
    assert not changed(before, content_hashes(cluster, kinds="configmaps", namespace_prefix=""))
    # The first failures are events too, each with its next step.
    events = json.loads(
        cluster.kubectl("get", "events", "-A", "--field-selector=reason=ObjectNotRewritten", "-o", "json")
    )["items"]
    assert any(WEBHOOK in e["message"] and "what to do: mutating webhook" in e["message"] for e in events), [
        e["message"] for e in events
    ]


def test_allow_writes_them_and_reports_exactly_the_objects_the_webhook_changed(world: FaultWorld) -> None:
    cluster = world.cluster
    with _stamping_webhook(world, "allow-webhook", STAMPED) as webhook:
        world.make_all_stale()
        before = content_hashes(cluster, kinds="configmaps", namespace_prefix="")
        keys_before = len(world.etcd.values(CONFIGMAPS))
        world.start_operator()
        world.apply("mutating-allow", migration_spec("Full", resources=SELECTION, mutatingWebhooks="Allow"))
        status = world.wait_until("mutating-allow", is_terminal, timeout=300)
        calls = dict(webhook.calls)
    world.stop_operator()
    after = content_hashes(cluster, kinds="configmaps", namespace_prefix="")
    print(f"{keys_before} ConfigMaps; webhook calls {calls}; {_summary(status)}")

    # Allow lets the webhook change what it intercepts (once per object: no loop) ...
    assert {name: calls.get(name, 0) for name in NAMES} == dict.fromkeys(NAMES, 1), calls
    altered = changed(before, after)
    assert set(altered) == {f"ConfigMap/{STAMPED}/{name}" for name in NAMES}, altered
    # ... and reports exactly those objects, saying what changed and which webhook may have.
    reported = {(f["namespace"], f["name"]) for f in status["failures"]}
    assert reported == {(STAMPED, name) for name in NAMES}, status["failures"]
    for failure in status["failures"]:
        assert failure["reason"] == "MutatedByWebhook", failure
        assert f"label {LABEL} added" in failure["message"], failure
        assert WEBHOOK in failure["message"], failure
    assert status["totals"]["failed"] == status["failuresTotal"] == len(NAMES)
    assert done_count(status) == keys_before, status["totals"]
    # Written: nothing is left stale, the webhook's objects included.
    assert not world.etcd.stale(CONFIGMAPS)
