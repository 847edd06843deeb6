"""Preflight findings: what each check found and what to do about it, and the table. Pure.

Each check is judged here from plain answers (access reviews, the apiserver's /metrics text,
an etcd key count), so every verdict and its advice is unit-tested without a cluster;
``command.py`` only asks the questions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from kms_storage_migrator.convergence.metrics import MetricsFormatError, parse_apiserver_keys


class Verdict(StrEnum):
    OK = "OK"
    WARN = "WARN"  # may get in the way; stops a migration only with spec.preflight Enforce
    FAIL = "FAIL"


@dataclass(frozen=True)
class Finding:
    check: str
    verdict: Verdict
    detail: str
    what_to_do: str = ""
    # The selected resource (group/resource) this finding is about; a failing finding with a
    # resource stops only that resource, the others still migrate.
    resource: str = ""


@dataclass(frozen=True)
class Permission:
    """One permission the operator needs, as an access review asks it."""

    verb: str
    group: str
    resource: str
    why: str
    subresource: str = ""
    path: str = ""  # a non-resource URL (/metrics) instead of a resource

    @property
    def target(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource

    @property
    def label(self) -> str:
        if self.path:
            return f"{self.verb} {self.path}"
        return f"{self.verb} {self.group or 'core'}/{self.target}"

    @property
    def rule(self) -> str:
        """The ClusterRole rule that grants it, as a person would write it."""
        if self.path:
            return f"verbs [{self.verb}] on nonResourceURLs ['{self.path}']"
        return f"verbs [{self.verb}] on {self.target} in apiGroup '{self.group}'"


OPERATOR_GROUP = "kms-storage-migrator.io"
# The ClusterRole of docs/architecture.md ("RBAC the operator needs"), verb by verb.
OPERATOR_PERMISSIONS: tuple[Permission, ...] = (
    Permission("list", "*", "*", "metadata-only pages of every resource"),
    Permission("patch", "*", "*", "the no-op write of every object"),
    Permission("list", OPERATOR_GROUP, "storagemigrations", "kopf finds the migrations"),
    Permission("watch", OPERATOR_GROUP, "storagemigrations", "kopf follows them"),
    Permission("patch", OPERATOR_GROUP, "storagemigrations", "kopf's finalizer and annotations"),
    Permission("patch", OPERATOR_GROUP, "storagemigrations", "progress in status", subresource="status"),
    Permission("create", "", "events", "events on the StorageMigration"),
    Permission("get", "", "", "the key gate reads each apiserver's /metrics", path="/metrics"),
)


@dataclass(frozen=True)
class AccessAnswer:
    permission: Permission
    allowed: bool
    reason: str = ""  # the authorizer's reason, when it gives one
    checked: bool = True  # False: the review itself was refused, so ``allowed`` is no answer


def judge_access(answers: Iterable[AccessAnswer], subject: str) -> list[Finding]:
    findings = []
    for answer in answers:
        permission = answer.permission
        if answer.allowed:
            findings.append(Finding(f"RBAC {permission.label}", Verdict.OK, permission.why))
            continue
        detail = f"{subject} may not {permission.label} ({permission.why})"
        if answer.reason:
            detail += f": {answer.reason}"
        findings.append(
            Finding(
                f"RBAC {permission.label}",
                Verdict.FAIL,
                detail,
                f"grant it in the operator's ClusterRole (the Helm chart's has it): {permission.rule}",
            )
        )
    return findings


ENCRYPTION_CHECK = "encryption provider"


def judge_encryption(metrics_text: str) -> Finding:
    """Is there a KMS v2 provider to migrate to? Judged from the apiserver's own /metrics."""
    try:
        apiservers = parse_apiserver_keys(metrics_text)
    except MetricsFormatError as error:
        return Finding(ENCRYPTION_CHECK, Verdict.FAIL, str(error), "check that /metrics is the apiserver's")
    providers = sorted(
        {
            provider.provider_name
            for keys in apiservers.values()
            for provider in keys.providers
            if provider.latest_status is not None or provider.latest_write is not None
        }
    )
    if providers:
        return Finding(ENCRYPTION_CHECK, Verdict.OK, f"KMS v2 provider(s) in use: {', '.join(providers)}")
    configured = "an encryption configuration is loaded, but " if apiservers else ""
    return Finding(
        ENCRYPTION_CHECK,
        Verdict.FAIL,
        f"{configured}no KMS v2 provider reports a key in /metrics: the apiserver writes without KMS v2, "
        "so a migration would rewrite objects into the same form",
        "configure --encryption-provider-config with a kms (apiVersion v2) provider first on every "
        "apiserver, then run the migration",
    )


METRICS_UNREADABLE = "cannot read the apiserver's /metrics"


def metrics_unreadable(error: str) -> Finding:
    return Finding(
        ENCRYPTION_CHECK,
        Verdict.FAIL,
        f"{METRICS_UNREADABLE}: {error}",
        "grant get on the nonResourceURL /metrics (the operator's key gate reads it too)",
    )


ETCD_CHECK = "etcd"


def judge_etcd(display: str, root: str, namespaces: int) -> Finding:
    """Reachable, and the prefix holds this cluster: every cluster stores its namespaces there."""
    if namespaces > 0:
        return Finding(ETCD_CHECK, Verdict.OK, f"{display}: {namespaces} namespaces under {root}/namespaces/")
    return Finding(
        ETCD_CHECK,
        Verdict.FAIL,
        f"{display} answers, but holds no namespaces under {root}/namespaces/: wrong prefix?",
        "give the apiserver's --etcd-prefix with --etcd-prefix",
    )


def etcd_unreachable(display: str, error: str) -> Finding:
    return Finding(
        ETCD_CHECK,
        Verdict.FAIL,
        f"{display}: {error}",
        "check the endpoints and client certificate (etcd.json), or run without etcd access (mode Full)",
    )


def exit_code(findings: Sequence[Finding]) -> int:
    return 1 if any(f.verdict is Verdict.FAIL for f in findings) else 0


def render_table(findings: Sequence[Finding]) -> str:
    """Plain columns: CHECK, RESULT, DETAIL, and the step to take under each warning or failure."""
    width = max((len(f.check) for f in findings), default=5)
    lines = [f"{'CHECK':<{width}}  RESULT  DETAIL"]
    for finding in findings:
        lines.append(f"{finding.check:<{width}}  {finding.verdict.value:<6}  {finding.detail}")
        if finding.what_to_do:
            lines.append(f"{'':<{width}}  {'':<6}  what to do: {finding.what_to_do}")
    failed = sum(f.verdict is Verdict.FAIL for f in findings)
    warned = sum(f.verdict is Verdict.WARN for f in findings)
    if failed or warned:
        lines.append(f"{failed} check(s) failed, {warned} warning(s)")
    else:
        lines.append("every check passed")
    return "\n".join(lines)
