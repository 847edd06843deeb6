"""The status view, rendered from status documents: what it shows and what it exits with.

One document comes from the engine's own ``to_status`` so the view follows its shape; the
others are written by hand, including what a reworked engine may add and what no engine
should write (wrong types), which must still render.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from kms_storage_migrator.migration import progress
from kms_storage_migrator.statusview.model import exit_code, migration_names, newest, read_migration
from kms_storage_migrator.statusview.render import render_text

NOW = datetime.datetime(2026, 12, 1, 10, 0, 0, tzinfo=datetime.UTC)


def _migration(status: Any, name: str = "rotate-1", created: str = "2026-12-01T09:00:00Z") -> dict[str, Any]:
    document: dict[str, Any] = {
        "apiVersion": "kms-storage-migrator.io/v1alpha1",
        "kind": "StorageMigration",
        "metadata": {"name": name, "creationTimestamp": created},
        "spec": {"mode": "Auto"},
    }
    if status is not None:
        document["status"] = status
    return document


def _engine_status(phase: progress.Phase) -> dict[str, Any]:
    secrets = progress.ResourceProgress("", "v1", "secrets", progress.ResourcePhase.DONE, estimate=40)
    secrets.counts = progress.Counts(rewritten=38, unchanged=2)
    secrets.write_format = "kms-v2:local-kms:kek-2"
    deployments = progress.ResourceProgress(
        "apps", "v1", "deployments", progress.ResourcePhase.MIGRATING, estimate=10
    )
    deployments.counts = progress.Counts(rewritten=4, conflicts=1, retries=3)
    state = progress.MigrationProgress(
        phase=phase,
        mode="Targeted",
        message="verifying",
        start_time="2026-12-01T09:00:05Z",
        completion_time="2026-12-01T09:03:10Z" if phase in progress.TERMINAL_PHASES else None,
        resources=[secrets, deployments],
        dropped=[progress.DroppedResource("metrics.k8s.io/pods", "served by an aggregated API server")],
        key_id="kek-2",
        verification=progress.Verification(progress.VerificationResult.VERIFIED, scanned=4462, stale=0),
    )
    return progress.to_status(state, "2026-12-01T09:03:10Z")


FAILED_STATUS = {
    "phase": "Failed",
    "message": "2 object(s) could not be rewritten",
    "totals": {"objectsTotal": 5, "rewritten": 3, "failed": 12},
    "resources": [
        {"name": "core/configmaps", "phase": "Failed", "objectsTotal": 5, "rewritten": 3, "failed": 2}
    ],
    "failures": [
        {
            "resource": "core/configmaps",
            "namespace": "team-a",
            "name": "cm-1",
            "reason": "Forbidden",
            "message": "m1",
        },
        {
            "resource": "core/configmaps",
            "name": "cluster-cm",
            "reason": "Invalid",
            "message": "invalid fields: x",
        },
    ],
    "failuresTotal": 12,
    "verification": {
        "result": "StaleFound",
        "scanned": 5,
        "stale": 2,
        "examples": ["/registry/configmaps/a/b"],
    },
    "conditions": [
        {"type": "Degraded", "status": "True", "reason": "StaleObjectsRemain", "message": "2 stale"}
    ],
}

# What a reworked engine may add: fields this view has never heard of.
FUTURE_STATUS = {
    "phase": "Migrating",
    "progress": "40%",
    "rate": "48.7/s",
    "eta": "2026-12-01T10:05:00Z",
    "keys": {"kek-1": 60, "kek-2": 40},
    "preflight": [],
    "totals": {"objectsTotal": 100, "rewritten": 40},
    "resources": [
        {"name": "core/secrets", "phase": "Migrating", "objectsTotal": 100, "rewritten": 40, "newField": 1}
    ],
}

# Types no engine writes; the view must not crash on them.
GARBAGE_STATUS = {
    "phase": 7,
    "totals": ["not", "a", "map"],
    "resources": ["core/secrets", {"phase": "Done", "rewritten": "12", "failed": -3, "objectsTotal": True}],
    "failures": "none",
    "failuresTotal": "many",
    "verification": "yes",
    "conditions": [None, {"status": "True"}],
}


@pytest.mark.parametrize(
    ("status", "shown", "absent", "code"),
    [
        pytest.param(
            _engine_status(progress.Phase.SUCCEEDED),
            [
                "StorageMigration rotate-1  Succeeded  100%",
                "mode          Targeted (spec: Auto)",
                "target key    kek-2",
                "took 3m05s",
                "core/secrets",
                "apps/deployments",
                "40/40",
                "5/10",
                "TOTAL",
                "45/50",
                "CONFLICTS",
                "RETRIES",
                "kms-v2:local-kms:kek-2",
                "Verification: Verified, 4462 keys read back from etcd, 0 stale",
                "Not migrated: 1 resource type(s): metrics.k8s.io/pods",
                "Ready=True",
            ],
            ["Failures", "GONE"],
            0,
            id="succeeded-from-the-engine",
        ),
        pytest.param(
            _engine_status(progress.Phase.MIGRATING),
            ["Migrating", "started       2026-12-01T09:00:05Z (59m55s ago)", "Progressing=True"],
            ["finished"],
            0,
            id="running-from-the-engine",
        ),
        pytest.param(
            FAILED_STATUS,
            [
                "Failed",
                "2 object(s) could not be rewritten",
                "Failures: 12 (the first 2 shown)",
                "team-a/cm-1",
                "cluster-cm",
                "Forbidden",
                "invalid fields: x",
                "Verification: StaleFound, 5 keys read back from etcd, 2 stale",
                "still stale: /registry/configmaps/a/b",
                "Degraded=True",
                "Every failed object (names only):",
                "-l kms-storage-migrator.io/failures-of=rotate-1",
            ],
            [],
            1,
            id="failed",
        ),
        pytest.param(
            FUTURE_STATUS,
            ["Migrating  40%", "rate", "48.7/s", "eta", '{"kek-1": 60, "kek-2": 40}', "40/100"],
            ["preflight", "newField"],
            0,
            id="fields-added-later",
        ),
        pytest.param(
            {
                "phase": "Migrating",
                "resources": [
                    {"name": "core/secrets", "phase": "Migrating", "objectsTotal": 10, "rewritten": 5},
                    {"name": "storage.k8s.io/csidrivers", "phase": "Done", "objectsTotal": 0},
                    {"name": "node.k8s.io/runtimeclasses", "phase": "Done", "objectsTotal": 0},
                    {"name": "core/events", "phase": "Pending", "objectsTotal": 0},
                ],
            },
            ["core/secrets", "core/events", "and 2 resource type(s) with no objects, done", "5/10"],
            ["csidrivers", "runtimeclasses"],
            0,
            id="empty-finished-resources-are-only-counted",
        ),
        pytest.param(
            None,
            ["StorageMigration rotate-1  no phase yet", "No status yet: is the operator running?"],
            ["RESOURCE"],
            0,
            id="no-status-yet",
        ),
        pytest.param(
            GARBAGE_STATUS,
            ["StorageMigration rotate-1  7", "?", "12"],
            ["Failures", "Verification"],
            0,
            id="wrong-types",
        ),
        pytest.param(
            {"phase": "Pending", "message": "waiting for [bold]other[/bold] to finish"},
            ["Pending", "waiting for [bold]other[/bold] to finish"],
            [],
            0,
            id="markup-is-shown-as-written",
        ),
    ],
)
def test_status_document_renders(status: Any, shown: list[str], absent: list[str], code: int) -> None:
    view = read_migration(_migration(status))
    text = render_text(view, width=120, now=NOW)
    for fragment in shown:
        assert fragment in text, f"{fragment!r} not in:\n{text}"
    for fragment in absent:
        assert fragment not in text, f"{fragment!r} in:\n{text}"
    assert exit_code(view) == code


def test_a_narrow_terminal_keeps_every_number() -> None:
    text = render_text(read_migration(_migration(_engine_status(progress.Phase.SUCCEEDED))), width=80)
    # Columns are left out whole (bars, rarer counts), never squeezed away or cut.
    for fragment in ("core/secrets", "apps/deployments", "FAILED", "40/40", "5/10", "45/50", "38", "42"):
        assert fragment in text, text
    assert "…" not in text


def test_the_newest_migration_is_chosen_and_names_are_listed() -> None:
    items = [
        _migration(None, "b", "2026-12-01T09:00:00Z"),
        _migration(None, "c", "2026-12-01T08:00:00Z"),
        _migration(None, "a", "2026-12-01T09:00:00Z"),
        {"metadata": "odd"},
    ]
    chosen = newest(items)
    assert chosen is not None
    assert chosen["metadata"]["name"] == "b"  # same second as "a": the greater name, stably
    assert newest([]) is None
    assert migration_names(items) == ["a", "b", "c"]
