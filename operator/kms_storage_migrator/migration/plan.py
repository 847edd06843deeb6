"""What a migration will do: the validated spec and the effective mode. Pure.

Which stored objects are stale is the other half of planning, in ``staleness.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from kms_storage_migrator.admission.policy import MutatingWebhookPolicy
from kms_storage_migrator.migration.durations import DurationError, parse_duration
from kms_storage_migrator.migration.selection import Selection, SelectionError, parse_selection

DEFAULT_CONCURRENCY = 8
DEFAULT_QPS = 50
DEFAULT_PAGE_SIZE = 100
DEFAULT_MAX_ATTEMPTS = 5
# Limits mirrored by the CRD schema; checked here too so the engine is safe without admission.
MAX_CONCURRENCY = 256
MAX_QPS = 10_000
MAX_PAGE_SIZE = 5_000
MAX_ATTEMPTS = 100


class Mode(StrEnum):
    AUTO = "Auto"  # Targeted with etcd access, Full without
    FULL = "Full"  # rewrite every object through the API
    TARGETED = "Targeted"  # rewrite only what the etcd scan finds stale
    VERIFY_ONLY = "VerifyOnly"  # scan and report; write nothing


class PreflightPolicy(StrEnum):
    """What a preflight warning does to the run (a failing check always stops it)."""

    WARN = "Warn"  # warnings are shown in status and events; the migration goes on
    ENFORCE = "Enforce"  # any warning ends the migration Failed before its first write


@dataclass(frozen=True)
class RunDefaults:
    """Operator-wide defaults (``run --concurrency/--qps``) for what a spec leaves unset."""

    concurrency: int = DEFAULT_CONCURRENCY
    qps: int = DEFAULT_QPS


# How long the gate waits for every apiserver to write with the KMS's current key (the CRD
# bounds it the same way): a Status poll is every 60 s, so under 10 s cannot even see one.
DEFAULT_KEY_CONVERGENCE_TIMEOUT = 600.0
MIN_KEY_CONVERGENCE_TIMEOUT = 10.0
MAX_KEY_CONVERGENCE_TIMEOUT = 24 * 3600.0
MAX_DURATION_LENGTH = 16  # the CRD's maxLength


_Choice = TypeVar("_Choice", bound=StrEnum)


class PlanError(ValueError):
    """The migration cannot run as specified; the message names the field or the cause."""


@dataclass(frozen=True)
class MigrationSpec:
    selection: Selection
    mode: Mode
    concurrency: int
    qps: int
    page_size: int
    max_attempts: int
    key_convergence_timeout: float = DEFAULT_KEY_CONVERGENCE_TIMEOUT
    preflight: PreflightPolicy = PreflightPolicy.WARN
    mutating_webhooks: MutatingWebhookPolicy = MutatingWebhookPolicy.REFUSE

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], defaults: RunDefaults | None = None) -> MigrationSpec:
        defaults = defaults or RunDefaults()
        if not isinstance(spec, Mapping):
            # kopf hands over whatever the object holds: a CRD without its schema admits anything.
            raise PlanError(f"spec: must be an object, got {type(spec).__name__}")
        resources = spec.get("resources") or {}
        if not isinstance(resources, Mapping):
            raise PlanError(
                "spec.resources: must be an object with include and exclude lists, "
                f"got {type(resources).__name__}"
            )
        try:
            selection = parse_selection(resources.get("include"), resources.get("exclude"))
        except SelectionError as error:
            raise PlanError(str(error)) from error
        return cls(
            selection=selection,
            mode=_choice(spec, "mode", Mode, Mode.AUTO),
            concurrency=_bounded(spec, "concurrency", defaults.concurrency, MAX_CONCURRENCY),
            qps=_bounded(spec, "qps", defaults.qps, MAX_QPS),
            page_size=_bounded(spec, "pageSize", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE),
            max_attempts=_bounded(spec, "maxAttemptsPerObject", DEFAULT_MAX_ATTEMPTS, MAX_ATTEMPTS),
            key_convergence_timeout=_timeout(spec.get("keyConvergenceTimeout", "10m")),
            preflight=_choice(spec, "preflight", PreflightPolicy, PreflightPolicy.WARN),
            mutating_webhooks=_choice(
                spec, "mutatingWebhooks", MutatingWebhookPolicy, MutatingWebhookPolicy.REFUSE
            ),
        )


def _choice(spec: Mapping[str, Any], name: str, choices: type[_Choice], default: _Choice) -> _Choice:
    # An empty string counts as unset, as it always has for spec.mode (old CRDs had no default).
    text = spec.get(name) or default.value
    if not isinstance(text, str) or text not in choices._value2member_map_:
        allowed = ", ".join(c.value for c in choices)
        raise PlanError(f"spec.{name}: {str(text)[:40]!r} is not one of {allowed}")
    return choices(text)


def _timeout(text: object) -> float:
    if isinstance(text, str) and len(text) > MAX_DURATION_LENGTH:
        # Also spares int() a number past Python's 4,300-digit limit (a ValueError of its own).
        raise PlanError(
            f"spec.keyConvergenceTimeout: at most {MAX_DURATION_LENGTH} characters, like '10m' or '1h30m'"
        )
    try:
        return parse_duration(
            "spec.keyConvergenceTimeout",
            text,
            minimum=MIN_KEY_CONVERGENCE_TIMEOUT,
            maximum=MAX_KEY_CONVERGENCE_TIMEOUT,
        )
    except DurationError as error:
        raise PlanError(str(error)) from error


def _bounded(spec: Mapping[str, Any], name: str, default: int, maximum: int) -> int:
    value = spec.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise PlanError(f"spec.{name}: must be a whole number from 1 to {maximum}, got {value!r}")
    return value


def resolve_mode(requested: Mode, etcd_available: bool) -> Mode:
    """The mode a migration really runs in; Targeted and VerifyOnly need etcd access."""
    if requested is Mode.AUTO:
        return Mode.TARGETED if etcd_available else Mode.FULL
    if requested in (Mode.TARGETED, Mode.VERIFY_ONLY) and not etcd_available:
        raise PlanError(
            f"spec.mode: {requested.value} needs read access to etcd; start the operator with "
            "--etcd-config (or the --etcd-* flags), or use mode Full"
        )
    return requested


@dataclass(frozen=True)
class PinnedMode:
    """The mode a (resumed) migration runs in, and whether its checkpoints need converting."""

    mode: Mode
    converted_from: Mode | None = None  # set when the checkpoints were written for this mode


def pin_mode(requested: Mode, etcd_available: bool, pinned: str | None) -> PinnedMode:
    """The stored mode wins over a new resolution of Auto: a checkpoint means one mode's walk.

    Full runs with or without etcd, so it stays Full. Targeted without etcd (access removed by an
    upgrade) cannot go on: an Auto migration converts to Full explicitly (the caller rewrites the
    checkpoints), a migration that asked for Targeted is refused.
    """
    if pinned is None:
        return PinnedMode(resolve_mode(requested, etcd_available))
    if pinned not in Mode._value2member_map_ or pinned == Mode.AUTO.value:
        raise PlanError(
            f"status.mode: {pinned!r} is not a mode this operator resumes; delete and recreate the "
            "StorageMigration to start over"
        )
    mode = Mode(pinned)
    if mode is Mode.FULL:
        return PinnedMode(Mode.FULL)
    if mode is Mode.TARGETED and not etcd_available and requested is Mode.AUTO:
        return PinnedMode(Mode.FULL, converted_from=Mode.TARGETED)
    return PinnedMode(resolve_mode(mode, etcd_available))
