"""What to do about a failed object, by the reason it failed: one line each. Pure.

The engine stores a failure's reason (the apiserver's Status reason, or the transient one whose
retries ran out) and a message kept free of object data (``kube.safe_message``). This table
turns them into the next step a person can take, shown by ``status``, in the Degraded
condition and in events. The texts name resources and webhooks only, never object content.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

ENCRYPTION_DOCS = "https://kubernetes.io/docs/tasks/administer-cluster/kms-provider/"
DECRYPT_DOCS = "https://kubernetes.io/docs/tasks/administer-cluster/encrypt-data/"

_WEBHOOK_DENIED = re.compile(r"denied by admission webhook (\S+)")
_WEBHOOK_UNREACHABLE = re.compile(r"admission webhook (\S+) could not be called")
_POLICY_DENIED = re.compile(r"denied by ValidatingAdmissionPolicy (\S+)")
# The mutation guard's failures (migration/mutation_guard.py, page_writer.py) name the webhook this way.
_MUTATING_WEBHOOK = re.compile(r"mutating (?:webhook|admission policy) ([^\s,:(]+)(?=[,:]| \()")
MUTATION_REASONS = frozenset({"MutatingWebhook", "MutatedByWebhook"})
# Answers that mean "the apiserver was busy or unreachable" until maxAttemptsPerObject ran out.
TRANSIENT_REASONS = frozenset(
    {"TooManyRequests", "ServiceUnavailable", "Timeout", "ConnectionError", "ServerTimeout", "Unauthorized"}
)


@dataclass(frozen=True)
class FailureContext:
    reason: str
    message: str
    resource: str  # group/resource as status names it, e.g. core/secrets


@dataclass(frozen=True)
class Rule:
    applies: Callable[[FailureContext], bool]
    advice: Callable[[FailureContext], str]


def _exclude(resource: str) -> str:
    return f"or add '{resource}' to spec.resources.exclude of a new migration"


def _webhook(pattern: re.Pattern[str], failure: FailureContext) -> str:
    found = pattern.search(failure.message)
    return found.group(1) if found else "?"


def _mutating_webhook_advice(failure: FailureContext) -> str:
    webhook = _webhook(_MUTATING_WEBHOOK, failure)
    if failure.reason == "MutatedByWebhook":
        return (
            f"admission ({webhook if webhook != '?' else 'a mutating webhook'}) changed the object on "
            "the operator's no-op write: check the fields named and put them back if wrong; then make "
            "the webhook leave unchanged objects unchanged, or skip the operator's writes"
        )
    what = "admission policy" if "mutating admission policy" in failure.message else "webhook"
    return (
        f"mutating {what} {webhook} could change the object on the operator's no-op write, so it was "
        f"not written: make the {what} skip the operator's writes with a namespaceSelector or "
        "objectSelector (the operator checks those), or with a matchCondition on "
        "request.userInfo.username plus spec.mutatingWebhooks: Allow (CEL is not checked); or set "
        "spec.mutatingWebhooks: Allow in a new migration once sure it leaves unchanged objects unchanged"
    )


RULES: tuple[Rule, ...] = (
    Rule(lambda f: f.reason in MUTATION_REASONS, _mutating_webhook_advice),
    Rule(
        lambda f: _WEBHOOK_DENIED.search(f.message) is not None,
        lambda f: (
            f"admission webhook {_webhook(_WEBHOOK_DENIED, f)} refuses the no-op write: let it allow "
            f"updates by the operator's ServiceAccount (kubectl get validatingwebhookconfigurations,"
            f"mutatingwebhookconfigurations), {_exclude(f.resource)}"
        ),
    ),
    Rule(
        lambda f: _WEBHOOK_UNREACHABLE.search(f.message) is not None,
        lambda f: (
            f"admission webhook {_webhook(_WEBHOOK_UNREACHABLE, f)} does not answer and its failurePolicy "
            "is Fail: fix its Service and endpoints, then run a new migration (objects done are skipped)"
        ),
    ),
    Rule(
        lambda f: _POLICY_DENIED.search(f.message) is not None,
        lambda f: (
            f"ValidatingAdmissionPolicy {_webhook(_POLICY_DENIED, f)} refuses the write: exempt the "
            f"operator's ServiceAccount in its binding, {_exclude(f.resource)}"
        ),
    ),
    Rule(
        lambda f: f.reason == "Forbidden",
        lambda f: (
            f"the operator may not patch {f.resource}: grant 'patch' on it to its ServiceAccount "
            f"(check with kubectl auth can-i patch {f.resource.removeprefix('core/')} --as=...), "
            f"{_exclude(f.resource)}"
        ),
    ),
    Rule(
        lambda f: f.reason == "Invalid",
        lambda f: (
            "the apiserver rejects the object as stored (a validation rule newer than the object): "
            "fix the fields named with kubectl edit, then run a new migration"
        ),
    ),
    Rule(
        # Targeted mode read the provider and key the object is under from etcd (page_writer.py).
        lambda f: f.reason == "CannotDecrypt",
        lambda _: (
            "the object is under a provider or key no longer in the EncryptionConfiguration: add it "
            "back as a secondary provider, restart the apiservers, run a new migration, then remove "
            f"it; see {DECRYPT_DOCS}"
        ),
    ),
    Rule(
        lambda f: f.reason == "StorageReadError",
        lambda _: (
            "the apiserver cannot decrypt or decode the stored value: it is under a provider or key "
            "no longer in the EncryptionConfiguration (restore it, migrate, then remove it) or "
            f"corrupt (delete and recreate the object); see {DECRYPT_DOCS}"
        ),
    ),
    Rule(
        lambda f: f.reason in {"InternalError", "HTTP500"},
        lambda _: (
            "the apiserver failed on this object (500): if its log says it cannot decrypt it, the "
            "object is under a KMS provider or key no longer configured (restore it, migrate, then "
            f"remove it; {ENCRYPTION_DOCS}); otherwise check the KMS plugin and run a new migration"
        ),
    ),
    Rule(
        lambda f: f.reason == "Conflict",
        lambda _: (
            "the object kept changing under every try: each of those writes re-encrypted it; "
            "confirm with kms-storage-migrator scan, nothing else to do"
        ),
    ),
    Rule(
        lambda f: f.reason == "NotFound",
        lambda _: "the object was deleted meanwhile: nothing to do",
    ),
    Rule(
        lambda f: f.reason in TRANSIENT_REASONS or f.reason == "exhausted",
        lambda f: (
            f"the apiserver kept answering {f.reason} until spec.maxAttemptsPerObject ran out: "
            "run a new migration with a lower spec.qps or more attempts when it is less busy"
        ),
    ),
)

FALLBACK = (
    "look up the object and the apiserver's log for this reason, fix the cause, then run a new "
    "migration (objects already current are skipped)"
)


def what_to_do(reason: str, message: str, resource: str) -> str:
    """The next step for one failure, in one line."""
    failure = FailureContext(reason, message, resource)
    rule = next((rule for rule in RULES if rule.applies(failure)), None)
    return rule.advice(failure) if rule else FALLBACK


def advice_lines(failures: Iterable[tuple[str, str, str]], limit: int = 5) -> list[str]:
    """'reason (resource): what to do' once per distinct advice, from (reason, message, resource)."""
    lines: dict[str, str] = {}
    for reason, message, resource in failures:
        advice = what_to_do(reason, message, resource)
        lines.setdefault(advice, f"{reason or 'failed'} ({resource}): {advice}")
    return list(lines.values())[:limit]
