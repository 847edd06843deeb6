"""May the operator list and patch each selected resource? Judged from access reviews. Pure.

One question pair first: list and patch on ``*`` in ``*``. RBAC answers it yes only for a
wildcard rule, which covers every resource, so the common case costs two reviews. Otherwise
each selected resource is asked about, and each one the operator may not list or patch is a
failing finding for that resource alone (it is marked Failed before any write; the others go on).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kms_storage_migrator.preflight.findings import AccessAnswer, Finding, Permission, Verdict

PERMISSIONS_CHECK = "permissions"
VERBS = ("list", "patch")
WHY = {"list": "metadata-only list pages", "patch": "the no-op write"}


@dataclass(frozen=True)
class SelectedResource:
    """A resource the migration would write, as the access review names it."""

    group: str  # "" for the core group
    resource: str

    @property
    def name(self) -> str:
        return f"{self.group or 'core'}/{self.resource}"


def wildcard_permissions() -> list[Permission]:
    return [Permission(verb, "*", "*", WHY[verb]) for verb in VERBS]


def resource_permissions(selected: SelectedResource) -> list[Permission]:
    return [Permission(verb, selected.group, selected.resource, WHY[verb]) for verb in VERBS]


def covered_by_wildcard(answers: Sequence[AccessAnswer]) -> bool:
    return bool(answers) and all(a.allowed for a in answers)


def judge_wildcard(subject: str) -> Finding:
    return Finding(PERMISSIONS_CHECK, Verdict.OK, f"{subject} may list and patch every resource (*/*)")


def judge_resource_access(
    selected: SelectedResource, answers: Iterable[AccessAnswer], subject: str
) -> Finding | None:
    """A failing finding for a resource the operator may not list or patch; None when it may."""
    denied = [a for a in answers if not a.allowed]
    if not denied:
        return None
    unasked = [a for a in denied if not a.checked]
    if unasked and len(unasked) == len(denied):
        # The review itself was refused: no answer about the resource, so no reason to drop it.
        return Finding(
            f"{PERMISSIONS_CHECK} {selected.name}",
            Verdict.WARN,
            f"cannot check whether {subject} may {'/'.join(a.permission.verb for a in unasked)} "
            f"{selected.name}: {unasked[0].reason}",
            "let the operator create selfsubjectaccessreviews (every authenticated user may by default)",
            resource=selected.name,
        )
    verbs = " or ".join(a.permission.verb for a in denied)
    reasons = "; ".join(a.reason for a in denied if a.reason)
    detail = f"{subject} may not {verbs} {selected.name}" + (f" ({reasons})" if reasons else "")
    return Finding(
        f"{PERMISSIONS_CHECK} {selected.name}",
        Verdict.FAIL,
        detail + ": it is not written",
        f"grant verbs [list, patch] on {selected.resource} in apiGroup '{selected.group}' in the "
        "operator's ClusterRole, or exclude it in spec.resources.exclude",
        resource=selected.name,
    )


def judge_access_summary(subject: str, checked: int, refused: int) -> Finding:
    """The pass line when there is no wildcard rule: how many resources may be written."""
    # Always a pass line: each refused resource has its own failing finding already.
    return Finding(
        PERMISSIONS_CHECK,
        Verdict.OK,
        f"{subject} may list and patch {checked - refused} of {checked} selected resources "
        "(no wildcard rule: asked one by one)",
    )
