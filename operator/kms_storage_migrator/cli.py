"""The one entry point: ``kms-storage-migrator <subcommand>``.

Each subsystem owns its subcommand in a module with ``register(subparsers)``; this file only
wires them together and turns a :class:`UserError` into one clear line. Only the module of
the subcommand being run is imported: the others pull in kopf, gRPC or the Kubernetes client,
which would cost a short-lived command like ``scan`` tens of megabytes and half a second.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from kms_storage_migrator import __version__
from kms_storage_migrator.errors import UserError

# gRPC's C core prints its own lines (e.g. on a failed TLS handshake) unless told otherwise
# before grpc is first imported; the CLI's promise is one clear line per error.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

SUBCOMMANDS = {
    "run": "kms_storage_migrator.run_command",
    "scan": "kms_storage_migrator.inventory.command",
    "kms-plugin": "kms_storage_migrator.kms.command",
    "dev-cluster": "kms_storage_migrator.devcluster.command",
    "status": "kms_storage_migrator.statusview.command",
    "preflight": "kms_storage_migrator.preflight_command",
}
# `kubectl storagemigration status NAME` runs the console script kubectl-storagemigration with
# `status NAME`: the same subcommands, under kubectl's name.
KUBECTL_PLUGIN = "kubectl storagemigration"
KUBECTL_PLUGIN_SUBCOMMANDS = ("status",)


def build_parser(
    only: str | None = None,
    *,
    prog: str = "kms-storage-migrator",
    offered: Sequence[str] = tuple(SUBCOMMANDS),
) -> argparse.ArgumentParser:
    """The parser with every ``offered`` subcommand, or with ``only`` that one (what a run needs)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Re-encrypt every object a kube-apiserver stores in etcd through KMS v2, and verify it.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in offered:
        if only in (None, name):
            importlib.import_module(SUBCOMMANDS[name]).register(subparsers)
    return parser


def _chosen_subcommand(argv: Sequence[str], offered: Sequence[str]) -> str | None:
    for argument in argv:
        if not argument.startswith("-"):
            return argument if argument in offered else None
    return None


def main(
    argv: Sequence[str] | None = None,
    *,
    prog: str = "kms-storage-migrator",
    offered: Sequence[str] = tuple(SUBCOMMANDS),
) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_chosen_subcommand(arguments, offered), prog=prog, offered=offered)
    args = parser.parse_args(arguments)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        result: int = args.handler(args)
    except UserError as error:
        print(f"{prog} {args.command}: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 130
    return result


def kubectl_plugin(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kubectl-storagemigration`` console script."""
    return main(argv, prog=KUBECTL_PLUGIN, offered=KUBECTL_PLUGIN_SUBCOMMANDS)
