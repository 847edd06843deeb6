"""A mutating webhook that changes ConfigMaps on every UPDATE, in the way of a Full migration.

A migration write is a no-op patch, but admission runs on it: a mutating webhook could turn it
into a real change of the object. The promise is that a migration never changes stored
content: the objects' content hash (without resourceVersion, managedFields, status) must be
the same after the migration as before.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fault_tools import (
    AdmissionWebhook,
    FaultWorld,
    Verdict,
    changed,
    content_hashes,
    create_configmaps,
    fault_world,
    is_terminal,
    migration_spec,
    webhook_configuration,
)

pytestmark = pytest.mark.integration

MUTATED = "mutated"
NAMES = [f"cm-{index}" for index in range(10)]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultWorld]:
    with fault_world(tmp_path_factory.mktemp("faults-mutating"), objects=100) as world:
        create_configmaps(world.cluster, MUTATED, NAMES)
        yield world


def _stamp(request: dict[str, Any]) -> Verdict:
    labels = request["object"]["metadata"].get("labels")
    patch: list[dict[str, Any]] = (
        [{"op": "add", "path": "/metadata/labels/stamped-by-webhook", "value": "yes"}]
        if labels
        else [{"op": "add", "path": "/metadata/labels", "value": {"stamped-by-webhook": "yes"}}]
    )
    return Verdict(patch=patch)


def test_a_mutating_webhook_never_changes_content_through_a_migration_write(world: FaultWorld) -> None:
    cluster = world.cluster
    with AdmissionWebhook(world.directory / "mutating-webhook", _stamp) as webhook:
        configuration = webhook_configuration(
            "MutatingWebhookConfiguration",
            "stamp",
            MUTATED,
            f"https://127.0.0.1:{webhook.port}/mutate",
            webhook.ca_pem,
        )
        cluster.kubectl("apply", "-f", "-", input=json.dumps(configuration))
        world.make_all_stale()
        before = content_hashes(cluster, namespace_prefix=MUTATED)
        world.start_operator()
        world.apply("mutating", migration_spec("Full", resources={"include": ["core/configmaps"]}))
        status = world.wait_until("mutating", is_terminal, timeout=300)
        calls = sum(webhook.calls.values())
    cluster.kubectl("delete", "mutatingwebhookconfiguration", "stamp")
    world.stop_operator()
    after = content_hashes(cluster, namespace_prefix=MUTATED)
    print(
        f"webhook calls {calls}; phase {status['phase']}: {status.get('message')}; totals {status['totals']}"
    )
    assert calls >= len(NAMES), "the webhook saw the migration's writes"
    altered = changed(before, after)
    assert not altered, f"{len(altered)} objects changed by the migration's writes, e.g. {altered[:3]}"
