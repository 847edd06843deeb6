"""`scan` argument handling and the etcd config file: bad input is a UserError naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kms_storage_migrator.cli import build_parser, main
from kms_storage_migrator.errors import UserError
from kms_storage_migrator.inventory.command import parse_resource
from kms_storage_migrator.storage.etcd import EtcdConfig
from kms_storage_migrator.storage.keys import GroupResource


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("secrets", GroupResource("", "secrets")),
        ("deployments.apps", GroupResource("apps", "deployments")),
        ("widgets.cr.example.com", GroupResource("cr.example.com", "widgets")),
    ],
)
def test_parse_resource(text: str, expected: GroupResource) -> None:
    assert parse_resource(text) == expected


def test_config_file_resolves_relative_paths(tmp_path: Path) -> None:
    config = tmp_path / "etcd.json"
    config.write_text(
        json.dumps({"endpoints": ["https://127.0.0.1:2379"], "cacert": "ca.crt", "cert": "/abs/c"})
    )
    loaded = EtcdConfig.from_file(config)
    assert loaded == EtcdConfig(("https://127.0.0.1:2379",), tmp_path / "ca.crt", Path("/abs/c"), None)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "is not JSON"),
        ("[]", "must be a JSON object"),
        ('{"endpoints": []}', "needs 'endpoints'"),
        ('{"endpoints": ["https://x:1"], "cacert": 3}', "'cacert'"),
    ],
)
def test_bad_config_file(tmp_path: Path, content: str, message: str) -> None:
    config = tmp_path / "etcd.json"
    config.write_text(content)
    with pytest.raises(UserError, match=message):
        EtcdConfig.from_file(config)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot read the etcd config"):
        EtcdConfig.from_file(tmp_path / "absent.json")


def args(*argv: str) -> object:
    return build_parser().parse_args(["scan", *argv])


def test_flags_build_a_config() -> None:
    parsed = args(
        "--etcd-endpoints", "https://a:1, https://b:2", "--etcd-cacert", "ca", "--etcd-timeout", "3"
    )
    config = EtcdConfig.from_args(parsed)  # type: ignore[arg-type]
    assert config.endpoints == ("https://a:1", "https://b:2")
    assert config.cacert == Path("ca")
    assert config.timeout == 3


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ((), "say where etcd is"),
        (("--etcd-config", "x.json", "--etcd-endpoints", "https://a:1"), "not both"),
        (("--etcd-endpoints", " , "), "is empty"),
    ],
)
def test_bad_flags(argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(UserError, match=message):
        EtcdConfig.from_args(args(*argv))  # type: ignore[arg-type]


def test_expect_key_id_and_kubeconfig_are_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        args("--expect-key-id", "a", "--kubeconfig", "k")
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--etcd-endpoints", "ftp://a:1"), "is not a URL like https://127.0.0.1:2379"),
        (("--etcd-endpoints", "https://127.0.0.1:99999"), "invalid port"),
        (("--etcd-endpoints", "https://127.0.0.1:2379"), "give --etcd-cacert"),
        (
            ("--etcd-endpoints", "https://127.0.0.1:1", "--etcd-cacert", "/nonexistent/ca"),
            "cannot read --etcd-cacert",
        ),
        (("--etcd-endpoints", "https://127.0.0.1:1", "--fail-on-stale"), "--expect-key-id or --kubeconfig"),
        (("--etcd-endpoints", "https://127.0.0.1:1", "--page-size", "0"), "--page-size"),
    ],
)
def test_cli_prints_one_line_and_exits_2(
    argv: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["scan", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert message in err
