"""Placeholder until the `run` subcommand lands (being written now)."""

from typing import Any


def register(subparsers: Any) -> None:
    subparsers.add_parser("run", help="(not available yet)")
