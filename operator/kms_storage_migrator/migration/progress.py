"""Progress of one migration: counters, checkpoints and the status document (pure, no I/O).

The status document is both what users read (``kubectl get sm``) and the checkpoint a
restarted operator resumes from, so :func:`to_status` and :func:`from_status` round-trip.
Counters committed at each page end travel with the checkpoint: a resumed run redoes at most
one page and never counts an object twice. Phases, failures and verification are in
``status_parts.py``, the conditions in ``conditions.py``; both are re-exported here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kms_storage_migrator.migration.conditions import derive_conditions, set_condition
from kms_storage_migrator.migration.outcome import Outcome
from kms_storage_migrator.migration.preflight_gate import PreflightNote
from kms_storage_migrator.migration.resource_choice import DroppedResource, ServedResource
from kms_storage_migrator.migration.status_parts import (
    ACTIVE_PHASES,
    MAX_EXAMPLES,
    MAX_FAILURES,
    MAX_MESSAGE,
    TERMINAL_PHASES,
    Failure,
    Phase,
    ResourcePhase,
    Verification,
    VerificationResult,
    clip,
    to_int,
)
from kms_storage_migrator.migration.suspension import SUSPENDED

__all__ = [
    "ACTIVE_PHASES",
    "MAX_EXAMPLES",
    "MAX_FAILURES",
    "MAX_MESSAGE",
    "TERMINAL_PHASES",
    "Checkpoint",
    "Counts",
    "Failure",
    "MigrationProgress",
    "Phase",
    "ResourcePhase",
    "ResourceProgress",
    "Totals",
    "Verification",
    "VerificationResult",
    "derive_conditions",
    "from_status",
    "set_condition",
    "sum_counts",
    "to_status",
]


@dataclass
class Counts:
    rewritten: int = 0
    unchanged: int = 0
    conflicts: int = 0
    gone: int = 0
    failed: int = 0
    retries: int = 0

    def record(self, outcome: Outcome, count: int = 1) -> None:
        """``count`` objects reached ``outcome``."""
        if outcome is Outcome.REWRITTEN:
            self.rewritten += count
        elif outcome is Outcome.UNCHANGED:
            self.unchanged += count
        elif outcome is Outcome.CONFLICT:
            self.conflicts += count
        elif outcome is Outcome.GONE:
            self.gone += count
        else:
            self.failed += count

    @property
    def done(self) -> int:
        """Objects that reached a final outcome (retries are attempts, not objects)."""
        return self.rewritten + self.unchanged + self.conflicts + self.gone + self.failed

    def plus(self, other: Counts) -> Counts:
        return Counts(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self)}
        )

    def copy(self) -> Counts:
        return dataclasses.replace(self)

    def to_status(self) -> dict[str, int]:
        # Not dataclasses.asdict: it deep-copies field by field, and status is built from every
        # resource's counts (twice each) on every publish; it was 5% of a Targeted run's CPU.
        return dict(self.__dict__)

    @classmethod
    def from_status(cls, document: Mapping[str, Any]) -> Counts:
        return cls(**{f.name: to_int(document.get(f.name)) for f in dataclasses.fields(cls)})


@dataclass
class Checkpoint:
    """Where a resource's walk resumes, and the counts as of that point."""

    continue_token: str | None = None  # Full mode: the list page still to do
    last_key: str | None = None  # Targeted mode: the last etcd key done
    counts: Counts = field(default_factory=Counts)

    def to_status(self) -> dict[str, Any]:
        document: dict[str, Any] = {"counts": self.counts.to_status()}
        if self.continue_token:
            document["continue"] = self.continue_token
        if self.last_key:
            document["lastKey"] = self.last_key
        return document

    @classmethod
    def from_status(cls, document: Mapping[str, Any]) -> Checkpoint:
        return cls(
            continue_token=document.get("continue") or None,
            last_key=document.get("lastKey") or None,
            counts=Counts.from_status(document.get("counts") or {}),
        )


