"""``kms-storage-migrator scan``: how every object in etcd is stored, read-only."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from kms_storage_migrator.errors import UserError
from kms_storage_migrator.inventory.counts import Inventory
from kms_storage_migrator.inventory.report import print_table, to_json
from kms_storage_migrator.inventory.scan import (
    crd_index_from_etcd,
    require_apiserver_keys,
    scan_inventory,
    selection_prefixes,
)
from kms_storage_migrator.storage.etcd import DEFAULT_PAGE_SIZE, EtcdConfig, EtcdReader
from kms_storage_migrator.storage.keys import EtcdRoot, GroupResource, UnknownResourceError
from kms_storage_migrator.storage.write_format import WriteFormat

__all__ = ["register"]

EXIT_STALE = 1
# Distinct from stale (1) and argparse's usage error (2): scripts that retire a KEK test for it.
EXIT_KEY_IN_USE = 3


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "scan",
        help="count how every object in etcd is stored (plaintext, KMS v2 key id, ...); read-only",
        description=(
            "Read etcd (read-only) and report, per resource, how many objects are stored in plaintext, "
            "under each KMS v2 key id, under other providers, or in an unknown format. Never prints values."
        ),
    )
    EtcdConfig.add_arguments(parser)
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table", help="output format")
    expected = parser.add_mutually_exclusive_group()
    expected.add_argument(
        "--expect-key-id", metavar="ID", help="the KMS v2 key id objects should be stored under"
    )
    expected.add_argument(
        "--kubeconfig",
        type=Path,
        metavar="FILE",
        help="learn the current write format by writing (then deleting) a canary ConfigMap",
    )
    parser.add_argument(
        "--canary-namespace",
        default="default",
        metavar="NS",
        help="namespace of the canary ConfigMap (default)",
    )
    parser.add_argument(
        "--fail-on-stale",
        action="store_true",
        help="exit 1 when any rewritable object is not in the expected format",
    )
    parser.add_argument(
        "--fail-if-key-in-use",
        metavar="KEYID",
        help=(
            f"exit {EXIT_KEY_IN_USE} (naming the counts) while any stored object is under this KMS v2 key "
            "id: run it before disabling an old KEK"
        ),
    )
    parser.add_argument(
        "--resource",
        action="append",
        metavar="RESOURCE[.GROUP]",
        help="scan only this resource, e.g. secrets, deployments.apps (repeatable)",
    )
    parser.add_argument(
        "--page-size",
        type=int,
        default=DEFAULT_PAGE_SIZE,
        metavar="N",
        help="most keys per etcd range request (pages also stay near 1 MiB)",
    )
    parser.set_defaults(handler=run_scan)


def parse_resource(text: str) -> GroupResource:
    """``secrets`` → core, ``deployments.apps`` → apps, ``widgets.cr.example.com`` → cr.example.com."""
    resource, _, group = text.strip().partition(".")
    if not resource:
        raise UserError(f"--resource {text!r}: expected RESOURCE[.GROUP], e.g. deployments.apps")
    return GroupResource(group, resource)


def run_scan(args: argparse.Namespace) -> int:
    if args.fail_on_stale and args.expect_key_id is None and args.kubeconfig is None:
        raise UserError(
            "--fail-on-stale needs to know the current format: give --expect-key-id or --kubeconfig"
        )
    if args.page_size < 1:
        raise UserError("--page-size must be at least 1")
    config = EtcdConfig.from_args(args)
    inventory = asyncio.run(_scan(args, config))
    if args.output == "json":
        print(json.dumps(to_json(inventory), indent=2))
    else:
        print_table(inventory, Console(width=None if sys.stdout.isatty() else 200))
    if args.kubeconfig is not None and selects_secrets(args.resource):
        warning = asyncio.run(_secret_exposure(args.kubeconfig))
        if warning:
            print(warning, file=sys.stderr)
    if args.fail_if_key_in_use is not None:
        holding = key_in_use(inventory, args.fail_if_key_in_use)
        if holding:
            print(describe_key_in_use(args.fail_if_key_in_use, holding), file=sys.stderr)
            return EXIT_KEY_IN_USE
    return EXIT_STALE if args.fail_on_stale and inventory.stale > 0 else 0


def selects_secrets(resources: list[str] | None) -> bool:
    """Whether the scan covers Secrets (all resources, or --resource secrets)."""
    return not resources or any(parse_resource(text) == GroupResource("", "secrets") for text in resources)


async def _secret_exposure(kubeconfig: Path) -> str | None:
    """A warning naming the Secrets whose data sits in kubectl's last-applied annotation.

    Only with API access (--kubeconfig): etcd holds the annotation encrypted with the Secret.
    Listing Secret metadata brings the annotation into this process; kube.py drops it at parse.
    """
    # Imported here, as for the canary: the kubernetes client is needed only with --kubeconfig.
    from kms_storage_migrator.kube import ApiError, KubeApi, TransportError, load_credentials  # noqa: PLC0415
    from kms_storage_migrator.preflight.exposure import advice, describe, exposed_secrets  # noqa: PLC0415

    credentials = await asyncio.to_thread(load_credentials, kubeconfig)
    async with KubeApi(credentials, request_timeout=30) as api:
        try:
            names = await exposed_secrets(api)
        except (ApiError, TransportError) as error:
            return f"warning: cannot list Secret metadata to look for data in annotations: {error}"
    return f"warning: {describe(names)}; what to do: {advice(names)}" if names else None


def key_in_use(inventory: Inventory, key_id: str) -> dict[str, int]:
    """Objects stored under ``key_id``, per resource (empty: the key holds nothing scanned)."""
    counts = {f"{row.group or 'core'}/{row.resource}": row.kmsv2.get(key_id, 0) for row in inventory.rows()}
    return {name: count for name, count in sorted(counts.items()) if count}


def describe_key_in_use(key_id: str, holding: dict[str, int]) -> str:
    listed = ", ".join(f"{name} {count}" for name, count in holding.items())
    return (
        f"KMS v2 key {key_id} still holds {sum(holding.values())} object(s) ({listed}): keep it enabled; "
        "run a StorageMigration and scan again"
    )


async def _scan(args: argparse.Namespace, config: EtcdConfig) -> Inventory:
    root: EtcdRoot = args.etcd_prefix
    async with EtcdReader(config) as reader:
        await require_apiserver_keys(reader, root)
        expectation: WriteFormat | None = None
        if args.expect_key_id is not None:
            expectation = WriteFormat.for_key_id(args.expect_key_id)
        elif args.kubeconfig is not None:
            # Imported here: the kubernetes client costs ~0.3 s and ~25 MB, needed only for the canary.
            from kms_storage_migrator.inventory.canary import learn_from_canary  # noqa: PLC0415

            expectation = await learn_from_canary(
                args.kubeconfig, reader, namespace=args.canary_namespace, root=root
            )
        index = await crd_index_from_etcd(reader, root=root)
        selection = [parse_resource(text) for text in args.resource] if args.resource else None
        try:
            prefixes = selection_prefixes(selection, index, root=root)
        except UnknownResourceError as error:
            raise UserError(f"--resource: {error}") from None
        with _progress(sys.stderr.isatty()) as advance:
            if advance is not None:
                advance(0, sum([await reader.count(prefix) for prefix in prefixes]))
            return await scan_inventory(
                reader,
                index,
                expectation,
                selection,
                page_size=args.page_size,
                root=root,
                on_page=(lambda n: advance(n, None)) if advance is not None else None,
            )


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[int, int | None], None] | None]:
    """A progress bar on stderr when it is a terminal; ``advance(done, total)``."""
    if not enabled:
        yield None
        return
    progress = Progress(
        TextColumn("scanning etcd"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    task = progress.add_task("scan", total=None)

    def advance(done: int, total: int | None) -> None:
        if total is not None:
            progress.update(task, total=total)
        progress.advance(task, done)

    with progress:
        yield advance
