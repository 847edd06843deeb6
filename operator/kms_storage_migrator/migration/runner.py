"""One migration end to end: a short phase driver over a Full or a Targeted walk.

discover -> preflight -> (scan) -> rewrite -> verify -> finish. Each step is one method below; the walks own
their checkpoints (``full_walk.py``, ``targeted_walk.py``), ``page_writer.py`` writes and records,
``verdict.py`` decides how it ends, ``boundary.py`` what an error means. Usable without kopf:
give it the API, optional etcd, the spec, the progress to resume from, and a sink. Every page
end is committed; Full publishes each written page at once, so a killed operator writes at most
one page again, and Targeted on the status interval, since its redone pages are only read; an outage
keeps the phase and is waited out, never turned into Failed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from kms_storage_migrator.admission.policy import MutatingWebhookPolicy
from kms_storage_migrator.convergence.gate import Converged, GateResult
from kms_storage_migrator.kube import KubeApi
from kms_storage_migrator.migration.boundary import (
    InfrastructureUnavailable,
    MigrationFailed,
    MigrationStopped,
    ResourceAbandoned,
    at_phase_level,
)
from kms_storage_migrator.migration.converged_format import reconcile
from kms_storage_migrator.migration.discovery import discover
from kms_storage_migrator.migration.format_learning import FormatLearner
from kms_storage_migrator.migration.full_walk import FullWalk, adopt_etcd_checkpoint
from kms_storage_migrator.migration.guidance import advice_lines, what_to_do
from kms_storage_migrator.migration.key_gate import (
    KEY_CONVERGED,
    PREVIOUS_KEYS_IN_USE,
    KeyGate,
    decide_gate,
    previous_keys,
)
from kms_storage_migrator.migration.mutation_guard import MutationGuard
from kms_storage_migrator.migration.outage import OutageWatch
from kms_storage_migrator.migration.page_writer import PageWriter
from kms_storage_migrator.migration.plan import (
    MigrationSpec,
    Mode,
    PinnedMode,
    PlanError,
    pin_mode,
)
from kms_storage_migrator.migration.ports import ApiPort, EtcdPort
from kms_storage_migrator.migration.preflight_gate import (
    ALL_PASSED,
    PREFLIGHT_PASSED,
    decide_preflight,
    notes,
)
from kms_storage_migrator.migration.progress import (
    MigrationProgress,
    Phase,
    ResourcePhase,
    ResourceProgress,
    Verification,
    VerificationResult,
    set_condition,
)
from kms_storage_migrator.migration.ratelimit import AdaptiveRateLimiter, RetryableFailure
from kms_storage_migrator.migration.resource_choice import ServedResource
from kms_storage_migrator.migration.rewrite import RewriteMethod, Rewriter
from kms_storage_migrator.migration.status_publisher import (
    STATUS_INTERVAL_SECONDS,
    FailureList,
    MigrationObserver,
    MigrationSink,
    NullObserver,
    StatusPublisher,
    utc_now,
)
from kms_storage_migrator.migration.suspension import MigrationSuspended
from kms_storage_migrator.migration.targeted_walk import TargetedWalk
from kms_storage_migrator.migration.verdict import Verdict, decide, failed_resources
from kms_storage_migrator.migration.verify import resource_index, verify_resources
from kms_storage_migrator.migration.walk import Walk
from kms_storage_migrator.preflight.findings import Finding
from kms_storage_migrator.preflight.survey import PreflightSurvey
from kms_storage_migrator.storage.etcd import EtcdReader
from kms_storage_migrator.storage.keys import DEFAULT_ROOT, EtcdRoot, etcd_prefix
from kms_storage_migrator.storage.write_format import WriteFormat

log = logging.getLogger(__name__)

# Phases in the order a migration reaches them: a resumed run never publishes an earlier one.
PHASE_ORDER = (
    Phase.PENDING,
    Phase.DISCOVERING,
    Phase.PREFLIGHT,
    Phase.WAITING_FOR_KEY,
    Phase.SCANNING,
    Phase.MIGRATING,
    Phase.VERIFYING,
)


class PreflightChecks(Protocol):
    """What could stop the migration, asked before any write (``preflight.survey``)."""

    async def run(
        self,
        resources: Sequence[ServedResource],
        reference: WriteFormat | None,
        mutating_webhooks: MutatingWebhookPolicy,
        *,
        secrets_exposure: bool,
        aggregated: Sequence[tuple[str, str]],
    ) -> list[Finding]: ...


def live_checks(api: ApiPort, etcd: EtcdPort | None, root: EtcdRoot) -> PreflightChecks | None:
    """The real cluster's checks when talking to a real apiserver; None for in-memory stand-ins
    (their tests pass ``preflight=`` when they want the phase)."""
    if not isinstance(api, KubeApi):
        return None
    reader = etcd if isinstance(etcd, EtcdReader) else None
    return PreflightSurvey(api, reader, root=root, wait_out_outages=True)


@dataclass(frozen=True)
class Step:
    phase: Phase  # skipped when a resumed migration has already passed it
    run: Callable[[], Awaitable[None]]


class MigrationRunner:
    def __init__(
        self,
        api: ApiPort,
        spec: MigrationSpec,
        progress: MigrationProgress,
        sink: MigrationSink,
        *,
        etcd: EtcdPort | None = None,
        observer: MigrationObserver | None = None,
        cr_key: str | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        should_suspend: Callable[[], bool] = lambda: False,
        method: RewriteMethod = RewriteMethod.MERGE_PATCH,
        generation: int | None = None,
        status_interval: float = STATUS_INTERVAL_SECONDS,
        etcd_prefix: EtcdRoot = DEFAULT_ROOT,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        gate: KeyGate | None = None,
        created_at: datetime | None = None,
        preflight: PreflightChecks | None = None,
        failures: FailureList | None = None,
    ) -> None:
        self.progress = progress
        self._preflight = preflight or live_checks(api, etcd, etcd_prefix)
        # None: no gate (a caller that knows the key cannot change, e.g. in-memory tests).
        self._gate = gate
        # The gate counts KMS Status polls after this moment: the apiserver's own stamp when
        # known (the metrics carry its clock), else our recorded start.
        self._created_at = created_at
        self._sleep = sleep
        self._api = api
        self._spec = spec
        self._sink = sink
        self._etcd = etcd
        self._cr_key = cr_key  # our own CR's etcd key: its stored form is the reference format
        self._should_stop = should_stop
        self._should_suspend = should_suspend
        self._generation = generation
        self._root = etcd_prefix
        watcher: MigrationObserver = observer or NullObserver()
        self._publisher = StatusPublisher(
            progress, sink, watcher, interval=status_interval, failures=failures
        )
        limiter = AdaptiveRateLimiter(spec.qps)
        rewriter = Rewriter(api, limiter, max_attempts=spec.max_attempts, method=method, observer=watcher)
        self._learner = FormatLearner(etcd, progress, etcd_prefix)
        self._writer = PageWriter(
            rewriter,
            progress,
            sink,
            watcher,
            self._learner,
            concurrency=spec.concurrency,
            root=etcd_prefix,
            should_stop=should_stop,
            # spec.mutatingWebhooks: what a mutating webhook that intercepts a write means for it.
            admission=MutationGuard(api, spec.mutating_webhooks),
            failures=failures,
        )
        self._full = FullWalk(api, limiter, watcher, progress, page_size=spec.page_size)
        self._targeted = (
            TargetedWalk(etcd, self._writer, self._learner, page_size=spec.page_size, root=etcd_prefix)
            if etcd is not None
            else None
        )
        self._outages = OutageWatch(
            api,
            etcd,
            probe_key=cr_key or etcd_prefix.base,
            progress=progress,
            publisher=self._publisher,
            sink=sink,
            sleep=sleep,
            check_stop=self._writer.check_stop,
        )
        self._mode = Mode.FULL
        self._served: dict[str, ServedResource] = {}
        self._converged: dict[str, str] = {}  # provider -> key id hash, after the gate
        # Set when the gate passes: the next status stored is under the converged key, and our
        # CR as etcd then holds it is the reference format (see _publish).
        self._reference_due = False

    # ---- the driver ---------------------------------------------------------------------------

    async def run(self) -> MigrationProgress:
        progress = self.progress
        if progress.phase in (Phase.SUCCEEDED, Phase.FAILED):
            return progress
        progress.start_time = progress.start_time or utc_now()
        progress.observed_generation = self._generation
        async with self._publisher.ticking():
            while True:
                try:
                    await self._run_steps()
                    return progress
                except Exception as error:
                    meaning = at_phase_level(error)
                    if meaning is None or isinstance(meaning, MigrationStopped):
                        raise
                    if isinstance(meaning, MigrationFailed):
                        await self._finish(Verdict(Phase.FAILED, "Failed", str(meaning)))
                        return progress
                    assert isinstance(meaning, InfrastructureUnavailable)
                    outage = meaning
                # Outside the handler: the wait's own probes may fail again, and are its business.
                await self._outages.wait_out(outage)

    def _steps(self) -> list[Step]:
        if self._mode is Mode.VERIFY_ONLY:
            return [Step(Phase.VERIFYING, self._verify)]
        steps = [Step(Phase.PREFLIGHT, self._check)] if self._preflight is not None else []
        steps.append(Step(Phase.WAITING_FOR_KEY, self._await_key))
        if self._mode is Mode.TARGETED:
            steps.append(Step(Phase.SCANNING, self._scan))
        return [*steps, Step(Phase.MIGRATING, self._migrate), Step(Phase.VERIFYING, self._verify)]

    async def _run_steps(self) -> None:
        pinned = pin_mode(self._spec.mode, self._etcd is not None, self.progress.mode)
        self._mode = pinned.mode
        reached = self.progress.phase
        self._check_suspend()
        await self._discover()
        if pinned.converted_from is not None:
            await self._convert_checkpoints(pinned)
        self.progress.mode = self._mode.value
        for step in self._steps():
            if PHASE_ORDER.index(step.phase) >= PHASE_ORDER.index(reached):
                self._check_suspend()
                await step.run()
                await self._outages.settled()

    # ---- the steps ----------------------------------------------------------------------------

    async def _discover(self) -> None:
        await self._enter(
            Phase.DISCOVERING, f"discovering resource types ({self._spec.selection.describe()})"
        )
        await self._learner.learn_reference(self._cr_key)
        result = await discover(self._api, self._spec.selection)
        if not result.chosen:
            raise PlanError(
                f"spec.resources: the selection matches no served resource that can be migrated "
                f"({self._spec.selection.describe()})"
            )
        self._served = {r.name: r for r in result.chosen}
        self._writer.index = resource_index(result.chosen)
        if self._targeted is not None:
            self._targeted.index = self._writer.index
        self.progress.track(result.chosen, result.dropped)
        if self._mode is Mode.FULL:
            await self._full.prepare(self._pending())
        # No publish of its own: every step begins by entering its phase, which publishes what
        # discovery found with it (a publish here printed a second, identical `get -w` row).

    async def _convert_checkpoints(self, pinned: PinnedMode) -> None:
        """Targeted -> Full: an etcd key checkpoint becomes the list position it names."""
        for entry, served in self._pending():
            adopt_etcd_checkpoint(
                entry, etcd_prefix(served.group, served.resource, self._writer.index, root=self._root)
            )
        message = (
            f"started as {pinned.converted_from}, resumed without etcd access: continuing as {pinned.mode} "
            "after the same checkpoints (objects already done are not written again)"
        )
        log.warning("%s", message)
        await self._sink.event("Warning", "ModeConverted", message)

    async def _check(self) -> None:
        """Preflight: before any write, what could stop the migration; a failure stops it here."""
        assert self._preflight is not None  # the step exists only with checks
        await self._enter(
            Phase.PREFLIGHT, f"checking what could stop the migration of {len(self._served)} resource types"
        )
        findings = await self._preflight.run(
            list(self._served.values()),
            self._learner.reference,
            self._spec.mutating_webhooks,
            # Full lists Secret metadata anyway; Targeted never does, and must not start here.
            secrets_exposure=self._mode is Mode.FULL,
            aggregated=[(d.name, d.reason) for d in self.progress.dropped if d.aggregated],
        )
        outcome = decide_preflight(findings, self._spec.preflight, len(self._served))
        self.progress.preflight = notes(findings)
        self._set_condition(PREFLIGHT_PASSED, outcome.passed, outcome.reason, outcome.message)
        for name, why in outcome.failed_resources.items():
            entry = self.progress.resource(name)
            if entry is not None and entry.phase is not ResourcePhase.DONE:
                entry.phase = ResourcePhase.FAILED
                entry.message = f"preflight: {why}"
        kind = "Normal" if outcome.reason == ALL_PASSED else "Warning"  # warnings are news too
        await self._sink.event(kind, outcome.reason, outcome.message)
        if not outcome.proceed:
            raise MigrationFailed(outcome.message)
        # The findings and condition go out with the next phase's first publish, a moment later.

    async def _await_key(self) -> None:
        # Stored only while the gate waits (its answers name the laggards); its pass is stored
        # with the next phase. Entry and pass stores printed the same `get sm -w` row again.
        await self._enter(
            Phase.WAITING_FOR_KEY,
            "waiting until every apiserver writes with the KMS's current key",
            publish=False,
        )
        await self._pass_gate(None)

    async def _pass_gate(self, message_after: str | None) -> None:
        """Block until the apiservers converge; Failed with the laggards named on timeout.

        The phase entered just before is stored by the gate's first publish: one `get sm -w`
        row, not one for the entry and another for the pass. ``message_after``: the phase's
        message once passed, stored at once; None: stored with the next phase's entry.
        """
        if self._gate is None:
            if message_after is not None:  # a phase that lasts: show it (no wait ahead: skip)
                self.progress.message = message_after
                await self._publisher.publish(force=True)
            return
        started = self._started_at()
        timeout = self._spec.key_convergence_timeout

        async def show(result: GateResult) -> None:
            converged = isinstance(result, Converged)
            self._set_condition(KEY_CONVERGED, converged, result.reason, result.message)
            if not converged:  # converged: the pass below publishes, once
                self.progress.message = result.message
                await self._publisher.publish(force=True)

        result = await self._gate.wait(started, timeout, show)
        since = (datetime.now(UTC) - started).total_seconds()
        outcome = decide_gate(result, seconds_since_start=since, timeout_seconds=timeout)
        self._set_condition(KEY_CONVERGED, outcome.converged, outcome.reason, outcome.message)
        await self._sink.event("Normal" if outcome.proceed else "Warning", outcome.reason, outcome.message)
        if not outcome.proceed:
            raise MigrationFailed(outcome.message)
        if outcome.wait_seconds > 0:
            self.progress.message = outcome.message
            await self._publisher.publish(force=True)
            await self._sleep(outcome.wait_seconds)
        self._converged = outcome.key_id_hashes or {}
        self._reference_due = True
        if message_after is not None:
            self.progress.message = message_after
            await self._publish()

    def _set_condition(self, kind: str, status: bool, reason: str, message: str) -> None:
        self.progress.conditions = set_condition(
            self.progress.conditions, kind, status=status, reason=reason, message=message, now=utc_now()
        )

    def _started_at(self) -> datetime:
        if self._created_at is not None:
            return self._created_at
        start = self.progress.start_time or utc_now()
        return datetime.fromisoformat(start.replace("Z", "+00:00"))

    async def _scan(self) -> None:
        assert self._targeted is not None  # Targeted mode needs etcd (pin_mode)
        await self._enter(
            Phase.SCANNING,
            f"learning the write format and counting keys of {len(self._served)} resource types",
        )
        await self._targeted.prepare(self._pending())
        await self._publisher.publish(force=True)

    async def _migrate(self) -> None:
        walk: Walk = self._targeted if self._mode is Mode.TARGETED and self._targeted else self._full
        total = sum(max(r.estimate, r.counts.done) for r in self.progress.resources)
        await self._enter(
            Phase.MIGRATING, f"rewriting objects of {len(self._served)} resource types (~{total} objects)"
        )
        for entry, served in self._pending():
            entry.phase = ResourcePhase.MIGRATING
            self.progress.rewind(entry)
            try:
                await self._walk_resource(walk, entry, served)
            except ResourceAbandoned as reason:
                entry.phase = ResourcePhase.FAILED
                entry.message = str(reason)
                await self._writer.announce()  # the failures that led to it are final
                advice = (
                    what_to_do("Forbidden", str(reason), entry.name) if "forbidden" in str(reason) else ""
                )
                skipped = f"{entry.name}: {reason}" + (f"; what to do: {advice}" if advice else "")
                await self._sink.event("Warning", "ResourceSkipped", skipped)
            await self._publisher.publish(force=True)

    async def _walk_resource(self, walk: Walk, entry: ResourceProgress, served: ServedResource) -> None:
        try:
            async for page in walk.pages(entry, served):
                self._writer.check_stop()
                written = await self._writer.write(entry, page.targets)
                if written.exhausted:
                    # Retries that ran out during an outage are no outcome: redo the page later.
                    await self._outages.require_available()
                    # Both answer now, but the outage may have ended only while the page ran:
                    # write it once more before its failures count (the first try's outcomes
                    # are dropped, so each object is still counted once).
                    self.progress.rewind(entry)
                    written = await self._writer.write(entry, page.targets)
                    if written.exhausted:
                        await self._outages.require_available()
                self._writer.record_current(entry, page.current)
                self._writer.record_unreadable(entry, page.unreadable)
                entry.commit(continue_token=page.continue_token, last_key=page.last_key)
                await self._writer.announce()
                if page.final:
                    entry.phase = ResourcePhase.DONE
                # Full: a page that wrote something is stored at once, or a crash writes it
                # again. Targeted: a redone page is only read again, so its progress goes out
                # with the publisher's interval. A status PATCH per page was +2-4% API writes on
                # 10%-stale data, and most of what Targeted spent with nothing stale.
                wrote = bool(page.targets or page.unreadable)
                await self._publisher.publish(force=page.final or (wrote and walk.redo_writes))
                await self._outages.settled()
                self._check_suspend()  # the page is committed: a suspended run resumes after it
        except RetryableFailure as failure:
            await self._outages.require_available()  # an outage, or this resource alone fails
            raise ResourceAbandoned(f"cannot list: {failure}") from failure

    async def _verify(self) -> None:
        if self._etcd is None:
            self.progress.verification = Verification(
                VerificationResult.UNVERIFIED,
                message="no etcd access: the result is unverified (give the operator --etcd-config)",
            )
            await self._finish(decide(self.progress, None, self._mode))
            return
        reading = "reading every selected object back from etcd"
        await self._enter(Phase.VERIFYING, reading, publish=False)
        # Again before judging: a key rotated during the rewrite makes "current" another key.
        await self._pass_gate(reading)
        resources = []
        overruled = []
        for name, served in self._served.items():
            # The converged key is "current"; a learnt format under another key is overruled.
            judged = reconcile(
                name, self._learner.expected(self._entry(name)), self._learner.reference, self._converged
            )
            resources.append((served, judged.expected))
            if judged.note:
                overruled.append(judged.note)
                log.warning("%s", judged.note)
        report = await verify_resources(
            self._etcd,
            resources,
            self._writer.index,
            self._spec.page_size,
            reference=self._learner.reference,
            failed=failed_resources(self.progress),
            should_stop=self._should_stop,
            root=self._root,
            clean=self._targeted.clean if self._targeted is not None else None,
        )
        self._writer.check_stop()
        verification = report.verification()
        if overruled:
            verification.message = "; ".join([verification.message, *overruled])
        self.progress.verification = verification
        in_use, reason, message = previous_keys(verification.keys_in_use, self.progress.key_id)
        self._set_condition(PREVIOUS_KEYS_IN_USE, in_use, reason, message)
        await self._finish(decide(self.progress, report, self._mode))

    # ---- helpers ------------------------------------------------------------------------------

    def _check_suspend(self) -> None:
        """Leave at a boundary (page committed, or between steps) when spec.suspend is set."""
        if self._should_suspend():
            raise MigrationSuspended("spec.suspend is true")

    def _pending(self) -> list[tuple[ResourceProgress, ServedResource]]:
        return [
            (entry, self._served[entry.name])
            for entry in self.progress.resources
            if entry.name in self._served and entry.phase not in (ResourcePhase.DONE, ResourcePhase.FAILED)
        ]

    def _entry(self, name: str) -> ResourceProgress:
        found = self.progress.resource(name)
        assert found is not None
        return found

    async def _publish(self) -> None:
        """Store the status now; the first store after the key gate passed teaches the reference.

        Our CR was read at discovery, maybe under the old key; a status stored once every
        apiserver writes with the current key is stored with it: that is the reference format
        (and keyId) every object is judged against.
        """
        await self._publisher.publish(force=True)
        if self._reference_due:
            self._reference_due = False
            self.progress.key_id = None
            await self._learner.learn_reference(self._cr_key)

    async def _enter(self, phase: Phase, message: str, *, publish: bool = True) -> None:
        """Set the phase; ``publish=False`` leaves storing it to the step's own first publish."""
        progress = self.progress
        if PHASE_ORDER.index(phase) < PHASE_ORDER.index(progress.phase):
            # A resumed run redoes discovery, but the phase reached says where to resume.
            progress.message = f"resuming in {progress.phase.value}: {message}"
            if publish:
                await self._publish()
            return
        changed = progress.phase is not phase
        progress.phase = phase
        progress.message = message
        if publish:
            await self._publish()
        if changed:
            await self._sink.event("Normal", phase.value, message)

    async def _finish(self, verdict: Verdict) -> None:
        progress = self.progress
        progress.completion_time = utc_now()
        kind = "Normal" if verdict.phase is Phase.SUCCEEDED else "Warning"
        advice = advice_lines((f.reason, f.message, f.resource) for f in progress.failures)
        event = "; ".join([verdict.message, *(f"what to do: {line}" for line in advice)])
        await self._sink.event(kind, verdict.phase.value, event)
        log.info("migration finished: %s (%s): %s", verdict.phase.value, verdict.reason, verdict.message)
        progress.phase = verdict.phase
        progress.message = verdict.message
        await self._publisher.publish_final()
