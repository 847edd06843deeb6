"""`kms-storage-migrator status` shows what the Preflight phase found (pure rendering)."""

from __future__ import annotations

from kms_storage_migrator.statusview.model import read_migration
from kms_storage_migrator.statusview.render import render_text

FAILED_IN_PREFLIGHT = {
    "metadata": {"name": "to-kms"},
    "status": {
        "phase": "Failed",
        "message": "preflight failed, nothing was written: write format: nothing to migrate to",
        "preflight": [
            {
                "check": "write format",
                "verdict": "fail",
                "message": "nothing to migrate to; what to do: add kms",
            },
            {"check": "etcd read-only", "verdict": "warn", "message": "the etcd user can write"},
            {"check": "permissions", "verdict": "ok", "message": "may list and patch every resource (*/*)"},
        ],
        "conditions": [
            {"type": "PreflightPassed", "status": "False", "reason": "PreflightFailed", "message": "nothing"}
        ],
    },
}


def test_warnings_and_failures_are_listed_and_passes_left_out() -> None:
    view = read_migration(FAILED_IN_PREFLIGHT)
    assert [f.verdict for f in view.preflight] == ["fail", "warn", "ok"]
    text = render_text(view, width=160)
    assert "Preflight: 2 finding(s)" in text
    assert "nothing to migrate to; what to do: add kms" in text
    assert "the etcd user can write" in text
    assert "may list and patch every resource" not in text
    assert "PreflightPassed=False" in text
    assert "a check before the first write failed" in text
    assert "preflight" not in view.extra


def test_a_clean_preflight_adds_nothing_to_the_view() -> None:
    document = {
        "status": {"phase": "Migrating", "preflight": [{"check": "x", "verdict": "ok", "message": "y"}]}
    }
    assert "Preflight:" not in render_text(read_migration(document))
