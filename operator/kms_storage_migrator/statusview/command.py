"""``kms-storage-migrator status [NAME]``: show one StorageMigration, once or live (``--watch``).

Needs only ``get`` (a named migration) and ``list`` (the newest one, or the names to suggest)
on StorageMigrations, from any machine with a kubeconfig. Exit codes, for scripts: 0 when the
migration Succeeded or is still running, 1 when it Failed, 2 when it cannot be shown (no such
migration, no access, bad flags).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import re
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from kms_storage_migrator.errors import UserError
from kms_storage_migrator.kube import ApiCredentials, ApiError, KubeApi, TransportError, load_credentials
from kms_storage_migrator.statusview.model import (
    FAILED,
    SUCCEEDED,
    MigrationView,
    exit_code,
    migration_names,
    newest,
    read_migration,
)
from kms_storage_migrator.statusview.render import render, summary_line

__all__ = ["add_arguments", "register", "run_status"]

# The CRD in crds/storagemigrations.yaml (checked by tests/unit/test_statusview_command.py).
STORAGE_MIGRATIONS = "/apis/kms-storage-migrator.io/v1alpha1/storagemigrations"
RESOURCE_NAME = "storagemigrations.kms-storage-migrator.io"
DEFAULT_INTERVAL = 2.0
# Object names are DNS subdomains: anything else cannot exist, and must not reach the URL path.
_OBJECT_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
MAX_NAME_LENGTH = 253
DEFAULT_KUBECONFIG = Path.home() / ".kube" / "config"
# Answers worth waiting out while watching: the apiserver restarting or overloaded.
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "status",
        help="show a StorageMigration: phase, per-resource progress, failures, verification",
        description=(
            "Show one StorageMigration (default: the newest) as a table. Exits 0 when it Succeeded "
            "or is still running, 1 when it Failed, 2 when it cannot be shown."
        ),
    )
    add_arguments(parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "name",
        nargs="?",
        type=_object_name,
        metavar="NAME",
        help="the StorageMigration (default: the newest)",
    )
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        metavar="FILE",
        help="kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster)",
    )
    parser.add_argument(
        "-w", "--watch", action="store_true", help="redraw live until the migration Succeeds or Fails"
    )
    parser.add_argument(
        "--interval",
        type=_interval,
        default=DEFAULT_INTERVAL,
        metavar="SECONDS",
        help=f"seconds between reads with --watch (default {DEFAULT_INTERVAL:g})",
    )
    parser.set_defaults(handler=run_status)


def run_status(args: argparse.Namespace) -> int:
    credentials = load_credentials(resolve_kubeconfig(args.kubeconfig, os.environ))
    console = Console(width=None if sys.stdout.isatty() else 120)
    return asyncio.run(_show(credentials, args.name, console, watch=args.watch, interval=args.interval))


def resolve_kubeconfig(flag: Path | None, environ: Mapping[str, str]) -> Path | None:
    """Which kubeconfig to use, as kubectl chooses it; None means the in-cluster service account."""
    if flag is not None:
        return flag
    for entry in (environ.get("KUBECONFIG") or "").split(os.pathsep):
        # kubectl merges a list of files; the first one that exists is what this command reads.
        if entry and Path(entry).is_file():
            return Path(entry)
    if DEFAULT_KUBECONFIG.is_file():
        return DEFAULT_KUBECONFIG
    if environ.get("KUBERNETES_SERVICE_HOST"):
        return None
    raise UserError("no kubeconfig found: pass --kubeconfig FILE or set KUBECONFIG")


async def _show(
    credentials: ApiCredentials, name: str | None, console: Console, *, watch: bool, interval: float
) -> int:
    async with KubeApi(credentials) as api:
        document = await fetch_migration(api, credentials, name)
        view = read_migration(document)
        if not watch:
            console.print(render(view, _now()))
            return exit_code(view)
        first = view
        if console.is_terminal:
            with Live(render(first, _now()), console=console, auto_refresh=False) as live:
                async for view, note in _follow(api, credentials, first, interval):
                    live.update(_with_note(render(view, _now()), note), refresh=True)
        else:
            # A pipe or a log gets one line per visible change, then the whole table at the end.
            last = summary_line(first)
            console.print(Text(last))
            async for view, note in _follow(api, credentials, first, interval):
                line = summary_line(view) + (f"  ({note})" if note else "")
                if line != last:
                    console.print(Text(line))
                    last = line
            console.print(render(view, _now()))
        return exit_code(view)


async def _follow(
    api: KubeApi, credentials: ApiCredentials, view: MigrationView, interval: float
) -> AsyncIterator[tuple[MigrationView, str | None]]:
    """Read the migration every ``interval`` until it is finished; brief outages only add a note."""
    while view.phase not in (SUCCEEDED, FAILED):
        await asyncio.sleep(interval)
        note: str | None = None
        try:
            view = read_migration(await api.get_json(f"{STORAGE_MIGRATIONS}/{view.name}"))
        except (ApiError, TransportError) as error:
            if isinstance(error, ApiError) and error.status not in TRANSIENT_STATUSES:
                raise UserError(_explain(error, credentials, view.name)) from None
            note = f"cannot read it just now ({_short_error(error)}); showing the last state read"
        yield view, note


async def fetch_migration(api: KubeApi, credentials: ApiCredentials, name: str | None) -> Mapping[str, Any]:
    """The named migration, or the newest; a :class:`UserError` that says what to do otherwise."""
    try:
        if name is not None:
            return await api.get_json(f"{STORAGE_MIGRATIONS}/{name}")
        items = await _list(api)
    except ApiError as error:
        if error.status == 404 and name is not None:
            raise UserError(await _not_found(api, credentials, name)) from None
        raise UserError(_explain(error, credentials, name)) from None
    except TransportError as error:
        raise UserError(f"cannot reach the apiserver at {credentials.describe()}: {error}") from None
    chosen = newest(items)
    if chosen is None:
        raise UserError("no StorageMigrations exist: create one (see docs/user-guide.md)")
    return chosen


async def _list(api: KubeApi) -> list[Mapping[str, Any]]:
    items = (await api.get_json(STORAGE_MIGRATIONS)).get("items")
    return [item for item in items if isinstance(item, Mapping)] if isinstance(items, list) else []


async def _not_found(api: KubeApi, credentials: ApiCredentials, name: str) -> str:
    try:
        names = migration_names(await _list(api))
    except ApiError as error:
        if error.status == 404:
            return _crd_missing()
        return f"no StorageMigration named {name!r} (and the names cannot be listed: {_short_error(error)})"
    except TransportError:
        return f"no StorageMigration named {name!r}"
    if not names:
        return f"no StorageMigration named {name!r}: there are none (create one: see docs/user-guide.md)"
    return f"no StorageMigration named {name!r}; existing: {', '.join(names)}"


def _explain(error: ApiError, credentials: ApiCredentials, name: str | None) -> str:
    what = f"StorageMigration {name!r}" if name else "StorageMigrations"
    if error.status == 401:
        return (
            f"the apiserver at {credentials.describe()} refused these credentials (401): check the kubeconfig"
        )
    if error.status == 403:
        verb = "get" if name else "list"
        return f"not allowed to {verb} {RESOURCE_NAME} (403): {error.message or 'ask for get and list on it'}"
    if error.status == 404:
        return f"{what} was deleted" if name else _crd_missing()
    return f"cannot read {what}: {_short_error(error)}"


def _crd_missing() -> str:
    return (
        f"the apiserver does not serve {RESOURCE_NAME}: install the CRD "
        "(kubectl apply -f crds/storagemigrations.yaml, or the Helm chart)"
    )


def _short_error(error: ApiError | TransportError) -> str:
    if isinstance(error, ApiError):
        return f"{error.status} {error.reason}"
    return str(error)


def _with_note(renderable: RenderableType, note: str | None) -> RenderableType:
    return Group(renderable, Text(note, style="yellow")) if note else renderable


def _object_name(text: str) -> str:
    if len(text) > MAX_NAME_LENGTH or not _OBJECT_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a StorageMigration name (lower case letters, digits, '-' and '.')"
        )
    return text


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0.2 <= value <= 3600:
        raise argparse.ArgumentTypeError("--interval must be between 0.2 and 3600 seconds")
    return value


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
