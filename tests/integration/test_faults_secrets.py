"""Secret payloads never leak: marker values planted in Secrets and ConfigMaps, some created with
``kubectl apply`` (which copies the whole manifest, data included, into the
``kubectl.kubernetes.io/last-applied-configuration`` annotation that metadata-only lists carry),
must appear in none of the operator's log, the events, the StorageMigrations' status or the
operator's /metrics after a Full, a Targeted and a VerifyOnly migration: not in plain text,
not base64-encoded at any byte alignment.

``run`` has no debug-logging flag, so the log checked is the operator's default log.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fault_tools import FaultWorld, fault_world, is_terminal, migration_spec, needles, plant_markers

pytestmark = pytest.mark.integration

NAMESPACE = "leak-check"
SELECTION = ["core/configmaps", "core/secrets"]
MARKERS: dict[str, str] = {}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultWorld]:
    with fault_world(tmp_path_factory.mktemp("faults-secrets"), objects=200) as world:
        MARKERS.update(plant_markers(world.cluster, NAMESPACE))
        yield world


def _leaks(place: str, text: str) -> list[str]:
    # Names the marker's kind, never the marker: a failure message must not leak it either.
    return [
        f"{what} in {place}" for what, marker in MARKERS.items() if any(n in text for n in needles(marker))
    ]


def test_markers_reach_no_log_event_status_or_metric(world: FaultWorld) -> None:
    cluster = world.cluster
    # The plant worked: the apply annotation really carries the data (what the lists return).
    annotations = json.loads(
        cluster.kubectl("get", "secret", "applied-stringdata", "-n", NAMESPACE, "-o", "json")
    )["metadata"]["annotations"]
    assert MARKERS["applied-stringdata"] in annotations["kubectl.kubernetes.io/last-applied-configuration"]

    metrics: list[str] = []
    phases = {}
    for mode in ("Full", "Targeted", "VerifyOnly"):
        if mode != "VerifyOnly":
            world.stop_operator()  # kopf resolves its CRD once at start: not across a restart
            world.make_all_stale()
        operator = world.operator or world.start_operator()
        name = f"leak-{mode.lower()}"
        world.apply(name, migration_spec(mode, resources={"include": SELECTION}))
        phases[mode] = world.wait_until(name, is_terminal, timeout=300)["phase"]
        metrics.append(operator.metrics())
    world.stop_operator()
    assert phases == {"Full": "Succeeded", "Targeted": "Succeeded", "VerifyOnly": "Succeeded"}, phases

    log = world.log.read_text(errors="replace")
    events = cluster.kubectl("get", "events", "-A", "-o", "json")
    statuses = cluster.kubectl("get", "storagemigrations", "-o", "json")
    scraped = "\n".join(metrics)
    # Each place checked holds something, so an empty capture cannot pass for a clean one.
    assert log.strip()
    assert "kms_storage_migrator_objects_total" in scraped
    assert "leak-full" in statuses
    assert json.loads(events)["items"], "events were recorded"
    leaks = [
        *_leaks("the operator log", log),
        *_leaks("events", events),
        *_leaks("StorageMigration status", statuses),
        *_leaks("/metrics", scraped),
    ]
    assert not leaks, leaks
