"""Operator controls on a real dev cluster: spec.suspend pauses at a page boundary and resumes.

One KMS v2 cluster for the module, seeded, every object made stale by a KEK rotation; the
operator runs as a process. "Nothing written while suspended" is judged by etcdctl's mod
revisions of every selected key, "each object counted once" by the key count etcd holds.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fault_tools import PREFIXES, FaultWorld, done_count, fault_world, migration_spec, phase_of

pytestmark = pytest.mark.integration

OBJECTS = 600
# Slow enough that the run is still going when suspended: about 25 pages of 20 at 40 writes/s.
SLOW = {"qps": 40, "concurrency": 4, "pageSize": 20}
# Longer than several pages at that rate: a suspension that did not hold would show in etcd.
SUSPENDED_OBSERVATION_SECONDS = 6.0


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultWorld]:
    with fault_world(tmp_path_factory.mktemp("controls"), objects=OBJECTS, namespaces=4) as world:
        world.make_all_stale()
        world.start_operator()
        yield world


def _suspend(world: FaultWorld, name: str, suspend: bool) -> None:
    patch = json.dumps({"spec": {"suspend": suspend}})
    world.cluster.kubectl("patch", "storagemigration", name, "--type=merge", "-p", patch)


def _events(world: FaultWorld, name: str) -> list[str]:
    listing = json.loads(world.cluster.kubectl("get", "events", "-n", "default", "-o", "json"))
    return [e["reason"] for e in listing["items"] if e["involvedObject"]["name"] == name]


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status.get("conditions") or [] if c["type"] == kind)


def test_only_suspend_may_change_and_the_error_names_the_field(world: FaultWorld) -> None:
    world.apply("frozen", {**migration_spec("Targeted"), "suspend": True})
    patch = json.dumps({"spec": {"pageSize": 7}})
    with pytest.raises(subprocess.CalledProcessError) as error:
        world.cluster.kubectl("patch", "storagemigration", "frozen", "--type=merge", "-p", patch)
    assert "spec.pageSize cannot change" in str(error.value.stderr)


def test_a_suspended_pending_migration_never_starts_and_deleting_it_deletes_it(world: FaultWorld) -> None:
    before = {key: value.mod_revision for key, value in world.etcd.values().items()}
    status = world.wait_until("frozen", lambda m: phase_of(m) == "Suspended", timeout=120)
    assert status["suspendedPhase"] == "Pending"
    assert "spec.suspend to false" in status["message"]
    assert done_count(status) == 0
    after = {key: value.mod_revision for key, value in world.etcd.values().items()}
    assert after == before
    world.cluster.kubectl("delete", "storagemigration", "frozen", "--wait=true", "--timeout=60s")
    remaining = world.cluster.kubectl("get", "storagemigrations", "-o", "name")
    assert "frozen" not in remaining


def test_suspend_mid_run_writes_nothing_then_resumes_counting_every_object_once(world: FaultWorld) -> None:
    world.apply("pause", migration_spec("Targeted", **SLOW))
    running = world.wait_until(
        "pause", lambda m: phase_of(m) == "Migrating" and done_count(m.get("status") or {}) >= 60, timeout=300
    )
    assert done_count(running) < OBJECTS, "the run ended before it could be suspended: slow it down"
    measured = world.wait_until(
        "pause", lambda m: (m.get("status") or {}).get("rate") is not None, timeout=120
    )
    # Plausible under spec.qps 40: writes share that budget with the list/etcd reads.
    assert 1 <= measured["rate"] <= 60, measured["rate"]
    assert re.fullmatch(r"(\d+h)?(\d+m)?(\d+s)?", measured["eta"]), measured["eta"]
    _suspend(world, "pause", True)
    suspended = world.wait_until("pause", lambda m: phase_of(m) == "Suspended", timeout=120)
    assert suspended["suspendedPhase"] == "Migrating"
    assert _condition(suspended, "Suspended")["status"] == "True"
    assert _condition(suspended, "Progressing")["status"] == "False"
    assert "kubectl patch storagemigration pause" in suspended["message"]

    held = world.etcd.values()
    time.sleep(SUSPENDED_OBSERVATION_SECONDS)
    still = world.etcd.values()
    moved = [key for key in held if key in still and still[key].mod_revision != held[key].mod_revision]
    assert moved == [], f"{len(moved)} keys written while suspended, e.g. {moved[:3]}"
    quiet = world.status("pause")
    assert phase_of({"status": quiet}) == "Suspended"
    assert quiet["totals"] == suspended["totals"]
    stale_left = len(world.etcd.stale())
    assert stale_left > 0, "nothing left to resume: the suspension came too late to prove anything"

    _suspend(world, "pause", False)
    final = world.finished("pause")
    assert final["phase"] == "Succeeded", final["message"]
    assert final["verification"]["result"] == "Verified"
    keys = len(world.etcd.values(PREFIXES))
    assert done_count(final) == keys, final["totals"]
    assert final["totals"]["failed"] == 0
    assert world.etcd.stale() == {}
    assert _condition(final, "Suspended")["status"] == "False"
    reasons = _events(world, "pause")
    assert "Suspended" in reasons
    assert "Resumed" in reasons
