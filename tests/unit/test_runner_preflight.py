"""The Preflight phase in the driver, on the in-memory apiserver and etcd of the engine tests.

The checks are scripted (their I/O is tested on the real dev cluster); here: that the phase
comes before any write, what each verdict does to the run, what the status keeps, and that a
resumed run redoes the phase only when it had not passed it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from test_rewrite_engine import STALE, FakeCluster, MemorySink, _runner

from kms_storage_migrator.migration.preflight_gate import notes
from kms_storage_migrator.migration.progress import (
    MigrationProgress,
    Phase,
    ResourcePhase,
    from_status,
    to_status,
)
from kms_storage_migrator.migration.resource_choice import ServedResource
from kms_storage_migrator.preflight.findings import Finding, Verdict
from kms_storage_migrator.storage.write_format import WriteFormat

FATAL = Finding("write format", Verdict.FAIL, "nothing to migrate to: plaintext", "configure a kms provider")
WARNING = Finding("etcd read-only", Verdict.WARN, "the etcd user can write", "give it a read-only role")
OK = Finding("permissions", Verdict.OK, "may list and patch every resource (*/*)")
REFUSED = Finding(
    "permissions core/secrets", Verdict.FAIL, "may not patch", "grant it", resource="core/secrets"
)


class ScriptedChecks:
    def __init__(self, *findings: Finding) -> None:
        self.findings = list(findings)
        self.asked: list[list[str]] = []
        self.references: list[WriteFormat | None] = []
        self.exposure: list[bool] = []
        self.aggregated: list[list[tuple[str, str]]] = []

    async def run(
        self,
        resources: Sequence[ServedResource],
        reference: WriteFormat | None,
        mutating_webhooks: object,
        *,
        secrets_exposure: bool,
        aggregated: Sequence[tuple[str, str]],
    ) -> list[Finding]:
        self.exposure.append(secrets_exposure)
        self.aggregated.append(list(aggregated))
        self.asked.append([r.name for r in resources])
        self.references.append(reference)
        return self.findings


class PhaseSink(MemorySink):
    """Records the phase of every status published, and what was patched by then."""

    def __init__(self, cluster: FakeCluster) -> None:
        super().__init__()
        self.cluster = cluster
        self.seen: list[tuple[str, int]] = []

    async def publish(self, status: dict[str, Any]) -> None:
        await super().publish(status)
        self.seen.append((status["phase"], len(self.cluster.patched)))


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == kind)


@pytest.mark.parametrize("mode", ["Full", "Targeted"])
async def test_a_failing_check_ends_the_migration_failed_before_any_write(mode: str) -> None:
    cluster = FakeCluster({"a": STALE, "b": STALE})
    cluster.lists = {None: [{"items": [], "metadata": {}}]}
    sink = PhaseSink(cluster)
    checks = ScriptedChecks(OK, FATAL)
    progress = await _runner(cluster, sink, {"mode": mode}, preflight=checks).run()
    assert progress.phase is Phase.FAILED
    assert cluster.patched == []
    assert "nothing to migrate to: plaintext; what to do: configure a kms provider" in progress.message
    condition = _condition(sink.status, "PreflightPassed")
    assert (condition["status"], condition["reason"]) == ("False", "PreflightFailed")
    assert sink.status["preflight"][0] == {
        "check": "write format",
        "verdict": "fail",
        "message": "write format: nothing to migrate to: plaintext; what to do: configure a kms provider",
    }
    assert ("Preflight", 0) in sink.seen
    assert checks.asked == [["core/secrets"]]
    # Only Full lists Secrets anyway: Targeted must not list them for the exposure check.
    assert checks.exposure == [mode == "Full"]
    # The check was given our own CR's stored format, read from etcd at discovery.
    assert checks.references[0] is not None
    assert any(reason == "PreflightFailed" for _, reason, _ in sink.events)


async def test_a_warning_goes_on_under_warn_and_stops_under_enforce() -> None:
    warned = FakeCluster({"a": STALE})
    sink = PhaseSink(warned)
    progress = await _runner(warned, sink, {"mode": "Targeted"}, preflight=ScriptedChecks(OK, WARNING)).run()
    assert progress.phase is Phase.SUCCEEDED
    assert warned.patched == ["a"]
    assert _condition(sink.status, "PreflightPassed")["reason"] == "PassedWithWarnings"
    assert [n["verdict"] for n in sink.status["preflight"]] == ["warn", "ok"]
    # Preflight came before the first write.
    first_write = next(i for i, (_, patched) in enumerate(sink.seen) if patched)
    assert all(phase != "Preflight" for phase, _ in sink.seen[first_write:])

    enforced = FakeCluster({"a": STALE})
    spec = {"mode": "Targeted", "preflight": "Enforce"}
    progress = await _runner(enforced, MemorySink(), spec, preflight=ScriptedChecks(OK, WARNING)).run()
    assert progress.phase is Phase.FAILED
    assert enforced.patched == []
    assert "spec.preflight is Enforce" in progress.message
    assert "the etcd user can write" in progress.message


async def test_a_resource_it_may_not_patch_is_failed_before_any_write() -> None:
    cluster = FakeCluster({"a": STALE})
    progress = await _runner(
        cluster, MemorySink(), {"mode": "Targeted"}, preflight=ScriptedChecks(REFUSED)
    ).run()
    assert cluster.patched == []
    assert progress.phase is Phase.FAILED
    entry = progress.resource("core/secrets")
    assert entry is not None
    assert entry.phase is ResourcePhase.FAILED
    assert entry.message.startswith("preflight: permissions core/secrets: may not patch")


@pytest.mark.parametrize(
    ("reached", "asked"),
    [(Phase.DISCOVERING, 1), (Phase.PREFLIGHT, 1), (Phase.WAITING_FOR_KEY, 0), (Phase.MIGRATING, 0)],
)
async def test_a_resumed_run_redoes_preflight_only_when_it_had_not_passed_it(
    reached: Phase, asked: int
) -> None:
    cluster = FakeCluster({"a": STALE})
    sink = MemorySink()
    checks = ScriptedChecks(OK)
    first = await _runner(cluster, sink, {"mode": "Targeted"}, preflight=checks).run()
    assert first.phase is Phase.SUCCEEDED
    stored = {**sink.status, "phase": reached.value, "completionTime": None}
    resumed_checks = ScriptedChecks(FATAL)  # would fail the run if it were asked again
    progress = await _runner(
        cluster,
        MemorySink(),
        {"mode": "Targeted"},
        progress=from_status(stored),
        preflight=resumed_checks,
    ).run()
    assert len(resumed_checks.asked) == asked
    assert (progress.phase is Phase.FAILED) is bool(asked)


def test_the_findings_round_trip_through_the_status() -> None:
    progress = MigrationProgress()
    progress.preflight = notes([OK, WARNING])
    assert from_status(to_status(progress, "2026-01-01T00:00:00Z")).preflight == progress.preflight
    assert to_status(MigrationProgress(), "2026-01-01T00:00:00Z")["preflight"] is None
