"""The keyring file: creation, validation, rotation, enable/disable, and keeping material secret."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kms_storage_migrator.errors import UserError
from kms_storage_migrator.kms.keyring import (
    Kek,
    Keyring,
    KeyringError,
    create_keyring,
    load_keyring,
    parse_keyring,
    rotate_keyring,
    set_key_state,
)

MATERIAL_A = base64.b64encode(bytes(range(32))).decode()
MATERIAL_B = base64.b64encode(bytes(range(32, 64))).decode()


@pytest.fixture
def keyring_path(tmp_path: Path) -> Path:
    return tmp_path / "keyring.json"


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that would leave new files world-readable, to show the mode is set on purpose."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def file_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def material_strings(keyring: Keyring) -> list[str]:
    """Every way material could leak into text: base64, hex, and the bytes' repr."""
    found = []
    for key in keyring.keys:
        found += [base64.b64encode(key.material).decode(), key.material.hex(), repr(key.material)[2:-1]]
    return found


def write_document(path: Path, document: Any) -> None:
    path.write_text(json.dumps(document))


def valid_document() -> dict[str, Any]:
    return {
        "version": 1,
        "primary": "kek-2",
        "keys": [
            {"id": "kek-1", "state": "enabled", "material": MATERIAL_A},
            {"id": "kek-2", "state": "primary", "material": MATERIAL_B},
        ],
    }


# --- create -----------------------------------------------------------------------------------


@pytest.mark.usefixtures("open_umask")
def test_create_makes_one_primary_key_in_a_0600_file(keyring_path: Path) -> None:
    keyring = create_keyring(keyring_path)

    assert file_mode(keyring_path) == 0o600
    assert keyring.primary_key_id == "kek-1"
    assert [(key.id, key.state) for key in keyring.keys] == [("kek-1", "primary")]
    assert len(keyring.primary.material) == 32
    assert load_keyring(keyring_path) == keyring


def test_create_makes_fresh_material_each_time(tmp_path: Path) -> None:
    first = create_keyring(tmp_path / "a.json")
    second = create_keyring(tmp_path / "b.json")
    assert first.primary.material != second.primary.material


def test_create_refuses_to_overwrite_an_existing_file(keyring_path: Path) -> None:
    create_keyring(keyring_path)
    before = keyring_path.read_bytes()

    with pytest.raises(KeyringError, match="already exists: refusing to overwrite"):
        create_keyring(keyring_path)

    assert keyring_path.read_bytes() == before
    assert list(keyring_path.parent.iterdir()) == [keyring_path]


def test_create_in_a_missing_directory_names_it(tmp_path: Path) -> None:
    with pytest.raises(KeyringError, match=r"directory .*missing.* does not exist"):
        create_keyring(tmp_path / "missing" / "keyring.json")


def test_keyring_errors_are_user_errors() -> None:
    # The CLI prints a UserError as one line, without a traceback.
    assert issubclass(KeyringError, UserError)


# --- load -------------------------------------------------------------------------------------


def test_load_of_a_missing_file_says_to_run_init(keyring_path: Path) -> None:
    with pytest.raises(KeyringError, match=r"does not exist: .*kms-plugin init --keyring"):
        load_keyring(keyring_path)


def test_load_reads_a_hand_written_file(keyring_path: Path) -> None:
    write_document(keyring_path, valid_document())

    keyring = load_keyring(keyring_path)

    assert keyring.primary_key_id == "kek-2"
    assert keyring.get("kek-1") == Kek("kek-1", "enabled", bytes(range(32)))
    assert keyring.get("kek-3") is None


