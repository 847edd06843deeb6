"""``run --auto-migrate`` and ``--auto-migrate-interval``: flag, environment, bad values."""

from __future__ import annotations

import pytest

from kms_storage_migrator.cli import build_parser
from kms_storage_migrator.errors import UserError
from kms_storage_migrator.run_command import AUTO_MIGRATE_ENV, switch


def parse(monkeypatch: pytest.MonkeyPatch, *argv: str, **environ: str) -> tuple[bool, int]:
    for name in (AUTO_MIGRATE_ENV, "KMS_STORAGE_MIGRATOR_AUTO_MIGRATE_INTERVAL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    args = build_parser("run").parse_args(["run", *argv])
    return switch(args.auto_migrate, AUTO_MIGRATE_ENV), args.auto_migrate_interval


def test_off_by_default_with_a_30_second_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse(monkeypatch) == (False, 30)


def test_the_flag_turns_it_on(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse(monkeypatch, "--auto-migrate", "--auto-migrate-interval", "5") == (True, 5)


def test_the_environment_turns_it_on_as_the_chart_may_set_it(monkeypatch: pytest.MonkeyPatch) -> None:
    environ = {AUTO_MIGRATE_ENV: "true", "KMS_STORAGE_MIGRATOR_AUTO_MIGRATE_INTERVAL": "12"}
    assert parse(monkeypatch, **environ) == (True, 12)
    assert parse(monkeypatch, **{AUTO_MIGRATE_ENV: "False"}) == (False, 30)


def test_a_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UserError, match=f"{AUTO_MIGRATE_ENV}='sometimes': expected true or false"):
        parse(monkeypatch, **{AUTO_MIGRATE_ENV: "sometimes"})


def test_an_interval_below_one_second_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit):
        parse(monkeypatch, "--auto-migrate-interval", "0")
