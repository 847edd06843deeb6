"""``kms-storage-migrator kms-plugin``: serve the local KMS v2 plugin, or manage its keyring.

kms-plugin --listen unix:///PATH --keyring FILE     serve (until SIGTERM / SIGINT)
kms-plugin init    --keyring FILE                  create the keyring with one primary key
kms-plugin rotate  --keyring FILE                  add a key, make it primary; print its id
kms-plugin disable KEYID --keyring FILE            refuse to use a key
kms-plugin enable  KEYID --keyring FILE            use it again
kms-plugin status  --keyring FILE                  list key ids and states (never material)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path
from typing import Any

from kms_storage_migrator.errors import UserError
from kms_storage_migrator.kms.keyring import create_keyring, load_keyring, rotate_keyring, set_key_state
from kms_storage_migrator.kms.server import parse_listen, serve

_EPILOG = """\
A running plugin re-reads the keyring file when it changes, so rotate, disable and enable take
effect at its next call. kube-apiserver notices a new primary key id at its next Status poll
(every 60 s): restart it to switch at once.
"""


def register(subparsers: Any) -> None:
    """Add ``kms-plugin`` and its actions to the top-level CLI."""
    parser = subparsers.add_parser(
        "kms-plugin",
        help="run the local KMS v2 plugin, or manage its keyring",
        description="A local KMS v2 plugin for kube-apiserver, with a keyring file of AES-256 KEKs. "
        "With no action it serves; the actions manage the keyring.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--listen", metavar="unix:///PATH", help="socket to serve the KMS v2 API on")
    _add_keyring_argument(parser, default=None)
    parser.set_defaults(handler=_serve, kms_action=None)

    actions = parser.add_subparsers(dest="kms_action", metavar="ACTION")
    init = actions.add_parser("init", help="create a keyring file (mode 0600) with one primary key")
    _add_keyring_argument(init)
    init.set_defaults(handler=_init)

    rotate = actions.add_parser("rotate", help="add a new key, make it primary, print its id")
    _add_keyring_argument(rotate)
    rotate.set_defaults(handler=_rotate)

    for state, verb, what in (
        ("disabled", "disable", "refuse to use KEYID (Decrypt fails; Encrypt too if it is the primary)"),
        ("enabled", "enable", "allow KEYID to be used again"),
    ):
        action = actions.add_parser(verb, help=what)
        action.add_argument("key_id", metavar="KEYID")
        _add_keyring_argument(action)
        action.set_defaults(handler=_set_state, new_state=state)

    status = actions.add_parser("status", help="list key ids and states (never key material)")
    _add_keyring_argument(status)
    status.set_defaults(handler=_status)


def _add_keyring_argument(parser: argparse.ArgumentParser, default: Any = argparse.SUPPRESS) -> None:
    # The actions default to SUPPRESS so `kms-plugin --keyring F rotate` keeps the F given
    # before the action (argparse copies a sub-parser's defaults over the parent's values).
    parser.add_argument("--keyring", type=Path, metavar="FILE", default=default, help="the keyring file")


def _keyring_path(args: argparse.Namespace) -> Path:
    path: Path | None = args.keyring
    if path is None:
        raise UserError("--keyring FILE is required")
    return path


def _reject_listen(args: argparse.Namespace) -> None:
    if args.listen is not None:
        raise UserError(f"--listen is only for serving; `kms-plugin {args.kms_action}` does not serve")


def _serve(args: argparse.Namespace) -> int:
    if args.listen is None:
        raise UserError("--listen unix:///PATH is required to serve (or give an action: init, rotate, ...)")
    keyring = _keyring_path(args)
    parse_listen(args.listen)  # a bad address is reported before anything starts
    # grpc's own debug lines (one per call) would bury ours under `-v`.
    logging.getLogger("grpc").setLevel(max(logging.INFO, logging.getLogger().getEffectiveLevel()))
    asyncio.run(serve(args.listen, keyring))
    return 0


def _init(args: argparse.Namespace) -> int:
    _reject_listen(args)
    path = _keyring_path(args)
    keyring = create_keyring(path)
    print(f"created keyring {path} (mode 0600) with primary key {keyring.primary_key_id}")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    _reject_listen(args)
    print(rotate_keyring(_keyring_path(args)))
    return 0


def _set_state(args: argparse.Namespace) -> int:
    _reject_listen(args)
    key = set_key_state(_keyring_path(args), args.key_id, args.new_state)
    print(f"{key.id}: {key.state}")
    return 0


def _status(args: argparse.Namespace) -> int:
    _reject_listen(args)
    path = _keyring_path(args)
    keyring = load_keyring(path)
    print(f"keyring {path}: primary {keyring.primary_key_id}")
    width = max(len(key.id) for key in keyring.keys)
    for key in keyring.keys:
        note = (
            "  (primary, disabled: Encrypt fails)"
            if key.id == keyring.primary_key_id and not key.usable
            else ""
        )
        print(f"  {key.id:<{width}}  {key.state}{note}")
    return 0
