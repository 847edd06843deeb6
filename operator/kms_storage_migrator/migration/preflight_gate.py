"""What the preflight findings mean for the migration: go on, fail, or drop resources. Pure.

The findings come from ``preflight/`` (the same checks the ``preflight`` command prints); here
is only the decision and the short, bounded form the status keeps (``status.preflight``):

- a failing finding about the whole cluster (nothing to migrate to, etcd unusable) ends the
  migration Failed before any write;
- a failing finding about one selected resource (the operator may not list or patch it, its
  conversion webhook fails) marks that resource Failed before any write; the others migrate,
  and the migration ends Failed naming it (unless every selected resource failed: then at once);
- warnings stop the migration only with ``spec.preflight: Enforce``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kms_storage_migrator.migration.plan import PreflightPolicy
from kms_storage_migrator.preflight.findings import Finding, Verdict

PREFLIGHT_PASSED = "PreflightPassed"
ALL_PASSED = "AllChecksPassed"
MAX_PREFLIGHT_NOTES = 20  # the CRD's maxItems for status.preflight
MAX_NOTE_MESSAGE = 300
MAX_CHECK = 128  # the CRD's maxLength for a check's name
MAX_NAMED = 3  # findings quoted in a condition or event message; the list has the rest

_ORDER = {Verdict.FAIL: 0, Verdict.WARN: 1, Verdict.OK: 2}


@dataclass(frozen=True)
class PreflightNote:
    """One finding as status keeps it: names and reasons only, never object data."""

    check: str
    verdict: str  # ok, warn or fail
    message: str

    def to_status(self) -> dict[str, str]:
        return {"check": self.check, "verdict": self.verdict, "message": self.message}

    @classmethod
    def from_status(cls, document: Mapping[str, Any]) -> PreflightNote:
        return cls(
            str(document.get("check") or ""),
            str(document.get("verdict") or ""),
            str(document.get("message") or ""),
        )


@dataclass(frozen=True)
class PreflightOutcome:
    proceed: bool
    passed: bool  # the PreflightPassed condition's status
    reason: str
    message: str
    failed_resources: dict[str, str] = field(default_factory=dict)  # name -> why, for its status


def describe(finding: Finding) -> str:
    """One line: what was found, then what to do."""
    text = f"{finding.check}: {finding.detail}"
    return f"{text}; what to do: {finding.what_to_do}" if finding.what_to_do else text


def notes(findings: Sequence[Finding]) -> list[PreflightNote]:
    """The status list: failures first, then warnings, then passes; at most 20 entries.

    When more findings than fit, the last entry says how many were left out and of which kind;
    every failed resource also carries its reason in its own status entry.
    """
    ordered = sorted(findings, key=lambda f: _ORDER[f.verdict])
    kept = ordered
    if len(ordered) > MAX_PREFLIGHT_NOTES:
        kept = ordered[: MAX_PREFLIGHT_NOTES - 1]
    result = [
        PreflightNote(_cut(f.check, MAX_CHECK), f.verdict.value.lower(), _cut(describe(f), MAX_NOTE_MESSAGE))
        for f in kept
    ]
    left = ordered[len(kept) :]
    if left:
        counts = {v: sum(f.verdict is v for f in left) for v in Verdict}
        worst = min((f.verdict for f in left), key=lambda v: _ORDER[v])
        summary = ", ".join(f"{n} {v.value.lower()}" for v, n in counts.items() if n)
        result.append(
            PreflightNote("more findings", worst.value.lower(), f"{len(left)} more not listed ({summary})")
        )
    return result


def decide_preflight(findings: Sequence[Finding], policy: PreflightPolicy, selected: int) -> PreflightOutcome:
    """Go on or not, the condition, and the resources that fail before any write."""
    fatal = [f for f in findings if f.verdict is Verdict.FAIL and not f.resource]
    refused = [f for f in findings if f.verdict is Verdict.FAIL and f.resource]
    warnings = [f for f in findings if f.verdict is Verdict.WARN]
    failed_resources: dict[str, str] = {}
    for finding in refused:
        reason = describe(finding)
        failed_resources[finding.resource] = (
            f"{failed_resources[finding.resource]}; {reason}"
            if finding.resource in failed_resources
            else reason
        )
    if fatal:
        return PreflightOutcome(
            False, False, "PreflightFailed", f"preflight failed, nothing was written: {_quote(fatal)}"
        )
    if policy is PreflightPolicy.ENFORCE and warnings:
        return PreflightOutcome(
            False,
            False,
            "WarningsEnforced",
            f"spec.preflight is Enforce and preflight warned, nothing was written: {_quote(warnings)}; "
            "fix what it names, or create a new StorageMigration with spec.preflight Warn to go on "
            "despite warnings",
        )
    if failed_resources and len(failed_resources) >= selected:
        return PreflightOutcome(
            False,
            False,
            "NoResourceCanBeMigrated",
            f"preflight failed for every selected resource, nothing was written: {_quote(refused)}",
            failed_resources,
        )
    if failed_resources:
        names = ", ".join(sorted(failed_resources)[:MAX_NAMED])
        more = len(failed_resources) - MAX_NAMED
        listed = names + (f" and {more} more" if more > 0 else "")
        return PreflightOutcome(
            True,
            False,
            "ResourcesFailed",
            f"{len(failed_resources)} selected resource(s) cannot be migrated and are marked Failed "
            f"before any write ({listed}); the others migrate: {_quote(refused)}",
            failed_resources,
        )
    if warnings:
        return PreflightOutcome(
            True,
            True,
            "PassedWithWarnings",
            f"{len(warnings)} warning(s), going on (spec.preflight Warn): {_quote(warnings)}",
        )
    return PreflightOutcome(True, True, ALL_PASSED, f"{len(findings)} check(s) passed")


def _quote(findings: Sequence[Finding]) -> str:
    quoted = "; ".join(describe(f) for f in findings[:MAX_NAMED])
    more = len(findings) - MAX_NAMED
    return quoted + (f" (and {more} more in status.preflight)" if more > 0 else "")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
