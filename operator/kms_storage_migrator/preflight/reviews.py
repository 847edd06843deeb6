"""Access reviews: may the operator (or a ServiceAccount) do one thing? The I/O of the RBAC checks.

Used by the ``preflight`` command (the operator's whole ClusterRole) and by the migration's
Preflight phase (list and patch of each selected resource); the answers are judged in
``findings.py`` and ``resource_access.py``.
"""

from __future__ import annotations

from typing import Any

from kms_storage_migrator.kube import ApiError, KubeApi
from kms_storage_migrator.preflight.findings import AccessAnswer, Permission

REVIEWS = "/apis/authorization.k8s.io/v1"

Subject = tuple[str, str]  # a ServiceAccount's namespace and name; None asks for the caller


async def review(api: KubeApi, permission: Permission, subject: Subject | None = None) -> AccessAnswer:
    """One SelfSubjectAccessReview (or a SubjectAccessReview for ``subject``)."""
    spec: dict[str, Any]
    if permission.path:
        spec = {"nonResourceAttributes": {"verb": permission.verb, "path": permission.path}}
    else:
        attributes = {"verb": permission.verb, "group": permission.group, "resource": permission.resource}
        if permission.subresource:
            attributes["subresource"] = permission.subresource
        spec = {"resourceAttributes": attributes}
    kind = "SelfSubjectAccessReview"
    if subject is not None:
        namespace, name = subject
        kind = "SubjectAccessReview"
        spec["user"] = f"system:serviceaccount:{namespace}:{name}"
        spec["groups"] = [
            "system:serviceaccounts",
            f"system:serviceaccounts:{namespace}",
            "system:authenticated",
        ]
    body = {"apiVersion": "authorization.k8s.io/v1", "kind": kind, "spec": spec}
    try:
        reply = await api.request("POST", f"{REVIEWS}/{kind.lower()}s", body=body)
    except ApiError as error:
        if error.status >= 500 or error.status == 429:
            raise  # an overloaded or failing apiserver: the caller's retry policy decides
        return AccessAnswer(
            permission, False, f"the access review itself was refused: {error}", checked=False
        )
    status = reply.body.get("status") or {}
    return AccessAnswer(permission, bool(status.get("allowed")), str(status.get("reason") or ""))


def who(subject: Subject | None) -> str:
    return f"ServiceAccount {subject[0]}/{subject[1]}" if subject else "the operator"
