"""``kms-storage-migrator preflight``: RBAC, the encryption provider and etcd, checked before a run.

Read-only: access reviews (the caller's own, or a ServiceAccount's with --service-account), the
apiserver's /metrics, and one etcd key count when etcd flags are given. Prints a table; exits 1
when any check fails, so a pipeline can stop before the migration starts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import Any

from kms_storage_migrator.errors import UserError
from kms_storage_migrator.kube import ApiCredentials, ApiError, KubeApi, TransportError, load_credentials
from kms_storage_migrator.preflight.findings import (
    OPERATOR_PERMISSIONS,
    AccessAnswer,
    Finding,
    Permission,
    etcd_unreachable,
    exit_code,
    judge_access,
    judge_encryption,
    judge_etcd,
    metrics_unreadable,
    render_table,
)
from kms_storage_migrator.statusview.command import resolve_kubeconfig
from kms_storage_migrator.storage.etcd import EtcdConfig, EtcdReader
from kms_storage_migrator.storage.keys import EtcdRoot

REVIEWS = "/apis/authorization.k8s.io/v1"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "preflight",
        help="check, before a migration, the operator's permissions, the KMS v2 provider and etcd",
        description=(
            "Check what would stop a migration: the RBAC the operator needs (the caller's, or a "
            "ServiceAccount's), a KMS v2 provider in the apiserver's /metrics, and (with etcd flags) "
            "that etcd answers under the right prefix. Exits 1 when any check fails."
        ),
    )
    parser.add_argument("--kubeconfig", type=Path, metavar="FILE", help="kubeconfig (default: as kubectl)")
    parser.add_argument(
        "--service-account",
        metavar="NAMESPACE/NAME",
        help="check a ServiceAccount's permissions instead of yours (needs create on subjectaccessreviews)",
    )
    EtcdConfig.add_arguments(parser)
    parser.set_defaults(handler=run_preflight)


def run_preflight(args: argparse.Namespace) -> int:
    kubeconfig = resolve_kubeconfig(args.kubeconfig, os.environ)
    subject = _subject(args.service_account)
    etcd = _etcd_config(args)
    findings = asyncio.run(_check(load_credentials(kubeconfig), subject, etcd, args.etcd_prefix))
    print(render_table(findings))
    return exit_code(findings)


def _subject(text: str | None) -> tuple[str, str] | None:
    if text is None:
        return None
    namespace, _, name = text.partition("/")
    if not namespace or not name or "/" in name:
        raise UserError(
            f"--service-account {text!r}: expected NAMESPACE/NAME, e.g. kms-system/kms-storage-migrator"
        )
    return namespace, name


def _etcd_config(args: argparse.Namespace) -> EtcdConfig | None:
    flags = (args.etcd_config, args.etcd_endpoints, args.etcd_cacert, args.etcd_cert, args.etcd_key)
    return EtcdConfig.from_args(args) if any(flag is not None for flag in flags) else None


async def _check(
    credentials: ApiCredentials, subject: tuple[str, str] | None, etcd: EtcdConfig | None, root: EtcdRoot
) -> list[Finding]:
    async with KubeApi(credentials) as api:
        answers = [await _review(api, permission, subject) for permission in OPERATOR_PERMISSIONS]
        who = f"ServiceAccount {subject[0]}/{subject[1]}" if subject else "you"
        findings = judge_access(answers, who)
        try:
            findings.append(judge_encryption(await api.get_text("/metrics")))
        except (ApiError, TransportError) as error:
            findings.append(metrics_unreadable(str(error)))
    if etcd is not None:
        findings.append(await _check_etcd(etcd, root))
    return findings


async def _review(api: KubeApi, permission: Permission, subject: tuple[str, str] | None) -> AccessAnswer:
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
        return AccessAnswer(permission, False, f"the access review itself was refused: {error}")
    status = reply.body.get("status") or {}
    return AccessAnswer(permission, bool(status.get("allowed")), str(status.get("reason") or ""))


async def _check_etcd(config: EtcdConfig, root: EtcdRoot) -> Finding:
    try:
        async with EtcdReader(config) as reader:
            namespaces = await reader.count(root.location("namespaces"))
    except UserError as error:
        return etcd_unreachable(config.display, str(error))
    return judge_etcd(config.display, root.path, namespaces)
