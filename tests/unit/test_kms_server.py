"""The real KMS v2 gRPC server, in this process and as a process, over a unix socket.

The client is the generated stub, calling the same method paths kube-apiserver calls.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

import kms_storage_migrator
from kms_storage_migrator.errors import UserError
from kms_storage_migrator.kms.api.v2 import api_pb2, api_pb2_grpc
from kms_storage_migrator.kms.keyring import create_keyring, load_keyring, rotate_keyring, set_key_state
from kms_storage_migrator.kms.server import KmsPluginServer, parse_listen

SEED = bytes(range(32))


@dataclass
class Plugin:
    server: KmsPluginServer
    stub: api_pb2_grpc.KeyManagementServiceStub
    keyring: Path

    async def status(self) -> api_pb2.StatusResponse:
        response: api_pb2.StatusResponse = await self.stub.Status(api_pb2.StatusRequest())
        return response

    async def encrypt(self, plaintext: bytes = SEED) -> api_pb2.EncryptResponse:
        request = api_pb2.EncryptRequest(plaintext=plaintext, uid="test-encrypt")
        response: api_pb2.EncryptResponse = await self.stub.Encrypt(request)
        return response

    async def decrypt(self, ciphertext: bytes, key_id: str) -> bytes:
        request = api_pb2.DecryptRequest(ciphertext=ciphertext, key_id=key_id, uid="test-decrypt")
        response = await self.stub.Decrypt(request)
        return bytes(response.plaintext)


@pytest.fixture
async def plugin(tmp_path: Path) -> AsyncIterator[Plugin]:
    keyring = tmp_path / "keyring.json"
    create_keyring(keyring)
    server = KmsPluginServer(tmp_path / "kms.sock", keyring)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            yield Plugin(server, api_pb2_grpc.KeyManagementServiceStub(channel), keyring)
    finally:
        await server.stop(grace=None)


# --- the three calls --------------------------------------------------------------------------


async def test_status_is_healthy_and_reports_the_primary(plugin: Plugin) -> None:
    status = await plugin.status()
    assert (status.version, status.healthz, status.key_id) == ("v2", "ok", "kek-1")


async def test_encrypt_then_decrypt(plugin: Plugin) -> None:
    encrypted = await plugin.encrypt()

    assert encrypted.key_id == (await plugin.status()).key_id
    assert SEED not in encrypted.ciphertext
    assert len(encrypted.ciphertext) <= 1024  # the apiserver's limit
    assert await plugin.decrypt(encrypted.ciphertext, encrypted.key_id) == SEED


async def test_decrypt_with_an_unknown_key_is_not_found_and_names_it(plugin: Plugin) -> None:
    encrypted = await plugin.encrypt()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await plugin.decrypt(encrypted.ciphertext, "kek-404")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "kek-404" in caught.value.details()
    assert "KMS_KEY_NOT_FOUND" in caught.value.details()


async def test_decrypt_of_altered_ciphertext_is_invalid_argument(plugin: Plugin) -> None:
    encrypted = await plugin.encrypt()
    altered = bytearray(encrypted.ciphertext)
    altered[-1] ^= 0xFF
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await plugin.decrypt(bytes(altered), encrypted.key_id)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "does not authenticate under key kek-1" in caught.value.details()


async def test_decrypt_with_a_disabled_key_names_the_key_and_its_state(plugin: Plugin) -> None:
    old = await plugin.encrypt()
    rotate_keyring(plugin.keyring)
    set_key_state(plugin.keyring, "kek-1", "disabled")

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await plugin.decrypt(old.ciphertext, "kek-1")

    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = caught.value.details()
    assert "KMS_KEY_DISABLED" in details
    assert "key kek-1 is disabled (state: disabled)" in details

    set_key_state(plugin.keyring, "kek-1", "enabled")
    assert await plugin.decrypt(old.ciphertext, "kek-1") == SEED


# --- hot reload -------------------------------------------------------------------------------


async def test_rotation_is_picked_up_without_a_restart(plugin: Plugin) -> None:
    before = await plugin.encrypt()

    new_id = rotate_keyring(plugin.keyring)

    status = await plugin.status()
    assert (status.key_id, status.healthz) == (new_id, "ok")
    after = await plugin.encrypt()
    assert after.key_id == new_id == "kek-2"
    assert await plugin.decrypt(after.ciphertext, "kek-2") == SEED
    assert await plugin.decrypt(before.ciphertext, "kek-1") == SEED  # old keys stay readable


async def test_disabled_primary_makes_status_and_encrypt_fail(plugin: Plugin) -> None:
    set_key_state(plugin.keyring, "kek-1", "disabled")

    with pytest.raises(grpc.aio.AioRpcError) as status_error:
        await plugin.status()
    assert status_error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "KMS_KEY_DISABLED: key kek-1 is disabled (state: disabled)" in status_error.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await plugin.encrypt()
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "KMS_KEY_DISABLED: key kek-1 is disabled (state: disabled)" in caught.value.details()

    set_key_state(plugin.keyring, "kek-1", "enabled")
    assert (await plugin.status()).healthz == "ok"
    assert (await plugin.encrypt()).key_id == "kek-1"


async def test_a_broken_keyring_edit_keeps_the_last_good_keys_but_turns_unhealthy(plugin: Plugin) -> None:
    good = plugin.keyring.read_bytes()
    plugin.keyring.write_text('{"version": 1, "keys": []}')

    status = await plugin.status()
    assert status.key_id == "kek-1"
    assert "field 'keys' must be a non-empty list" in status.healthz
    assert "last good keyring" in status.healthz
    encrypted = await plugin.encrypt()
    assert await plugin.decrypt(encrypted.ciphertext, encrypted.key_id) == SEED

    plugin.keyring.write_bytes(good)
    assert (await plugin.status()).healthz == "ok"


async def test_a_removed_keyring_file_turns_unhealthy(plugin: Plugin) -> None:
    plugin.keyring.unlink()
    status = await plugin.status()
    assert status.key_id == "kek-1"
    assert "cannot stat keyring" in status.healthz


async def test_no_material_or_plaintext_is_logged(plugin: Plugin, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="kms_storage_migrator")
    encrypted = await plugin.encrypt()
    await plugin.decrypt(encrypted.ciphertext, encrypted.key_id)
    rotate_keyring(plugin.keyring)
    await plugin.status()

    assert "Encrypt uid=test-encrypt" in caplog.text
    secrets_ = [SEED.hex(), repr(SEED)[2:-1], encrypted.ciphertext.hex()]
    for key in load_keyring(plugin.keyring).keys:
        secrets_ += [key.material.hex(), repr(key.material)[2:-1]]
    for secret in secrets_:
        assert secret not in caplog.text


# --- the socket -------------------------------------------------------------------------------


async def test_socket_is_private_and_removed_on_stop(tmp_path: Path) -> None:
    keyring = tmp_path / "keyring.json"
    create_keyring(keyring)
    server = KmsPluginServer(tmp_path / "kms.sock", keyring)
    await server.start()
    assert stat.S_ISSOCK(server.socket_path.lstat().st_mode)
    assert stat.S_IMODE(server.socket_path.stat().st_mode) == 0o600

    await server.stop()

    assert not server.socket_path.exists()


async def test_a_stale_socket_is_replaced(tmp_path: Path) -> None:
    keyring = tmp_path / "keyring.json"
    create_keyring(keyring)
    stale = tmp_path / "kms.sock"
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(stale))  # bound, never listening, closed: what a killed plugin leaves
    server = KmsPluginServer(stale, keyring)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            status = await api_pb2_grpc.KeyManagementServiceStub(channel).Status(api_pb2.StatusRequest())
        assert status.healthz == "ok"
    finally:
        await server.stop()


async def test_a_live_socket_is_not_taken_over(plugin: Plugin) -> None:
    second = KmsPluginServer(plugin.server.socket_path, plugin.keyring)
    with pytest.raises(UserError, match="another process is serving on it"):
        await second.start()
    assert (await plugin.status()).healthz == "ok"


async def test_a_file_that_is_not_a_socket_is_left_alone(tmp_path: Path) -> None:
    keyring = tmp_path / "keyring.json"
    create_keyring(keyring)
    server = KmsPluginServer(keyring, keyring)
    with pytest.raises(UserError, match="exists and is not a socket"):
        await server.start()
    assert load_keyring(keyring).primary_key_id == "kek-1"


def test_a_missing_keyring_is_reported_before_listening(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="kms-plugin init --keyring"):
        KmsPluginServer(tmp_path / "kms.sock", tmp_path / "missing.json")
    assert not (tmp_path / "kms.sock").exists()


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        ("/tmp/kms.sock", "must be a unix socket address"),
        ("tcp://127.0.0.1:1", "must be a unix socket address"),
        ("unix://", "must be a unix socket address"),
        ("unix:///" + "d" * 120 + "/kms.sock", "longer than 107 bytes"),
    ],
)
def test_parse_listen_rejects(listen: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_listen(listen)


def test_parse_listen_accepts_the_apiserver_form() -> None:
    assert parse_listen("unix:///run/kms/kms.sock") == Path("/run/kms/kms.sock")


# --- as a process -----------------------------------------------------------------------------


def test_the_cli_serves_until_sigterm_and_removes_its_socket(tmp_path: Path) -> None:
    keyring = tmp_path / "keyring.json"
    socket_path = tmp_path / "kms.sock"
    create_keyring(keyring)
    source_root = Path(kms_storage_migrator.__file__).parent.parent
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(source_root), os.environ.get("PYTHONPATH")])),
    }
    command = [sys.executable, "-m", "kms_storage_migrator", "-v", "kms-plugin"]
    command += ["--listen", f"unix://{socket_path}", "--keyring", str(keyring)]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not socket_path.exists():
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "the plugin did not create its socket in 20 s"
            time.sleep(0.05)
        with grpc.insecure_channel(f"unix://{socket_path}") as channel:
            stub = api_pb2_grpc.KeyManagementServiceStub(channel)
            status = stub.Status(api_pb2.StatusRequest(), timeout=5)
            encrypted = stub.Encrypt(api_pb2.EncryptRequest(plaintext=SEED, uid="cli"), timeout=5)
        assert (status.healthz, status.key_id, encrypted.key_id) == ("ok", "kek-1", "kek-1")

        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 0, stderr
    assert not socket_path.exists()
    assert "serving on unix://" in stderr
    assert "Encrypt uid=cli" in stderr
    material = load_keyring(keyring).primary.material
    assert material.hex() not in stderr
    assert json.loads(keyring.read_text())["keys"][0]["material"] not in stderr