@dataclass
class ResourceProgress:
    group: str
    version: str
    resource: str
    phase: ResourcePhase = ResourcePhase.PENDING
    estimate: int = 0  # objects this resource is expected to take (listed or found stale)
    scanned: int = 0  # etcd keys seen in the last scan
    write_format: str | None = None  # WriteFormat.label of how the apiserver writes it now (read back)
    counts: Counts = field(default_factory=Counts)
    checkpoint: Checkpoint = field(default_factory=Checkpoint)
    message: str = ""

    @property
    def name(self) -> str:
        return f"{self.group or 'core'}/{self.resource}"

    def commit(self, *, continue_token: str | None = None, last_key: str | None = None) -> None:
        """Record a page as done: the next run starts after it, with these counts."""
        self.checkpoint = Checkpoint(continue_token, last_key, self.counts.copy())

    def rewind(self) -> None:
        """Drop counts of a page that was not committed (the resumed run redoes it)."""
        self.counts = self.checkpoint.counts.copy()

    def to_status(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "name": self.name,
            "group": self.group,
            "version": self.version,
            "resource": self.resource,
            "phase": self.phase.value,
            "objectsTotal": self.estimate,
            **self.counts.to_status(),
        }
        if self.phase not in (ResourcePhase.DONE, ResourcePhase.FAILED):
            # Only an unfinished resource needs a resume point; finished ones keep status short.
            document["checkpoint"] = self.checkpoint.to_status()
        if self.scanned:
            document["scanned"] = self.scanned
        if self.write_format:
            document["writeFormat"] = self.write_format
        if self.message:
            document["message"] = clip(self.message)
        return document

    @classmethod
    def from_status(cls, document: Mapping[str, Any]) -> ResourceProgress:
        return cls(
            group=str(document.get("group") or ""),
            version=str(document.get("version") or ""),
            resource=str(document.get("resource") or ""),
            phase=ResourcePhase(document.get("phase") or ResourcePhase.PENDING),
            estimate=to_int(document.get("objectsTotal")),
            scanned=to_int(document.get("scanned")),
            write_format=document.get("writeFormat") or None,
            counts=Counts.from_status(document),
            checkpoint=Checkpoint.from_status(document.get("checkpoint") or {}),
            message=str(document.get("message") or ""),
        )


@dataclass
class Totals:
    objects_total: int
    counts: Counts
    remaining: int
    percent: int

    def to_status(self) -> dict[str, int]:
        return {
            "objectsTotal": self.objects_total,
            **self.counts.to_status(),
            "remaining": self.remaining,
            "percent": self.percent,
        }


