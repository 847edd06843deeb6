"""Placeholder until the `scan` subcommand lands (being written now)."""

from typing import Any


def register(subparsers: Any) -> None:
    subparsers.add_parser("scan", help="(not available yet)")
