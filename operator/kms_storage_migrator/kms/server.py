"""The KMS v2 gRPC server kube-apiserver talks to, over a unix socket.

Status reports the primary key id (and "ok" only while the primary is enabled); Encrypt wraps
with the primary; Decrypt unwraps with the key the apiserver names. The keyring file is
re-read whenever it changes, checked on every call with one ``stat``, so ``rotate``,
``disable`` and ``enable`` take effect without a restart.

Logs carry key ids, request uids and sizes, never plaintext, ciphertext or key material.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final, NoReturn

import grpc

from kms_storage_migrator.errors import UserError
from kms_storage_migrator.kms.api.v2 import api_pb2, api_pb2_grpc
from kms_storage_migrator.kms.envelope import EnvelopeError, unwrap, wrap
from kms_storage_migrator.kms.keyring import Kek, Keyring, KeyringError, load_keyring

logger = logging.getLogger(__name__)

API_VERSION: Final = "v2"
HEALTHY: Final = "ok"
SOCKET_MODE: Final = 0o600
# sun_path is 108 bytes on Linux, including the terminating NUL.
_MAX_SOCKET_PATH_BYTES: Final = 107
_SHUTDOWN_GRACE_SECONDS: Final = 2.0


def parse_listen(listen: str) -> Path:
    """``unix:///abs/path`` (what kube-apiserver's EncryptionConfiguration uses) → the path."""
    scheme = "unix://"
    if not listen.startswith(scheme) or len(listen) == len(scheme):
        raise UserError(f"--listen {listen!r} must be a unix socket address: unix:///PATH/TO/kms.sock")
    path = Path(listen[len(scheme) :]).absolute()
    if len(os.fsencode(path)) > _MAX_SOCKET_PATH_BYTES:
        raise UserError(
            f"--listen: socket path {path} is longer than {_MAX_SOCKET_PATH_BYTES} bytes, "
            "the limit of a unix socket address; choose a shorter path"
        )
    return path


@dataclass(frozen=True)
class _FileSignature:
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int


