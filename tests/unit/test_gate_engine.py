"""The key-convergence gate inside the engine: phase, condition, timeout, the blind and no-KMS cases."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

import pytest
from test_rewrite_engine import STALE, FakeCluster, MemorySink, _runner

from kms_storage_migrator.convergence.gate import (
    Converged,
    GateResult,
    Lag,
    LaggingApiserver,
    NoMetricsAccess,
    Waiting,
)
from kms_storage_migrator.migration.durations import DurationError, parse_duration
from kms_storage_migrator.migration.key_gate import NO_KMS_PROVIDER, decide_gate, keep_names
from kms_storage_migrator.migration.plan import MigrationSpec, PlanError
from kms_storage_migrator.migration.progress import Phase, from_status

OLD, NEW = "sha256:" + "a" * 64, "sha256:" + "b" * 64
LAGGING = Waiting(
    (LaggingApiserver("apiserver-2", Lag.WRITES_OTHER_KEY, "kms", NEW, OLD),),
)
CONVERGED = Converged({"kms": NEW}, ("apiserver-1", "apiserver-2"))


class ScriptedGate:
    """Reports each verdict in turn to the engine, then returns the last one."""

    def __init__(self, *verdicts: GateResult) -> None:
        self.verdicts = verdicts
        self.calls: list[tuple[datetime, float]] = []
        self.seen: list[tuple[str, str]] = []  # (phase, KeyConverged status) at each report

    async def wait(
        self,
        started_at: datetime,
        timeout_seconds: float,
        on_progress: Callable[[GateResult], Awaitable[None]],
    ) -> GateResult:
        self.calls.append((started_at, timeout_seconds))
        for verdict in self.verdicts:
            await on_progress(verdict)
        return self.verdicts[-1]


def _key_condition(status: dict[str, object]) -> dict[str, str]:
    conditions = status["conditions"]
    assert isinstance(conditions, list)
    return next(c for c in conditions if c["type"] == "KeyConverged")


@pytest.mark.parametrize(
    ("text", "seconds"), [("10m", 600.0), ("90s", 90.0), ("1h30m", 5400.0), ("2h", 7200.0), ("1m5s", 65.0)]
)
def test_durations_read_hours_minutes_seconds(text: str, seconds: float) -> None:
    assert parse_duration("spec.x", text, minimum=10, maximum=86400) == seconds


@pytest.mark.parametrize("text", ["", "10", "1.5m", "m", "5m1h", "-1m", 10, None])
def test_bad_durations_name_the_field_and_the_form(text: object) -> None:
    with pytest.raises(DurationError, match=r"spec\.x: .* like '90s', '10m'"):
        parse_duration("spec.x", text, minimum=10, maximum=86400)


def test_spec_timeout_defaults_to_ten_minutes_and_is_bounded() -> None:
    assert MigrationSpec.from_spec({}).key_convergence_timeout == 600.0
    assert MigrationSpec.from_spec({"keyConvergenceTimeout": "45s"}).key_convergence_timeout == 45.0
    with pytest.raises(PlanError, match=r"spec\.keyConvergenceTimeout: '5s' is out of range"):
        MigrationSpec.from_spec({"keyConvergenceTimeout": "5s"})
    with pytest.raises(PlanError, match=r"spec\.keyConvergenceTimeout: '25h' is out of range"):
        MigrationSpec.from_spec({"keyConvergenceTimeout": "25h"})


def test_converged_goes_on_with_the_key_hashes() -> None:
    outcome = decide_gate(CONVERGED, seconds_since_start=3, timeout_seconds=600)
    assert outcome.proceed
    assert outcome.converged
    assert outcome.key_id_hashes == {"kms": NEW}
    assert outcome.wait_seconds == 0


def test_a_timeout_fails_naming_the_laggard_and_the_setting() -> None:
    outcome = decide_gate(LAGGING, seconds_since_start=600, timeout_seconds=600)
    assert not outcome.proceed
    assert outcome.reason == "ApiserversLagging"
    assert "spec.keyConvergenceTimeout (600 s) ran out" in outcome.message
    assert "apiserver-2 does not write with the key its latest Status returned" in outcome.message


def test_without_metrics_access_it_waits_the_safe_interval_from_the_start_then_goes_on() -> None:
    blind = NoMetricsAccess("403 Forbidden: no")
    outcome = decide_gate(blind, seconds_since_start=100, timeout_seconds=600)
    assert outcome.proceed
    assert not outcome.converged
    assert outcome.wait_seconds == pytest.approx(50.0)
    assert "grant get on nonResourceURLs" in outcome.message
    late = decide_gate(blind, seconds_since_start=400, timeout_seconds=600)
    assert late.wait_seconds == 0


def test_no_kms_provider_on_any_apiserver_goes_on_and_says_so() -> None:
    plain = Waiting((LaggingApiserver("a", Lag.NO_KMS_METRICS), LaggingApiserver("b", Lag.NO_KMS_METRICS)))
    outcome = decide_gate(plain, seconds_since_start=5, timeout_seconds=600)
    assert outcome.proceed
    assert outcome.reason == NO_KMS_PROVIDER
    assert "no KMS v2 provider observed" in outcome.message
    # One apiserver with KMS metrics among plain ones is a laggard case, not "no KMS".
    mixed = Waiting((LaggingApiserver("a", Lag.NO_KMS_METRICS), LaggingApiserver("b", Lag.NO_WRITES)))
    assert not decide_gate(mixed, seconds_since_start=600, timeout_seconds=600).proceed


async def test_the_engine_waits_for_the_key_before_any_write_and_again_before_verifying() -> None:
    cluster = FakeCluster({"a": STALE, "b": STALE})
    sink = MemorySink()
    gate = ScriptedGate(LAGGING, CONVERGED)
    phases: list[tuple[str, str, int]] = []
    publish = sink.publish

    async def record(status: dict[str, object]) -> None:
        condition = next((c for c in status["conditions"] if c["type"] == "KeyConverged"), None)  # type: ignore[attr-defined]
        phases.append((str(status["phase"]), condition["status"] if condition else "-", len(cluster.patched)))
        await publish(status)

    sink.publish = record  # type: ignore[method-assign]
    progress = await _runner(
        cluster, sink, {"mode": "Targeted", "keyConvergenceTimeout": "2m"}, gate=gate
    ).run()

    assert progress.phase is Phase.SUCCEEDED
    assert len(gate.calls) == 2  # before the first write, and before verifying
    assert all(timeout == 120.0 for _, timeout in gate.calls)
    waiting = [p for p in phases if p[0] == "WaitingForKey"]
    assert ("WaitingForKey", "False", 0) in waiting  # the laggard shown, nothing written yet
    # The pass is stored with the next phase's entry, not as a WaitingForKey row of its own.
    assert ("WaitingForKey", "True", 0) not in waiting
    assert phases[phases.index(waiting[-1]) + 1] == ("Scanning", "True", 0), phases
    first_write = next(i for i, p in enumerate(phases) if p[2] > 0)
    assert all(p[0] != "WaitingForKey" for p in phases[first_write:])
    assert _key_condition(sink.status)["status"] == "True"
    assert ("Normal", "KeyConverged") in [(kind, reason) for kind, reason, _ in sink.events]


async def test_the_engine_fails_at_the_timeout_without_writing_anything() -> None:
    cluster = FakeCluster({"a": STALE})
    sink = MemorySink()
    progress = await _runner(cluster, sink, {"mode": "Targeted"}, gate=ScriptedGate(LAGGING)).run()
    assert progress.phase is Phase.FAILED
    assert "spec.keyConvergenceTimeout" in progress.message
    assert "apiserver-2" in progress.message
    assert cluster.patched == []
    condition = _key_condition(sink.status)
    assert condition["status"] == "False"
    assert condition["reason"] == "ApiserversLagging"


async def test_a_resumed_run_in_waiting_for_key_waits_again_from_the_recorded_start() -> None:
    cluster = FakeCluster({"a": STALE})
    sink = MemorySink()
    first = await _runner(cluster, sink, {"mode": "Targeted"}, gate=ScriptedGate(LAGGING)).run()

    resumed = from_status({**sink.status, "phase": "WaitingForKey", "completionTime": None})
    gate = ScriptedGate(CONVERGED)
    done = await _runner(cluster, MemorySink(), {"mode": "Targeted"}, gate=gate, progress=resumed).run()
    assert done.phase is Phase.SUCCEEDED
    assert gate.calls[0][0] == datetime.fromisoformat(str(first.start_time).replace("Z", "+00:00"))


def test_a_final_round_that_names_nobody_keeps_the_laggards_seen_before() -> None:
    unnamed = Waiting((), note="cannot list the identity Leases (500 StorageReadError); retrying")
    kept = keep_names(unnamed, LAGGING)
    assert isinstance(kept, Waiting)
    assert kept.lagging == LAGGING.lagging
    assert "last round: cannot list the identity Leases" in kept.message
    assert keep_names(unnamed, None) is unnamed
    assert keep_names(CONVERGED, LAGGING) is CONVERGED
