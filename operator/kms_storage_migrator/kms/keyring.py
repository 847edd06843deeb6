"""The plugin's keyring: a small JSON file of 256-bit KEKs, each with an id and a state.

File format (mode 0600, rewritten atomically with a temp file and ``os.replace``)::

    {
      "version": 1,
      "primary": "kek-2",
      "keys": [
        {"id": "kek-1", "state": "enabled", "material": "<base64 of 32 bytes>"},
        {"id": "kek-2", "state": "primary", "material": "<base64 of 32 bytes>"}
      ]
    }

Exactly one key is the primary: the one named by ``primary``. Its state is ``primary`` while
it may be used, or ``disabled`` after ``set_key_state(..., "disabled")`` — the primary stays
the primary (Status keeps reporting its id, unhealthy) until it is enabled again or a rotation
replaces it, the way a disabled cloud KMS key stays configured. Every other key is ``enabled``
(usable for Decrypt) or ``disabled``.

Key material never appears in a repr, a log line or an error message.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import os
import re
import secrets
import stat
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal, get_args

from kms_storage_migrator.errors import UserError
from kms_storage_migrator.kms.envelope import KEK_BYTES

logger = logging.getLogger(__name__)

KeyState = Literal["primary", "enabled", "disabled"]
KEY_STATES: Final[tuple[str, ...]] = get_args(KeyState)

FORMAT_VERSION: Final = 1
KEY_ID_PREFIX: Final = "kek-"
FILE_MODE: Final = 0o600
# Readable in a log line and in etcd, far below the apiserver's 1 kB limit on key ids.
_KEY_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_NUMBERED_KEY_ID: Final = re.compile(re.escape(KEY_ID_PREFIX) + r"([0-9]+)")


class KeyringError(UserError):
    """The keyring file is missing, malformed, or the change asked for is not possible."""


@dataclass(frozen=True)
class Kek:
    """One key-encryption key. ``material`` is kept out of the repr."""

    id: str
    state: KeyState
    material: bytes = field(repr=False)

    @property
    def usable(self) -> bool:
        """Whether the key may wrap or unwrap anything."""
        return self.state != "disabled"


@dataclass(frozen=True)
class Keyring:
    """All KEKs of the plugin, in the order they were created, and which one is the primary."""

    primary_key_id: str
    keys: tuple[Kek, ...]

    @property
    def primary(self) -> Kek:
        """The key Encrypt wraps with (possibly disabled: check ``usable``)."""
        key = self.get(self.primary_key_id)
        if key is None:  # pragma: no cover - the constructors guarantee it
            raise KeyringError(f"primary key {self.primary_key_id} is not in the keyring")
        return key

    def get(self, key_id: str) -> Kek | None:
        """The key with this id, or None."""
        return next((key for key in self.keys if key.id == key_id), None)

    def next_key_id(self) -> str:
        """A fresh id, one past the highest ``kek-N`` in the keyring."""
        numbers = [int(m.group(1)) for key in self.keys if (m := _NUMBERED_KEY_ID.fullmatch(key.id))]
        return f"{KEY_ID_PREFIX}{max(numbers, default=0) + 1}"


def new_key_material() -> bytes:
    """A fresh random 256-bit KEK."""
    return secrets.token_bytes(KEK_BYTES)


# --- file operations -------------------------------------------------------------------------


def create_keyring(path: Path) -> Keyring:
    """Create a keyring file holding one new primary key; never overwrites an existing file."""
    key = Kek(id=f"{KEY_ID_PREFIX}1", state="primary", material=new_key_material())
    keyring = Keyring(primary_key_id=key.id, keys=(key,))
    _write(path, keyring, overwrite=False)
    logger.debug("created keyring %s with primary key %s", path, key.id)
    return keyring


def load_keyring(path: Path) -> Keyring:
    """Read and validate a keyring file; errors name the file and the field at fault."""
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyringError(
            f"keyring {path} does not exist: "
            f"create it with `kms-storage-migrator kms-plugin init --keyring {path}`"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise KeyringError(f"cannot read keyring {path}: {_describe(error)}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning("keyring %s has mode %o: it holds key material, make it 0600", path, mode & 0o777)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        # The message holds a position, never the text around it.
        raise KeyringError(f"keyring {path} is not valid JSON: {error.msg} at line {error.lineno}") from None
    return parse_keyring(document, source=str(path))


def rotate_keyring(path: Path) -> str:
    """Add a new key and make it the primary; the old primary stays usable for Decrypt.

    A disabled old primary stays disabled. Returns the new key's id.
    """
    keyring = load_keyring(path)
    new_key = Kek(id=keyring.next_key_id(), state="primary", material=new_key_material())
    old_keys = (replace(key, state="enabled") if key.state == "primary" else key for key in keyring.keys)
    _write(path, Keyring(primary_key_id=new_key.id, keys=(*old_keys, new_key)), overwrite=True)
    logger.debug("rotated keyring %s: primary is now %s (was %s)", path, new_key.id, keyring.primary_key_id)
    return new_key.id


def set_key_state(path: Path, key_id: str, state: Literal["enabled", "disabled"]) -> Kek:
    """Enable or disable one key and return it as stored.

    Disabling the primary is allowed: it stays the primary, Status turns unhealthy and Encrypt
    fails until it is enabled again (its state goes back to ``primary``) or a rotation replaces it.
    """
    if state not in ("enabled", "disabled"):
        raise KeyringError(
            f"cannot set key {key_id} to {state!r}: use enabled or disabled (rotate makes a primary)"
        )
    keyring = load_keyring(path)
    key = keyring.get(key_id)
    if key is None:
        known = ", ".join(k.id for k in keyring.keys)
        raise KeyringError(f"key {key_id} is not in keyring {path} (it has {known})")
    new_state: KeyState = "primary" if state == "enabled" and key_id == keyring.primary_key_id else state
    updated = replace(key, state=new_state)
    if updated != key:
        keys = tuple(updated if k.id == key_id else k for k in keyring.keys)
        _write(path, Keyring(primary_key_id=keyring.primary_key_id, keys=keys), overwrite=True)
        logger.debug("keyring %s: key %s is now %s", path, key_id, new_state)
    return updated


# --- (de)serialisation -----------------------------------------------------------------------


def parse_keyring(document: Any, *, source: str = "keyring") -> Keyring:
    """Validate a decoded keyring document. ``source`` names it in errors."""
    if not isinstance(document, dict):
        raise _invalid(source, "the document", "must be a JSON object with version, primary and keys")
    version = document.get("version")
    if version != FORMAT_VERSION:
        raise _invalid(source, "field 'version'", f"must be {FORMAT_VERSION} (got {version!r})")
    raw_keys = document.get("keys")
    if not isinstance(raw_keys, list) or not raw_keys:
        raise _invalid(source, "field 'keys'", "must be a non-empty list")
    keys = tuple(_parse_key(raw, source, f"keys[{index}]") for index, raw in enumerate(raw_keys))

    seen: set[str] = set()
    for index, key in enumerate(keys):
        if key.id in seen:
            raise _invalid(source, f"keys[{index}].id", f"{key.id!r} appears twice")
        seen.add(key.id)

    primary_key_id = document.get("primary")
    if not isinstance(primary_key_id, str) or primary_key_id not in seen:
        raise _invalid(
            source, "field 'primary'", f"must be the id of one of the keys (got {primary_key_id!r})"
        )
    for index, key in enumerate(keys):
        if key.id == primary_key_id and key.state == "enabled":
            raise _invalid(
                source, f"keys[{index}].state", f"of the primary key {key.id} must be primary or disabled"
            )
        if key.id != primary_key_id and key.state == "primary":
            raise _invalid(
                source,
                f"keys[{index}].state",
                f"is primary but field 'primary' names {primary_key_id}: exactly one key is the primary",
            )
    unknown = sorted(set(document) - {"version", "primary", "keys"})
    if unknown:
        raise _invalid(source, "the document", f"has unknown field(s) {', '.join(unknown)}")
    return Keyring(primary_key_id=primary_key_id, keys=keys)


def _parse_key(raw: Any, source: str, where: str) -> Kek:
    if not isinstance(raw, dict):
        raise _invalid(source, where, "must be an object with id, state and material")
    key_id = raw.get("id")
    if not isinstance(key_id, str) or not _KEY_ID_PATTERN.fullmatch(key_id):
        raise _invalid(
            source,
            f"{where}.id",
            "must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    state = raw.get("state")
    if state not in KEY_STATES:
        raise _invalid(
            source,
            f"{where}.state",
            f"of key {key_id} must be one of {', '.join(KEY_STATES)} (got {state!r})",
        )
    encoded = raw.get("material")
    if not isinstance(encoded, str):
        raise _invalid(source, f"{where}.material", f"of key {key_id} must be a base64 string")
    try:
        material = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        # Never echo the value: it is (or is close to) key material.
        raise _invalid(source, f"{where}.material", f"of key {key_id} is not valid base64") from None
    if len(material) != KEK_BYTES:
        raise _invalid(
            source, f"{where}.material", f"of key {key_id} must be {KEK_BYTES} bytes, got {len(material)}"
        )
    unknown = sorted(set(raw) - {"id", "state", "material"})
    if unknown:
        raise _invalid(source, where, f"has unknown field(s) {', '.join(unknown)}")
    return Kek(id=key_id, state=state, material=material)


def _invalid(source: str, where: str, problem: str) -> KeyringError:
    return KeyringError(f"{source}: {where} {problem}")


def _to_document(keyring: Keyring) -> dict[str, Any]:
    return {
        "version": FORMAT_VERSION,
        "primary": keyring.primary_key_id,
        "keys": [
            {"id": key.id, "state": key.state, "material": base64.b64encode(key.material).decode("ascii")}
            for key in keyring.keys
        ],
    }


def _write(path: Path, keyring: Keyring, *, overwrite: bool) -> None:
    """Write atomically: a reader sees the old file or the new one, never a partial one.

    The temp file is created 0600 in the same directory, so the final file is 0600 whatever
    the umask or the old file's mode. Without ``overwrite`` the file is put in place with a
    hard link, which fails if the path exists: no check-then-write race.
    """
    data = (json.dumps(_to_document(keyring), indent=2) + "\n").encode("utf-8")
    directory = path.parent
    if not directory.is_dir():
        raise KeyringError(f"cannot write keyring {path}: directory {directory} does not exist")
    fd, temp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as stream:
            os.fchmod(stream.fileno(), FILE_MODE)  # mkstemp already uses 0600; say so explicitly
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        if overwrite:
            os.replace(temp, path)
        else:
            try:
                os.link(temp, path)
            except FileExistsError:
                raise KeyringError(
                    f"keyring {path} already exists: refusing to overwrite it (its keys would be lost)"
                ) from None
    except OSError as error:
        raise KeyringError(f"cannot write keyring {path}: {_describe(error)}") from None
    finally:
        temp.unlink(missing_ok=True)  # after a link or a failure; gone already after a replace
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable; best effort (some filesystems refuse to fsync a directory)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _describe(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return type(error).__name__