@dataclass
class MigrationProgress:
    """Everything the status says about one migration; mutated by the runner, rendered here."""

    phase: Phase = Phase.PENDING
    mode: str | None = None  # the effective mode (Auto resolved)
    message: str = ""
    observed_generation: int | None = None
    start_time: str | None = None
    completion_time: str | None = None
    resources: list[ResourceProgress] = field(default_factory=list)
    dropped: list[DroppedResource] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    failures_total: int = 0
    key_id: str | None = None
    verification: Verification | None = None
    conditions: list[dict[str, Any]] = field(default_factory=list)
    # spec.suspend took effect: status shows phase Suspended, ``phase`` keeps the one to resume in.
    suspended: bool = False
    rate: float | None = None  # objects per second over the last minute, while migrating
    eta: str | None = None  # e.g. "3m10s"; None while unknown
    preflight: list[PreflightNote] = field(default_factory=list)  # what the Preflight phase found

    def track(self, chosen: Sequence[ServedResource], dropped: Sequence[DroppedResource]) -> None:
        """Adopt what discovery chose: new types start Pending, types no longer served are Done."""
        self.dropped = list(dropped)
        known = {r.name for r in self.resources}
        self.resources += [
            ResourceProgress(s.group, s.version, s.resource) for s in chosen if s.name not in known
        ]
        served = {s.name for s in chosen}
        for entry in self.resources:
            if entry.name not in served and entry.phase not in (ResourcePhase.DONE, ResourcePhase.FAILED):
                entry.phase = ResourcePhase.DONE
                entry.message = "no longer served"
        self.resources.sort(key=lambda r: r.name)

    def record_failure(self, failure: Failure) -> None:
        self.failures_total += 1
        if len(self.failures) < MAX_FAILURES:
            self.failures.append(failure)

    def rewind(self, entry: ResourceProgress) -> None:
        """Drop what a resource's uncommitted page recorded, failures included (it is redone).

        ``failures`` only ever grows by appending, so the resource's first entries are the ones
        recorded before its checkpoint; ``failuresTotal`` is the sum of the failed counters.
        """
        entry.rewind()
        keep = entry.counts.failed
        kept: list[Failure] = []
        for failure in self.failures:
            if failure.resource == entry.name:
                if keep <= 0:
                    continue
                keep -= 1
            kept.append(failure)
        self.failures = kept
        self.failures_total = sum(r.counts.failed for r in self.resources)

    def resource(self, name: str) -> ResourceProgress | None:
        return next((r for r in self.resources if r.name == name), None)

    def totals(self) -> Totals:
        counts = sum_counts(r.counts for r in self.resources)
        # An estimate can trail reality (objects created meanwhile): never below what is done.
        objects_total = sum(max(r.estimate, r.counts.done) for r in self.resources)
        remaining = max(0, objects_total - counts.done)
        if self.phase is Phase.SUCCEEDED:
            percent = 100
        elif objects_total:
            percent = min(99, counts.done * 100 // objects_total)
        else:
            percent = 0
        return Totals(objects_total, counts, remaining, percent)


def sum_counts(counts: Iterable[Counts]) -> Counts:
    total = Counts()
    for item in counts:
        total = total.plus(item)
    return total


def to_status(progress: MigrationProgress, now: str) -> dict[str, Any]:
    """The whole status document (what a merge patch of /status sends)."""
    totals = progress.totals()
    progress.conditions = derive_conditions(progress, now)
    document: dict[str, Any] = {
        "phase": SUSPENDED if progress.suspended else progress.phase.value,
        "suspendedPhase": progress.phase.value if progress.suspended else None,
        "rate": progress.rate,
        "eta": progress.eta or None,
        "message": clip(progress.message),
        "progress": f"{totals.percent}%",
        "totals": totals.to_status(),
        "resources": [r.to_status() for r in progress.resources],
        "dropped": [d.to_status() for d in progress.dropped],
        "failures": [f.to_status() for f in progress.failures],
        "failuresTotal": progress.failures_total,
        "conditions": progress.conditions,
        "mode": progress.mode,
        "observedGeneration": progress.observed_generation,
        "startTime": progress.start_time,
        "completionTime": progress.completion_time,
        "keyId": progress.key_id,
        "verification": progress.verification.to_status() if progress.verification else None,
        "preflight": [note.to_status() for note in progress.preflight] or None,
    }
    # A merge patch deletes keys sent as null: unset fields clear stale values from a past run.
    return document


def from_status(status: Mapping[str, Any] | None) -> MigrationProgress:
    """Rebuild progress from a stored status (resume after a restart); tolerant of missing fields."""
    status = status or {}
    phase_text = status.get("phase") or Phase.PENDING
    suspended = phase_text == SUSPENDED
    if suspended:
        phase_text = status.get("suspendedPhase") or Phase.PENDING
    phase = Phase(phase_text) if phase_text in Phase._value2member_map_ else Phase.PENDING
    generation = status.get("observedGeneration")
    verification = status.get("verification")
    return MigrationProgress(
        phase=phase,
        mode=status.get("mode") or None,
        message=str(status.get("message") or ""),
        observed_generation=int(generation) if generation is not None else None,
        start_time=status.get("startTime") or None,
        completion_time=status.get("completionTime") or None,
        resources=[ResourceProgress.from_status(r) for r in status.get("resources") or []],
        dropped=[
            DroppedResource(str(d.get("name")), str(d.get("reason"))) for d in status.get("dropped") or []
        ],
        failures=[Failure.from_status(f) for f in status.get("failures") or []],
        failures_total=to_int(status.get("failuresTotal")),
        key_id=status.get("keyId") or None,
        verification=Verification.from_status(verification) if verification else None,
        conditions=[dict(c) for c in status.get("conditions") or []],
        suspended=suspended,
        rate=_rate(status.get("rate")),
        eta=status.get("eta") or None,
        preflight=[
            PreflightNote.from_status(n) for n in status.get("preflight") or [] if isinstance(n, Mapping)
        ],
    )


def _rate(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
