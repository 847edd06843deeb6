"""A validating webhook whose server is down (failurePolicy Fail), in the way of a Full migration.

The apiserver cannot call it and refuses every update in its namespace with a 500. Those
objects must fail after the bounded retries (maxAttemptsPerObject), each reported with a
reason that says a webhook could not be called and which one (so the user knows what to fix);
every other object migrates; the run ends Failed with exactly those objects stale.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

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
from operator_harness import free_port
from webhook_server import AdmissionWebhook, Verdict, webhook_configuration

pytestmark = pytest.mark.integration

UNREACHABLE = "unreachable"
NAMES = ["cm-a", "cm-b", "cm-c"]
WEBHOOK = "nobody-home"
SELECTION = ["core/configmaps", "core/secrets"]
PREFIXES = ["/registry/configmaps/", "/registry/secrets/"]
MAX_ATTEMPTS = 2


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultWorld]:
    with fault_world(tmp_path_factory.mktemp("faults-webhook-down"), objects=300) as world:
        create_configmaps(world.cluster, UNREACHABLE, NAMES)
        yield world


def test_objects_behind_a_dead_webhook_fail_named_and_the_rest_migrate(world: FaultWorld) -> None:
    cluster = world.cluster
    # Only for a CA bundle: nothing listens on the port the configuration names.
    with AdmissionWebhook(world.directory / "dead-webhook", lambda request: Verdict()) as webhook:
        ca_pem = webhook.ca_pem
    configuration = webhook_configuration(
        "ValidatingWebhookConfiguration",
        WEBHOOK,
        UNREACHABLE,
        f"https://127.0.0.1:{free_port()}/validate",
        ca_pem,
    )
    cluster.kubectl("apply", "-f", "-", input=json.dumps(configuration))
    world.make_all_stale()
    before = content_hashes(cluster, namespace_prefix="")
    keys_before = len(world.etcd.values(PREFIXES))
    world.start_operator()
    started = time.monotonic()
    world.apply(
        "webhook-down",
        migration_spec("Full", resources={"include": SELECTION}, maxAttemptsPerObject=MAX_ATTEMPTS),
    )
    status = world.wait_until("webhook-down", is_terminal, timeout=300)
    elapsed = time.monotonic() - started
    cluster.kubectl("delete", "validatingwebhookconfiguration", WEBHOOK)
    world.stop_operator()
    print(f"{keys_before} objects, {elapsed:.1f}s; totals {status['totals']}; failures {status['failures']}")

    failed = {(f["namespace"], f["name"]) for f in status["failures"]}
    assert failed == {(UNREACHABLE, name) for name in NAMES}, status["failures"]
    assert status["totals"]["failed"] == status["failuresTotal"] == len(NAMES)
    # Bounded: at most MAX_ATTEMPTS tries each, so at most MAX_ATTEMPTS - 1 retries each.
    assert status["totals"]["retries"] <= len(NAMES) * (MAX_ATTEMPTS - 1), status["totals"]
    assert done_count(status) == keys_before, status["totals"]
    assert status["phase"] == "Failed", status.get("message")
    stale = world.etcd.stale(PREFIXES)
    assert set(stale) == {f"/registry/configmaps/{UNREACHABLE}/{name}" for name in NAMES}, stale
    assert not changed(before, content_hashes(cluster, namespace_prefix="")), "content changed"
    # What to fix: the reason names the webhook that could not be called.
    for failure in status["failures"]:
        assert WEBHOOK in failure["message"], failure
