"""The operator SIGKILLed at random moments of a Full and of a Targeted migration.

Each kill lands in a phase chosen in turn (Discovering, Scanning, Migrating, Verifying, or
whatever the migration is in when that phase is already past), after a random delay; the
operator is started again at once. The run must still end Succeeded, every object counted
once, nothing stale in etcd, no content changed. KSM_FAULT_SEED replays a run's kill times.
A second test kills the operator while it writes the final status (held by a webhook).
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fault_tools import (
    FaultWorld,
    assert_migrated,
    content_hashes,
    fault_world,
    migrate_through_kills,
    migration_spec,
    scaled,
)
from webhook_server import AdmissionWebhook, Verdict

pytestmark = pytest.mark.integration

OBJECTS = scaled(900, 20_000)
KILLS = scaled(3, 5)
SEED = int(os.environ.get("KSM_FAULT_SEED", str(int(time.time()))))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultWorld]:
    with fault_world(tmp_path_factory.mktemp("faults-kills"), objects=OBJECTS) as world:
        yield world


@pytest.mark.parametrize("mode", ["Full", "Targeted"])
def test_sigkill_at_random_moments_still_migrates_everything_once(world: FaultWorld, mode: str) -> None:
    migrate_through_kills(world, mode, kills=KILLS, seed=SEED)


FINAL_PHASES = ("Succeeded", "Failed")


def _status_gate(url: str, ca_pem: bytes) -> dict[str, Any]:
    """A validating webhook on StorageMigration status writes (the one way to hold the final one)."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "hold-final-status"},
        "webhooks": [
            {
                "name": "hold-final-status.faults.kms-storage-migrator.io",
                "clientConfig": {"url": url, "caBundle": base64.b64encode(ca_pem).decode()},
                "rules": [
                    {
                        "apiGroups": ["kms-storage-migrator.io"],
                        "apiVersions": ["*"],
                        "operations": ["UPDATE"],
                        "resources": ["storagemigrations/status"],
                        "scope": "Cluster",
                    }
                ],
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Fail",
                "timeoutSeconds": 5,
            }
        ],
    }


def test_sigkill_while_the_final_status_is_written_still_ends_once_with_every_object_counted(
    world: FaultWorld,
) -> None:
    """The final status write is held (a webhook denies any status that says Succeeded or Failed),
    the operator is killed while it tries, the webhook is removed: a new operator must redo only
    what the last stored status had not finished, and end Succeeded with every object counted once."""
    world.make_all_stale()
    before = content_hashes(world.cluster)
    keys_before = len(world.etcd.values())
    final_attempts: list[str] = []

    def hold_final(request: dict[str, Any]) -> Verdict:
        phase = str(((request.get("object") or {}).get("status") or {}).get("phase") or "")
        if phase in FINAL_PHASES:
            final_attempts.append(phase)
            return Verdict(allowed=False, message="held by the fault test")
        return Verdict()

    name = "kill-at-final-status"
    with AdmissionWebhook(world.directory / "hold-final-status", hold_final) as webhook:
        gate = _status_gate(f"https://127.0.0.1:{webhook.port}/validate", webhook.ca_pem)
        world.cluster.kubectl("apply", "-f", "-", input=json.dumps(gate))
        try:
            world.start_operator()
            world.apply(name, migration_spec("Full"))
            deadline = time.monotonic() + 300
            while not final_attempts:
                assert time.monotonic() < deadline, "the operator never tried to write a final status"
                time.sleep(0.1)
            held = world.wait_until(name, lambda m: True)
            assert world.operator is not None
            world.operator.kill_9()
        finally:
            world.cluster.kubectl("delete", "validatingwebhookconfiguration", "hold-final-status")
    assert held.get("phase") not in FINAL_PHASES, held.get("phase")
    world.start_operator()
    status = world.finished(name, timeout=300)
    print(
        f"final status held {len(final_attempts)} time(s) ({final_attempts[0]}), killed in phase "
        f"{held.get('phase')}; totals {status['totals']}"
    )
    assert final_attempts[0] == "Succeeded", final_attempts
    assert_migrated(world, status, before, keys_before)
    world.stop_operator()
