"""Secrets whose data sits in kubectl's last-applied annotation: judged, and the one list that finds them.

``kubectl apply`` (client-side) copies the whole manifest, data included, into the
``kubectl.kubernetes.io/last-applied-configuration`` annotation, and metadata-only reads return
it: anyone who may list Secret metadata can read such a Secret's data. Measured on 1.37.2:
``kubectl apply --server-side`` on a Secret that already has the annotation rewrites it with
the new data (the apiserver keeps it current for client-side apply), so only removing it ends
the exposure; once removed, server-side apply does not add it back.

The judging is pure and names Secrets only by ``namespace/name``; :func:`exposed_secrets` is
the only I/O. It lists Secret metadata, which brings the annotations (dropped at parse, see
kube.py) into the process: a Targeted run, which otherwise never lists Secrets, must not call it.
"""

from __future__ import annotations

from collections.abc import Collection

from kms_storage_migrator.kube import LAST_APPLIED_ANNOTATION, KubeApi
from kms_storage_migrator.preflight.findings import Finding, Verdict

CHECK = "Secret data in annotations"
SECRETS_PATH = "/api/v1/secrets"
PAGE_SIZE = 500
EXAMPLES = 5  # names shown in one message; the count covers the rest
REASON = "SecretDataInAnnotation"  # the event's reason at the end of a Full run


def advice(names: Collection[str]) -> str:
    """What to do about such Secrets, with a command for the first one."""
    first = sorted(names)[0] if names else "NAMESPACE/NAME"
    namespace, _, name = first.rpartition("/")
    return (
        f"remove the copy, e.g. kubectl annotate secret -n {namespace or 'NAMESPACE'} {name} "
        f"{LAST_APPLIED_ANNOTATION}- (kubectl apply --server-side alone keeps it up to date, "
        "data included); create and update Secrets with kubectl apply --server-side or kubectl "
        "create, which do not add it"
    )


def describe(names: Collection[str]) -> str:
    """How many Secrets carry the copy, and the first few by name (never anything else)."""
    shown = sorted(names)[:EXAMPLES]
    more = f" and {len(names) - len(shown)} more" if len(names) > len(shown) else ""
    return (
        f"{len(names)} Secret(s) carry a copy of their data in the {LAST_APPLIED_ANNOTATION} "
        f"annotation ({', '.join(shown)}{more}): anyone who may list Secret metadata can read it"
    )


def judge_exposure(names: Collection[str]) -> Finding:
    """The preflight finding: WARN when any Secret carries its data in the annotation."""
    if not names:
        return Finding(CHECK, Verdict.OK, f"no Secret carries the {LAST_APPLIED_ANNOTATION} annotation")
    return Finding(CHECK, Verdict.WARN, describe(names), advice(names), resource="core/secrets")


def exposure_unknown(status: int, reason: str) -> Finding:
    """The finding when Secrets could not be listed: the check is advisory, the run goes on."""
    return Finding(
        CHECK,
        Verdict.WARN,
        f"could not list Secret metadata to look for the {LAST_APPLIED_ANNOTATION} annotation "
        f"(HTTP {status} {reason})",
        "a StorageReadError names a stored Secret the apiserver cannot read, which the migration "
        "reports as a failure of its own; otherwise check that the operator may list Secrets",
        resource="core/secrets",
    )


def full_run_notice(names: Collection[str]) -> str | None:
    """The event and log text at the end of a Full run that listed such Secrets (None: none did)."""
    if not names:
        return None
    return (
        f"{describe(names)}; this migration's metadata-only lists received it and dropped it "
        f"unread; what to do: {advice(names)}"
    )


def seen_by(api: object) -> frozenset[str]:
    """The Secrets a client's answers carried the annotation for (none for a stand-in client)."""
    return frozenset(api.secrets_with_last_applied) if isinstance(api, KubeApi) else frozenset()


async def exposed_secrets(api: KubeApi, *, page_size: int = PAGE_SIZE) -> list[str]:
    """``namespace/name`` of every Secret whose metadata carries the annotation, in name order.

    Lists all Secrets, metadata only; the annotation never leaves kube.py's parse.
    """
    listed: set[str] = set()
    token: str | None = None
    while True:
        page = await api.list_metadata(SECRETS_PATH, limit=page_size, continue_token=token)
        for item in page.get("items") or []:
            metadata = item.get("metadata") or {}
            listed.add(f"{metadata.get('namespace')}/{metadata.get('name')}")
        token = (page.get("metadata") or {}).get("continue") or None
        if token is None:
            break
    return sorted(listed & api.secrets_with_last_applied)
