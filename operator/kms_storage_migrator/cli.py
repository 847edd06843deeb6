"""The one entry point: ``kms-storage-migrator <subcommand>``.

Each subsystem owns its subcommand in a ``command`` module with ``register(subparsers)``;
this file only wires them together and turns a :class:`UserError` into one clear line.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from kms_storage_migrator import __version__
from kms_storage_migrator.devcluster import command as devcluster_command
from kms_storage_migrator.errors import UserError
from kms_storage_migrator.inventory import command as scan_command
from kms_storage_migrator.kms import command as kms_command
from kms_storage_migrator.migration import command as run_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kms-storage-migrator",
        description="Re-encrypt every object a kube-apiserver stores in etcd through KMS v2, and verify it.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run_command.register(subparsers)
    scan_command.register(subparsers)
    kms_command.register(subparsers)
    devcluster_command.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        result: int = args.handler(args)
    except UserError as error:
        print(f"kms-storage-migrator {args.command}: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 130
    return result
