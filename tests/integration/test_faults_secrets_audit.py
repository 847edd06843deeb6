"""Secret data never leaks, and the operator never receives it where it need not (issue 10, item 10).

Marker values are planted in Secrets and ConfigMaps, some created with ``kubectl apply``, which
copies the whole manifest, data included, into the ``kubectl.kubernetes.io/last-applied-configuration``
annotation. A Full, a Targeted and a VerifyOnly migration run once, the operator logging at
debug level; two witnesses judge them:

- the apiserver's own audit log (RequestResponse level, every request): in Targeted and
  VerifyOnly no response to the operator carries a marker, plain or base64; in Full the only
  responses that do are the metadata-only LISTs of the marker's own resource, and only inside
  that annotation (the apiserver sends it; kube.py drops it at parse). Rewrite answers are
  Tables without the object, whose resourceVersion is the one etcd holds.
- the operator's log, the events, the StorageMigrations' status and /metrics: no marker at all.

``scan --kubeconfig`` then names the applied Secrets, as kubectl shows them, without their data.

Both share this module's cluster and migrations (one dev cluster, three migrations in CI).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from fault_tools import FaultWorld, fault_world, is_terminal, migration_spec, needles, plant_markers
from operator_harness import OperatorProcess

from kms_storage_migrator.kube import LAST_APPLIED_ANNOTATION, ApiError, KubeApi, load_credentials

pytestmark = pytest.mark.integration

NAMESPACE = "leak-check"
SELECTION = ["core/configmaps", "core/secrets"]
MODES = ("Full", "Targeted", "VerifyOnly")
MARKERS: dict[str, str] = {}
ADMIN = "admin"  # the dev cluster's kubeconfig user, which the operator runs as here


@dataclass
class Migrations:
    """What the three migrations left: phases, the operator's audit events per mode, metrics."""

    phases: dict[str, str] = field(default_factory=dict)
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    metrics: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultWorld]:
    with fault_world(tmp_path_factory.mktemp("faults-secrets"), objects=200, audit_log=True) as world:
        MARKERS.update(plant_markers(world.cluster, NAMESPACE))
        yield world


@pytest.fixture(scope="module")
def migrations(world: FaultWorld) -> Migrations:
    done = Migrations()
    windows = {}
    for mode in MODES:
        if mode != "VerifyOnly":
            world.stop_operator()  # kopf resolves its CRD once at start: not across a restart
            world.make_all_stale()
        if world.operator is None:
            # --verbose: the issue asks for the log at debug level.
            world.operator = OperatorProcess(world.cluster, world.log, program_args=["--verbose"]).start()
        name = f"leak-{mode.lower()}"
        started = datetime.now(UTC)
        world.apply(name, migration_spec(mode, resources={"include": SELECTION}))
        done.phases[mode] = world.wait_until(name, is_terminal, timeout=300)["phase"]
        windows[mode] = (started, datetime.now(UTC))
        done.metrics.append(world.operator.metrics())
    world.stop_operator()
    operator_events = _operator_events(world)
    for mode, (start, end) in windows.items():
        done.events[mode] = [e for e in operator_events if start <= _received(e) <= end]
    return done


def _operator_events(world: FaultWorld) -> list[dict[str, Any]]:
    """Audit events of requests the operator made: the admin user, not kubectl's user agent."""
    events = []
    for line in world.cluster.audit_log().read_text().splitlines():
        event = json.loads(line)
        agent = str(event.get("userAgent", ""))
        if event.get("user", {}).get("username") == ADMIN and not agent.startswith("kubectl"):
            events.append(event)
    return events


def _received(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(event["requestReceivedTimestamp"]).replace("Z", "+00:00"))


def _carried(document: object) -> set[str]:
    """Which markers a document carries, by how they were planted (never the marker itself)."""
    text = json.dumps(document)
    return {what for what, marker in MARKERS.items() if any(n in text for n in needles(marker))}


def _resource_of(what: str) -> str:
    return "configmaps" if "configmap" in what else "secrets"