def test_load_warns_when_the_file_is_readable_by_others(
    keyring_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    create_keyring(keyring_path)
    keyring_path.chmod(0o644)

    with caplog.at_level(logging.WARNING):
        load_keyring(keyring_path)

    assert "has mode 644" in caplog.text


def test_load_of_invalid_json_gives_the_position_but_not_the_text(keyring_path: Path) -> None:
    keyring_path.write_text('{"version": 1, "keys": [' + MATERIAL_A)

    with pytest.raises(KeyringError, match="is not valid JSON") as caught:
        load_keyring(keyring_path)

    assert MATERIAL_A not in str(caught.value)
    assert "line 1" in str(caught.value)


def _edited(**changes: Any) -> dict[str, Any]:
    document = valid_document()
    for where, value in changes.items():
        if where.startswith("key0_"):
            document["keys"][0][where.removeprefix("key0_")] = value
        elif where.startswith("key1_"):
            document["keys"][1][where.removeprefix("key1_")] = value
        else:
            document[where] = value
    return document


MALFORMED = [
    pytest.param([1, 2], "the document must be a JSON object", id="not-an-object"),
    pytest.param(_edited(version=2), "field 'version' must be 1", id="version"),
    pytest.param(_edited(keys=[]), "field 'keys' must be a non-empty list", id="no-keys"),
    pytest.param(_edited(keys={"id": "kek-1"}), "field 'keys' must be a non-empty list", id="keys-not-list"),
    pytest.param(_edited(keys=["kek-1"]), "keys[0] must be an object", id="key-not-object"),
    pytest.param(_edited(key0_id=None), "keys[0].id must be", id="id-missing"),
    pytest.param(_edited(key0_id="kek 1"), "keys[0].id must be", id="id-space"),
    pytest.param(_edited(key0_id="x" * 129), "keys[0].id must be 1-128", id="id-too-long"),
    pytest.param(_edited(key0_id="kek-2"), "keys[1].id 'kek-2' appears twice", id="id-duplicate"),
    pytest.param(_edited(key0_state="retired"), "keys[0].state of key kek-1 must be one of", id="state"),
    pytest.param(
        _edited(key0_material=7), "keys[0].material of key kek-1 must be a base64", id="material-type"
    ),
    pytest.param(
        _edited(key0_material=MATERIAL_A[:-2] + "!!"),
        "keys[0].material of key kek-1 is not valid base64",
        id="b64",
    ),
    pytest.param(
        _edited(key0_material=base64.b64encode(bytes(range(16))).decode()),
        "keys[0].material of key kek-1 must be 32 bytes, got 16",
        id="material-16-bytes",
    ),
    pytest.param(_edited(key0_extra="x"), "keys[0] has unknown field(s) extra", id="key-unknown-field"),
    pytest.param(_edited(comment="x"), "the document has unknown field(s) comment", id="doc-unknown-field"),
    pytest.param(_edited(primary=None), "field 'primary' must be the id of one of the keys", id="no-primary"),
    pytest.param(
        _edited(primary="kek-9"), "field 'primary' must be the id of one of the keys", id="unknown-primary"
    ),
    pytest.param(
        _edited(key0_state="primary"),
        "keys[0].state is primary but field 'primary' names kek-2: exactly one key is the primary",
        id="two-primaries",
    ),
    pytest.param(
        _edited(key1_state="enabled"),
        "keys[1].state of the primary key kek-2 must be primary or disabled",
        id="primary-not-primary",
    ),
]


@pytest.mark.parametrize(("document", "message"), MALFORMED)
def test_malformed_files_are_refused_naming_the_field(
    keyring_path: Path, document: Any, message: str
) -> None:
    write_document(keyring_path, document)

    with pytest.raises(KeyringError) as caught:
        load_keyring(keyring_path)

    text = str(caught.value)
    assert text.startswith(f"{keyring_path}: ")
    assert message in text
    for secret in (MATERIAL_A, MATERIAL_A[:-2], MATERIAL_B, bytes(range(32)).hex()):
        assert secret not in text


def test_parse_accepts_a_disabled_primary() -> None:
    document = _edited(key1_state="disabled")
    keyring = parse_keyring(document)
    assert keyring.primary_key_id == "kek-2"
    assert not keyring.primary.usable


# --- rotate -----------------------------------------------------------------------------------


def test_rotate_adds_a_primary_and_keeps_the_old_key_enabled(keyring_path: Path) -> None:
    original = create_keyring(keyring_path)

    new_id = rotate_keyring(keyring_path)

    keyring = load_keyring(keyring_path)
    assert new_id == "kek-2"
    assert keyring.primary_key_id == "kek-2"
    assert [(key.id, key.state) for key in keyring.keys] == [("kek-1", "enabled"), ("kek-2", "primary")]
    assert keyring.get("kek-1") == Kek("kek-1", "enabled", original.primary.material)
    assert keyring.primary.material != original.primary.material


def test_rotate_ids_keep_increasing(keyring_path: Path) -> None:
    write_document(
        keyring_path,
        _edited(
            key0_id="kek-7",
            keys=[{"id": "kek-7", "state": "primary", "material": MATERIAL_A}],
            primary="kek-7",
        ),
    )
    assert rotate_keyring(keyring_path) == "kek-8"
    assert rotate_keyring(keyring_path) == "kek-9"
    assert rotate_keyring(keyring_path) == "kek-10"
    assert [key.id for key in load_keyring(keyring_path).keys] == ["kek-7", "kek-8", "kek-9", "kek-10"]


@pytest.mark.usefixtures("open_umask")
def test_rotate_replaces_the_file_atomically_and_keeps_0600(keyring_path: Path) -> None:
    create_keyring(keyring_path)
    keyring_path.chmod(0o644)
    inode_before = keyring_path.stat().st_ino

    rotate_keyring(keyring_path)

    assert file_mode(keyring_path) == 0o600
    assert keyring_path.stat().st_ino != inode_before  # a new file renamed over the old one
    assert list(keyring_path.parent.iterdir()) == [keyring_path]  # no temp file left behind


def test_rotate_leaves_a_disabled_primary_disabled(keyring_path: Path) -> None:
    create_keyring(keyring_path)
    set_key_state(keyring_path, "kek-1", "disabled")

    rotate_keyring(keyring_path)

    keyring = load_keyring(keyring_path)
    assert [(key.id, key.state) for key in keyring.keys] == [("kek-1", "disabled"), ("kek-2", "primary")]


def test_rotate_of_a_malformed_file_changes_nothing(keyring_path: Path) -> None:
    keyring_path.write_text("{}")
    with pytest.raises(KeyringError, match="version"):
        rotate_keyring(keyring_path)
    assert keyring_path.read_text() == "{}"


# --- enable / disable ------------------------------------------------------------------------


def test_disable_and_enable_an_old_key(keyring_path: Path) -> None:
    create_keyring(keyring_path)
    rotate_keyring(keyring_path)

    disabled = set_key_state(keyring_path, "kek-1", "disabled")
    assert (disabled.id, disabled.state, disabled.usable) == ("kek-1", "disabled", False)
    assert load_keyring(keyring_path).get("kek-1") == disabled

    enabled = set_key_state(keyring_path, "kek-1", "enabled")
    assert (enabled.state, enabled.usable) == ("enabled", True)
    assert load_keyring(keyring_path).primary_key_id == "kek-2"


def test_disabling_the_primary_keeps_it_the_primary_and_enabling_restores_it(keyring_path: Path) -> None:
    create_keyring(keyring_path)
    rotate_keyring(keyring_path)

    set_key_state(keyring_path, "kek-2", "disabled")
    keyring = load_keyring(keyring_path)
    assert keyring.primary_key_id == "kek-2"
    assert keyring.primary.state == "disabled"
    assert not keyring.primary.usable

    restored = set_key_state(keyring_path, "kek-2", "enabled")
    assert restored.state == "primary"
    assert load_keyring(keyring_path).primary.state == "primary"


def test_setting_the_same_state_again_is_harmless(keyring_path: Path) -> None:
    create_keyring(keyring_path)
    before = keyring_path.read_bytes()
    assert set_key_state(keyring_path, "kek-1", "enabled").state == "primary"
    assert keyring_path.read_bytes() == before


def test_set_state_of_an_unknown_key_names_it_and_the_known_ones(keyring_path: Path) -> None:
    create_keyring(keyring_path)
    with pytest.raises(KeyringError, match=r"key kek-9 is not in keyring .* \(it has kek-1\)"):
        set_key_state(keyring_path, "kek-9", "disabled")


def test_set_state_refuses_primary(keyring_path: Path) -> None:
    create_keyring(keyring_path)
    with pytest.raises(KeyringError, match="use enabled or disabled"):
        set_key_state(keyring_path, "kek-1", "primary")  # type: ignore[arg-type]


# --- secrecy ----------------------------------------------------------------------------------


def test_material_never_appears_in_reprs(keyring_path: Path) -> None:
    create_keyring(keyring_path)
    rotate_keyring(keyring_path)
    keyring = load_keyring(keyring_path)

    texts = [repr(keyring), str(keyring), *(repr(key) for key in keyring.keys)]

    assert "kek-1" in texts[0]
    for text in texts:
        for secret in material_strings(keyring):
            assert secret not in text


def test_material_never_appears_in_logs(keyring_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        create_keyring(keyring_path)
        rotate_keyring(keyring_path)
        set_key_state(keyring_path, "kek-1", "disabled")
        load_keyring(keyring_path)

    for secret in material_strings(load_keyring(keyring_path)):
        assert secret not in caplog.text
