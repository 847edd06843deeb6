"""``kms-storage-migrator preflight``: the checks a migration's Preflight phase runs, as a table.

Read-only: access reviews (the caller's own, or a ServiceAccount's with --service-account), the
apiserver's /metrics, CRDs and one-item lists, and with etcd flags an etcd key count and a Txn
that cannot write. The same survey (``preflight/survey.py``) as the phase, plus the operator's whole
ClusterRole. Exits 1 when any check fails (with --enforce: or warns), so a pipeline can stop
before the migration starts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from kms_storage_migrator.errors import UserError
from kms_storage_migrator.kube import ApiCredentials, KubeApi, load_credentials
from kms_storage_migrator.migration.discovery import discover
from kms_storage_migrator.migration.selection import Selection, SelectionError, parse_selection
from kms_storage_migrator.preflight.findings import (
    OPERATOR_PERMISSIONS,
    Finding,
    Verdict,
    etcd_unreachable,
    exit_code,
    judge_access,
    render_table,
)
from kms_storage_migrator.preflight.reviews import Subject, review, who
from kms_storage_migrator.preflight.survey import PreflightSurvey
from kms_storage_migrator.statusview.command import resolve_kubeconfig
from kms_storage_migrator.storage.etcd import EtcdConfig, EtcdReader
from kms_storage_migrator.storage.keys import EtcdRoot


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "preflight",
        help="check, before a migration, what would stop it: encryption, RBAC, conversion webhooks, etcd",
        description=(
            "Run the checks of a migration's Preflight phase: is there a KMS v2 provider to migrate "
            "to, may the operator (you, or a ServiceAccount) list and patch every selected resource "
            "and hold the rest of its ClusterRole, do CRD conversion webhooks answer, and (with etcd "
            "flags) does etcd answer under the right prefix with a read-only user. Exits 1 when any "
            "check fails."
        ),
    )
    parser.add_argument("--kubeconfig", type=Path, metavar="FILE", help="kubeconfig (default: as kubectl)")
    parser.add_argument(
        "--service-account",
        metavar="NAMESPACE/NAME",
        help="check a ServiceAccount's permissions instead of yours (needs create on subjectaccessreviews)",
    )
    parser.add_argument(
        "--include",
        action="append",
        metavar="GROUP/RESOURCE",
        help="resources to check, as in spec.resources.include (repeatable; default everything)",
    )
    parser.add_argument(
        "--exclude", action="append", metavar="GROUP/RESOURCE", help="as spec.resources.exclude"
    )
    parser.add_argument(
        "--enforce", action="store_true", help="exit 1 on warnings too, as spec.preflight: Enforce would stop"
    )
    EtcdConfig.add_arguments(parser)
    parser.set_defaults(handler=run_preflight)


def run_preflight(args: argparse.Namespace) -> int:
    kubeconfig = resolve_kubeconfig(args.kubeconfig, os.environ)
    subject = _subject(args.service_account)
    etcd = _etcd_config(args)
    try:
        selection = parse_selection(args.include, args.exclude)
    except SelectionError as error:
        raise UserError(str(error).replace("spec.resources.", "--")) from error
    findings = asyncio.run(_check(load_credentials(kubeconfig), subject, etcd, args.etcd_prefix, selection))
    print(render_table(findings))
    if args.enforce and any(f.verdict is Verdict.WARN for f in findings):
        return 1
    return exit_code(findings)


def _subject(text: str | None) -> Subject | None:
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
    credentials: ApiCredentials,
    subject: Subject | None,
    etcd: EtcdConfig | None,
    root: EtcdRoot,
    selection: Selection,
) -> list[Finding]:
    async with AsyncExitStack() as stack:
        api = await stack.enter_async_context(KubeApi(credentials))
        reader: EtcdReader | None = None
        findings: list[Finding] = []
        if etcd is not None:
            try:
                reader = await stack.enter_async_context(EtcdReader(etcd))
            except UserError as error:
                findings.append(etcd_unreachable(etcd.display, str(error)))
        answers = [await review(api, permission, subject) for permission in OPERATOR_PERMISSIONS]
        findings[:0] = judge_access(answers, "you" if subject is None else who(subject))
        discovered = await discover(api, selection)
        caller = "you" if subject is None else None
        survey = PreflightSurvey(api, reader, root=root, subject=subject, caller=caller)
        # No StorageMigration to read back here: the write format is judged from /metrics.
        findings += await survey.run(
            discovered.chosen,
            None,
            secrets_exposure=True,
            aggregated=[(d.name, d.reason) for d in discovered.dropped if d.aggregated],
        )
    return findings