def _signature(path: Path) -> _FileSignature:
    info = path.stat()
    return _FileSignature(info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


class LiveKeyring:
    """The keyring as last read from its file, re-read when the file changes.

    The keyring tools replace the file atomically, so a re-read sees a whole file. If a re-read
    fails (a bad hand edit, the file removed), the last good keyring keeps serving and
    :attr:`error` says why, which Status reports as unhealthy.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._signature = _signature_or_none(path)
        self._keyring = load_keyring(path)
        self.error: str | None = None

    def current(self) -> Keyring:
        """The keyring to serve this call with: re-read first if the file changed."""
        try:
            signature = _signature(self.path)
        except OSError as error:
            self._fail(f"cannot stat keyring {self.path}: {error.strerror or type(error).__name__}")
            return self._keyring
        if signature != self._signature:
            try:
                keyring = load_keyring(self.path)
            except KeyringError as error:
                self._fail(str(error))
                return self._keyring
            self._signature = signature
            if keyring != self._keyring or self.error is not None:
                logger.info(
                    "keyring %s re-read: primary %s (%s); keys %s",
                    self.path,
                    keyring.primary_key_id,
                    keyring.primary.state,
                    describe_keys(keyring),
                )
            self._keyring = keyring
            self.error = None
        return self._keyring

    def _fail(self, message: str) -> None:
        if message != self.error:
            logger.error("%s; serving the last good keyring", message)
        self.error = message


def _signature_or_none(path: Path) -> _FileSignature | None:
    try:
        return _signature(path)
    except OSError:
        return None


def describe_keys(keyring: Keyring) -> str:
    """``kek-1=enabled, kek-2=primary``: ids and states only."""
    return ", ".join(f"{key.id}={key.state}" for key in keyring.keys)


def key_unavailable_message(key_id: str, key: Kek | None) -> str:
    """Why a key cannot be used, naming it and its state, in the words a cloud KMS uses."""
    if key is None:
        return f"KMS_KEY_NOT_FOUND: key {key_id!r} is not in the keyring (state: unknown)"
    return (
        f"KMS_KEY_DISABLED: key {key.id} is disabled (state: disabled); "
        f"enable it with `kms-storage-migrator kms-plugin enable {key.id}`"
    )


class KeyManagementServicer:
    """The three calls of ``v2.KeyManagementService`` over a :class:`LiveKeyring`.

    Method names are the gRPC ones. It does not subclass the generated servicer base, whose
    only job is to answer UNIMPLEMENTED for methods left out.
    """

    def __init__(self, keyring: LiveKeyring) -> None:
        self._keyring = keyring
        self._last_healthz: str | None = None

    async def Status(
        self, request: api_pb2.StatusRequest, context: grpc.aio.ServicerContext
    ) -> api_pb2.StatusResponse:
        keyring = self._keyring.current()
        primary = keyring.primary
        if not primary.usable:
            self._note_health(f"primary {key_unavailable_message(primary.id, primary)}", primary.id)
            # An error, not an unhealthy answer: kube-apiserver extends its DEK's write lifetime
            # on every Status that returns the same key id, healthy or not, so only a failing
            # Status lets writes stop (3 minutes after the last good one), as with a real KMS.
            await _abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"primary {key_unavailable_message(primary.id, primary)}; enable it or rotate to a new key",
            )
        if self._keyring.error is not None:
            healthz = f"{self._keyring.error}; serving the last good keyring"
        else:
            healthz = HEALTHY
        self._note_health(healthz, primary.id)
        logger.debug("Status: key_id=%s healthz=%s", primary.id, healthz)
        return api_pb2.StatusResponse(version=API_VERSION, healthz=healthz, key_id=primary.id)

    def _note_health(self, healthz: str, primary_key_id: str) -> None:
        # Logged on change only: the apiserver asks every 10-60 s.
        if healthz != self._last_healthz:
            log = logger.info if healthz == HEALTHY else logger.warning
            log("health: %s (primary key %s)", healthz, primary_key_id)
            self._last_healthz = healthz

    async def Encrypt(
        self, request: api_pb2.EncryptRequest, context: grpc.aio.ServicerContext
    ) -> api_pb2.EncryptResponse:
        primary = self._keyring.current().primary
        if not primary.usable:
            logger.debug("Encrypt uid=%s: primary %s is disabled", request.uid, primary.id)
            await _abort(
                context, grpc.StatusCode.FAILED_PRECONDITION, key_unavailable_message(primary.id, primary)
            )
        ciphertext = wrap(primary.material, primary.id, request.plaintext)
        logger.debug(
            "Encrypt uid=%s: %d bytes wrapped with key_id=%s", request.uid, len(request.plaintext), primary.id
        )
        return api_pb2.EncryptResponse(ciphertext=ciphertext, key_id=primary.id)

    async def Decrypt(
        self, request: api_pb2.DecryptRequest, context: grpc.aio.ServicerContext
    ) -> api_pb2.DecryptResponse:
        key_id: str = request.key_id
        key = self._keyring.current().get(key_id)
        if key is None or not key.usable:
            logger.debug("Decrypt uid=%s: key_id=%r unusable", request.uid, key_id)
            code = grpc.StatusCode.NOT_FOUND if key is None else grpc.StatusCode.FAILED_PRECONDITION
            await _abort(context, code, key_unavailable_message(key_id, key))
        try:
            plaintext = unwrap(key.material, key.id, request.ciphertext)
        except EnvelopeError as error:
            logger.debug("Decrypt uid=%s: key_id=%s: %s", request.uid, key.id, error)
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(error))
        logger.debug("Decrypt uid=%s: key_id=%s ok", request.uid, key.id)
        return api_pb2.DecryptResponse(plaintext=plaintext)


async def _abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("unreachable: ServicerContext.abort raises")  # pragma: no cover


class KmsPluginServer:
    """A started-and-stoppable plugin on one unix socket. ``serve`` is the long-running form."""

    def __init__(self, socket_path: Path, keyring_path: Path) -> None:
        self.socket_path = socket_path
        self.keyring = LiveKeyring(keyring_path)  # fails early, before the socket exists
        self._server: grpc.aio.Server | None = None

    @property
    def address(self) -> str:
        return f"unix://{self.socket_path}"

    async def start(self) -> None:
        _claim_socket_path(self.socket_path)
        server = grpc.aio.server()
        api_pb2_grpc.add_KeyManagementServiceServicer_to_server(KeyManagementServicer(self.keyring), server)
        try:
            server.add_insecure_port(self.address)
        except RuntimeError as error:
            raise UserError(f"cannot listen on {self.address}: {error}") from None
        await server.start()
        # Only this user (the apiserver's, in the dev cluster) may ask for keys to be used.
        os.chmod(self.socket_path, SOCKET_MODE)
        self._server = server
        keyring = self.keyring.current()
        logger.info(
            "KMS v2 plugin serving on %s with keyring %s: primary %s; keys %s",
            self.address,
            self.keyring.path,
            keyring.primary_key_id,
            describe_keys(keyring),
        )

    async def stop(self, grace: float | None = _SHUTDOWN_GRACE_SECONDS) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(self.socket_path.lstat().st_mode):
                self.socket_path.unlink()
        logger.info("KMS v2 plugin on %s stopped", self.address)


async def serve(listen: str, keyring_path: Path) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully and remove the socket."""
    plugin = KmsPluginServer(parse_listen(listen), keyring_path)
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        loop.add_signal_handler(signum, stop_requested.set)
    try:
        await plugin.start()
        await stop_requested.wait()
        logger.info("stop requested")
    finally:
        await plugin.stop()
        for signum in signals:
            loop.remove_signal_handler(signum)


def _claim_socket_path(path: Path) -> None:
    """Remove a stale socket left by a plugin that died; never a live one or another file."""
    if not path.parent.is_dir():
        raise UserError(f"cannot listen on unix://{path}: directory {path.parent} does not exist")
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise UserError(f"cannot listen on unix://{path}: the path exists and is not a socket")
    if _socket_accepts_connections(path):
        raise UserError(f"cannot listen on unix://{path}: another process is serving on it")
    logger.info("removing stale socket %s", path)
    path.unlink()


def _socket_accepts_connections(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(os.fspath(path))
        except OSError:
            return False
    return True