def _request(event: dict[str, Any]) -> str:
    return f"{event['verb']} {event.get('requestURI', '')[:120]}"


def _without_last_applied(response: dict[str, Any]) -> dict[str, Any]:
    stripped = copy.deepcopy(response)
    for item in stripped.get("items") or []:
        (item.get("metadata", {}).get("annotations") or {}).pop(LAST_APPLIED_ANNOTATION, None)
    return stripped


def test_the_migrations_succeed_and_the_audit_log_caught_the_operator(migrations: Migrations) -> None:
    assert migrations.phases == dict.fromkeys(MODES, "Succeeded"), migrations.phases
    for mode in MODES:
        secret_requests = [
            e for e in migrations.events[mode] if (e.get("objectRef") or {}).get("resource") == "secrets"
        ]
        # Each mode's window holds the operator's requests with their responses, so an empty
        # capture cannot pass for a clean one. VerifyOnly reads etcd only: it has none on Secrets.
        assert any("responseObject" in e for e in migrations.events[mode]), mode
        if mode != "VerifyOnly":
            assert any("responseObject" in e for e in secret_requests), mode


def test_targeted_and_verify_only_never_read_secrets_through_the_api(migrations: Migrations) -> None:
    # Names and resourceVersions come from etcd keys: a list that happened to hold no applied
    # Secret would pass the marker check below, so any read of Secrets fails here.
    reads = sorted(
        f"{mode}: {_request(event)}"
        for mode in ("Targeted", "VerifyOnly")
        for event in migrations.events[mode]
        if (event.get("objectRef") or {}).get("resource") == "secrets" and event["verb"] != "patch"
    )
    assert not reads, reads


def test_targeted_and_verify_only_receive_no_marker(migrations: Migrations) -> None:
    leaks = sorted(
        f"{mode}: {what} in the response to {_request(event)}"
        for mode in ("Targeted", "VerifyOnly")
        for event in migrations.events[mode]
        for what in _carried(event.get("responseObject") or {})
    )
    assert not leaks, leaks


def test_full_receives_markers_only_in_the_last_applied_annotation_of_its_lists(
    migrations: Migrations,
) -> None:
    leaks, in_annotation = set(), set()
    for event in migrations.events["Full"]:
        response = event.get("responseObject") or {}
        carried = _carried(response)
        resource = (event.get("objectRef") or {}).get("resource")
        for what in carried:
            if event["verb"] != "list" or resource != _resource_of(what):
                leaks.add(f"{what} in the response to {_request(event)}")
        if carried and event["verb"] == "list":
            in_annotation |= carried
            for what in _carried(_without_last_applied(response)):
                leaks.add(f"{what} outside the annotation in the response to {_request(event)}")
    assert not leaks, sorted(leaks)
    # The reference: the applied objects' data does cross the wire in Full's lists (what the
    # docs tell users), and only theirs: a Secret made with kubectl create has no such copy.
    assert in_annotation == {"applied-stringdata", "applied-data", "applied-configmap"}


def test_a_rewrite_answer_is_a_table_holding_the_stored_resource_version(
    world: FaultWorld, migrations: Migrations
) -> None:
    # Targeted's last answer per Secret, against etcd's mod_revision now (VerifyOnly wrote nothing).
    answered = {}
    for event in migrations.events["Targeted"]:
        ref = event.get("objectRef") or {}
        written = (event.get("responseStatus") or {}).get("code") == 200
        if event["verb"] == "patch" and ref.get("resource") == "secrets" and written:
            answered[f"/registry/secrets/{ref['namespace']}/{ref['name']}"] = event["responseObject"]
    stored = world.etcd.values(["/registry/secrets/"])
    # Every Secret was stale after the KEK rotation, so Targeted wrote each one.
    assert set(answered) == set(stored)
    wrong = {
        # Kind and version only: the metadata of a wrong answer may hold the annotation.
        key: (table.get("kind"), table["metadata"].get("resourceVersion"), stored[key].mod_revision)
        for key, table in answered.items()
        if (table.get("kind"), table["metadata"].get("resourceVersion"))
        != ("Table", str(stored[key].mod_revision))
    }
    assert not wrong, sorted(wrong.items())[:5]
    # Without the object: no row carries one, so no metadata came with the answer.
    assert all(row.get("object") is None for table in answered.values() for row in table.get("rows", []))


