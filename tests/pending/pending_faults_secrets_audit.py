"""The operator never receives Secret data: the apiserver's own audit log (RequestResponse level,
every request) is the witness, independent of anything the operator says about itself.

Marker values are planted in Secrets, some created with ``kubectl apply``, whose
last-applied-configuration annotation holds the data and is part of the metadata that
metadata-only lists return (issue 10, item 10). After a Full, a Targeted and a VerifyOnly
migration, no response the apiserver sent to the operator may carry a marker, plain or base64.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fault_tools import FaultWorld, fault_world, is_terminal, migration_spec, needles, plant_markers

pytestmark = pytest.mark.integration

NAMESPACE = "leak-check"
SELECTION = ["core/configmaps", "core/secrets"]
MARKERS: dict[str, str] = {}
ADMIN = "admin"  # the dev cluster's kubeconfig user, which the operator runs as here


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultWorld]:
    with fault_world(tmp_path_factory.mktemp("faults-audit"), objects=200, audit_log=True) as world:
        MARKERS.update(plant_markers(world.cluster, NAMESPACE))
        yield world


def _operator_events(world: FaultWorld) -> list[dict[str, Any]]:
    """Audit events of requests the operator made: the admin user, not kubectl's user agent."""
    events = []
    for line in world.cluster.audit_log().read_text().splitlines():
        event = json.loads(line)
        agent = str(event.get("userAgent", ""))
        if event.get("user", {}).get("username") == ADMIN and not agent.startswith("kubectl"):
            events.append(event)
    return events


def test_no_response_to_the_operator_carries_secret_data(world: FaultWorld) -> None:
    for mode in ("Full", "Targeted", "VerifyOnly"):
        if mode != "VerifyOnly":
            world.stop_operator()  # kopf resolves its CRD once at start: not across a restart
            world.make_all_stale()
        if world.operator is None:
            world.start_operator()
        name = f"audit-{mode.lower()}"
        world.apply(name, migration_spec(mode, resources={"include": SELECTION}))
        assert world.wait_until(name, is_terminal, timeout=300)["phase"] == "Succeeded"
    world.stop_operator()

    events = _operator_events(world)
    secret_reads = [e for e in events if (e.get("objectRef") or {}).get("resource") == "secrets"]
    # The filter caught the operator: its Secret lists and writes are in the log, with responses.
    assert secret_reads, "no Secret request of the operator in the audit log"
    assert any("responseObject" in e for e in secret_reads)
    secret_markers = {what: m for what, m in MARKERS.items() if "configmap" not in what}
    leaks = set()
    for event in events:
        response = json.dumps(event.get("responseObject") or {})
        for what, marker in secret_markers.items():
            if any(needle in response for needle in needles(marker)):
                leaks.add(f"{what} in the response to {event['verb']} {event.get('requestURI', '')[:120]}")
    assert not leaks, sorted(leaks)
