"""``kms-storage-migrator kms-plugin ...``: the keyring actions and their messages."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from kms_storage_migrator.cli import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["kms-plugin", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_init_rotate_disable_enable_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keyring = str(tmp_path / "keyring.json")

    assert run(capsys, "init", "--keyring", keyring)[:2] == (
        0,
        f"created keyring {keyring} (mode 0600) with primary key kek-1\n",
    )
    assert run(capsys, "rotate", "--keyring", keyring)[:2] == (0, "kek-2\n")
    assert run(capsys, "--keyring", keyring, "rotate")[:2] == (0, "kek-3\n")  # --keyring before the action
    assert run(capsys, "disable", "kek-1", "--keyring", keyring)[:2] == (0, "kek-1: disabled\n")
    assert run(capsys, "disable", "kek-3", "--keyring", keyring)[:2] == (0, "kek-3: disabled\n")

    code, out, _ = run(capsys, "status", "--keyring", keyring)
    assert code == 0
    assert out.splitlines() == [
        f"keyring {keyring}: primary kek-3",
        "  kek-1  disabled",
        "  kek-2  enabled",
        "  kek-3  disabled  (primary, disabled: Encrypt fails)",
    ]
    for key in json.loads(Path(keyring).read_text())["keys"]:
        assert key["material"] not in out
        assert base64.b64decode(key["material"]).hex() not in out

    assert run(capsys, "enable", "kek-3", "--keyring", keyring)[:2] == (0, "kek-3: primary\n")


def test_init_twice_fails_with_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keyring = str(tmp_path / "keyring.json")
    run(capsys, "init", "--keyring", keyring)

    code, out, err = run(capsys, "init", "--keyring", keyring)

    assert (code, out) == (2, "")
    assert err == (
        f"kms-storage-migrator kms-plugin: keyring {keyring} already exists: "
        "refusing to overwrite it (its keys would be lost)\n"
    )


def test_serving_without_a_keyring_file_says_to_run_init(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keyring = tmp_path / "keyring.json"
    code, _, err = run(capsys, "--listen", f"unix://{tmp_path}/kms.sock", "--keyring", str(keyring))
    assert code == 2
    assert f"create it with `kms-storage-migrator kms-plugin init --keyring {keyring}`" in err
    assert not (tmp_path / "kms.sock").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("status",), "--keyring FILE is required"),
        (("--keyring", "k.json"), "--listen unix:///PATH is required to serve"),
        (("--listen", "unix:///tmp/x.sock", "--keyring", "k.json", "status"), "--listen is only for serving"),
        (("--listen", "localhost:1", "--keyring", "k.json"), "must be a unix socket address"),
        (("disable", "kek-9", "--keyring", "missing.json"), "does not exist"),
    ],
)
def test_usage_errors(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *args)
    assert code == 2
    assert message in err
