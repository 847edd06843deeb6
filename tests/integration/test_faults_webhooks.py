"""A validating admission webhook that denies some objects, in the way of a Full migration.

Denied objects are reported with the webhook's name and counted failed, once each (the
webhook sees each object once: no loop); every other object migrates; the migration ends
Failed with exactly those objects stale, which an independent etcd read confirms; the
webhook's own text, which quotes the object, is stored nowhere.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
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

POLICED = "policed"
POLICED_NAMES = [f"cm-{index}" for index in range(20)]
DENIED = {"cm-3", "cm-7", "cm-11", "cm-19"}
SELECTION = ["core/configmaps", "core/secrets"]
PREFIXES = ["/registry/configmaps/", "/registry/secrets/"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultWorld]:
    with fault_world(tmp_path_factory.mktemp("faults-webhooks"), objects=300) as world:
        create_configmaps(world.cluster, POLICED, POLICED_NAMES)
        yield world


def _deny_some(request: dict[str, Any]) -> Verdict:
    if request.get("name") in DENIED:
        # Text that quotes the object, as a real policy engine's might: it must not be stored.
        return Verdict(allowed=False, message=f"value {request['object']['data']} is frozen by policy")
    return Verdict()


def test_denied_objects_are_reported_once_and_the_rest_migrate(world: FaultWorld) -> None:
    cluster = world.cluster
    with AdmissionWebhook(world.directory / "deny-webhook", _deny_some) as webhook:
        configuration = webhook_configuration(
            "ValidatingWebhookConfiguration",
            "deny-some",
            POLICED,
            f"https://127.0.0.1:{webhook.port}/validate",
            webhook.ca_pem,
        )
        cluster.kubectl("apply", "-f", "-", input=json.dumps(configuration))
        world.make_all_stale()
        before = content_hashes(cluster, namespace_prefix="")
        keys_before = len(world.etcd.values(PREFIXES))
        world.start_operator()
        world.apply("webhooks", migration_spec("Full", resources={"include": SELECTION}))
        status = world.wait_until("webhooks", is_terminal, timeout=300)
        calls = dict(webhook.calls)
    cluster.kubectl("delete", "validatingwebhookconfiguration", "deny-some")
    world.stop_operator()
    print(f"{keys_before} objects; totals {status['totals']}; message {status.get('message')!r}")

    failed = {(f["namespace"], f["name"]) for f in status["failures"]}
    assert failed == {(POLICED, name) for name in DENIED}, status["failures"]
    assert status["totals"]["failed"] == status["failuresTotal"] == len(DENIED)
    for failure in status["failures"]:
        assert (
            failure["message"]
            == "HTTP 403: denied by admission webhook deny-some.faults.kms-storage-migrator.io"
        )
    record = json.dumps(status) + cluster.kubectl("get", "events", "-A", "-o", "json")
    assert "frozen by policy" not in record
    # No loop: the migration asked the webhook about each policed object exactly once.
    assert all(calls.get(name, 0) == 1 for name in POLICED_NAMES), calls
    # Every object counted once, and the run ended Failed with exactly the denied ones stale.
    assert done_count(status) == keys_before, status["totals"]
    assert status["phase"] == "Failed", status.get("message")
    assert status["verification"]["stale"] == len(DENIED), status["verification"]
    stale = world.etcd.stale(PREFIXES)
    assert set(stale) == {f"/registry/configmaps/{POLICED}/{name}" for name in DENIED}, stale
    assert not changed(before, content_hashes(cluster, namespace_prefix="")), "content changed"