async def test_a_failed_table_write_still_answers_with_its_status(
    world: FaultWorld, migrations: Migrations
) -> None:
    path = f"/api/v1/namespaces/{NAMESPACE}/secrets"
    async with KubeApi(load_credentials(world.cluster.kubeconfig)) as api:
        listed = await api.list_metadata(path, limit=50, continue_token=None)
        secret = next(i["metadata"] for i in listed["items"] if i["metadata"]["name"] == "applied-data")
        wrong = [
            (f"{path}/applied-data", {"uid": secret["uid"], "resourceVersion": "1"}),
            (f"{path}/no-such-secret", {"resourceVersion": secret["resourceVersion"]}),
            (f"{path}/applied-data", {"uid": "0" * 8, "resourceVersion": secret["resourceVersion"]}),
        ]
        answers = []
        for where, metadata in wrong:
            with pytest.raises(ApiError) as raised:
                await api.patch(where, {"metadata": metadata}, params={"fieldManager": "leak-check"})
            answers.append((raised.value.status, raised.value.reason, raised.value.message))
    assert [(status, reason) for status, reason, _ in answers] == [
        (409, "Conflict"),
        (404, "NotFound"),
        (422, "Invalid"),
    ]
    assert answers[2][2] == "invalid fields: metadata.uid"


def _leaks(place: str, text: str) -> list[str]:
    # Names the marker's kind, never the marker: a failure message must not leak it either.
    return [f"{what} in {place}" for what in _carried(text)]


def test_markers_reach_no_log_event_status_or_metric(world: FaultWorld, migrations: Migrations) -> None:
    cluster = world.cluster
    # The plant worked: the apply annotation really carries the data (what the lists return).
    annotations = json.loads(
        cluster.kubectl("get", "secret", "applied-stringdata", "-n", NAMESPACE, "-o", "json")
    )["metadata"]["annotations"]
    assert MARKERS["applied-stringdata"] in annotations[LAST_APPLIED_ANNOTATION]

    log = world.log.read_text(errors="replace")
    events = cluster.kubectl("get", "events", "-A", "-o", "json")
    statuses = cluster.kubectl("get", "storagemigrations", "-o", "json")
    scraped = "\n".join(migrations.metrics)
    # Each place checked holds something, so an empty capture cannot pass for a clean one; the
    # log is at debug level.
    assert " DEBUG " in log or "[DEBUG" in log, log[:500]
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


def test_scan_names_the_applied_secrets_and_never_their_data(
    world: FaultWorld, migrations: Migrations
) -> None:
    # After the migrations: its own list of Secrets must not fall into their audit windows.
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "kms_storage_migrator",
            "scan",
            "--etcd-config",
            str(world.cluster.etcd_config),
            "--kubeconfig",
            str(world.cluster.kubeconfig),
            "--resource",
            "secrets",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    warning = completed.stderr.strip().splitlines()[-1]
    # The reference: kubectl's view of which Secrets carry the annotation.
    listed = json.loads(world.cluster.kubectl("get", "secrets", "-A", "-o", "json"))["items"]
    applied = sorted(
        f"{s['metadata']['namespace']}/{s['metadata']['name']}"
        for s in listed
        if LAST_APPLIED_ANNOTATION in (s["metadata"].get("annotations") or {})
    )
    assert applied == [f"{NAMESPACE}/applied-data", f"{NAMESPACE}/applied-stringdata"]
    assert warning.startswith(
        f"warning: 2 Secret(s) carry a copy of their data in the {LAST_APPLIED_ANNOTATION}"
    )
    assert f"({', '.join(applied)})" in warning
    assert f"kubectl annotate secret -n {NAMESPACE} applied-data {LAST_APPLIED_ANNOTATION}-" in warning
    assert not _leaks("scan's output", completed.stdout + completed.stderr)
