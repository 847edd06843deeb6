"""Token refresh in kube.py: the schedule (pure), JWT expiry, the kubeconfig exec plugin re-run,
and KubeApi's refresh after a 401 or before expiry.

The HTTP server here only accepts or refuses a bearer token: it checks which token KubeApi
sends when, nothing an apiserver does. The same behaviour against the real apiserver is in
tests/integration/test_kube_client.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from aiohttp import web
from local_server import serving

from kms_storage_migrator.errors import UserError
from kms_storage_migrator.kube import (
    REFRESH_HOLD_SECONDS,
    ApiCredentials,
    ApiError,
    BearerToken,
    KubeApi,
    jwt_expiry,
    load_credentials,
    refresh_due,
    renewal_time,
)


def _jwt(claims: dict[str, object]) -> str:
    def part(document: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    ("expires_at", "obtained_at", "now", "reread", "due"),
    [
        (None, 0.0, 10_000.0, None, False),  # no expiry, no re-read period: only a 401 refreshes
        (None, 0.0, 59.0, 60.0, False),
        (None, 0.0, 60.0, 60.0, True),  # the in-cluster file's re-read period
        (3600.0, 0.0, 3569.0, None, False),  # an hour's token: 30 s before expiry
        (3600.0, 0.0, 3570.0, None, True),
        (4.0, 0.0, 2.9, None, False),  # a 4 s token: a quarter of its lifetime before expiry
        (4.0, 0.0, 3.0, None, True),
        (100.0, 200.0, 200.0, None, True),  # already expired when obtained
    ],
)
def test_refresh_schedule(
    expires_at: float | None, obtained_at: float, now: float, reread: float | None, due: bool
) -> None:
    assert refresh_due(expires_at, obtained_at, now, reread) is due


def test_renewal_time_is_what_kopf_gets_as_expiration() -> None:
    assert renewal_time(None, 0.0) is None
    assert renewal_time(3600.0, 0.0) == 3570.0
    assert renewal_time(4.0, 0.0) == 3.0


@pytest.mark.parametrize(
    ("token", "expiry"),
    [
        (_jwt({"exp": 1_900_000_000, "sub": "system:serviceaccount:a:b"}), 1_900_000_000.0),
        (_jwt({"sub": "no-exp"}), None),
        (_jwt({"exp": "soon"}), None),
        (_jwt({"exp": True}), None),
        ("opaque-static-token", None),
        ("a.!!!.c", None),
        ("a." + base64.urlsafe_b64encode(b"[1, 2]").decode() + ".c", None),
    ],
)
def test_jwt_expiry(token: str, expiry: float | None) -> None:
    assert jwt_expiry(token) == expiry


def test_token_never_appears_in_the_credentials_repr() -> None:
    credentials = ApiCredentials(server="https://x", token="s3cret-token")
    assert "s3cret-token" not in repr(credentials)
    assert "s3cret-token" not in repr(BearerToken("s3cret-token", 1.0))


# Counts its runs in the file named by its argument and hands out token-<run>, valid for
# TOKEN_LIFETIME seconds when that is set.
PLUGIN = """
import json, os, pathlib, sys, time
counter = pathlib.Path(sys.argv[1])
runs = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(runs))
status = {"token": f"token-{runs}"}
if os.environ.get("TOKEN_LIFETIME"):
    expiry = time.gmtime(time.time() + float(os.environ["TOKEN_LIFETIME"]))
    status["expirationTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", expiry)
credential = {"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential", "status": status}
print(json.dumps(credential))
"""


def _exec_kubeconfig(tmp_path: Path, lifetime: float | None, server: str = "https://127.0.0.1:1") -> Path:
    """A kubeconfig whose exec plugin is PLUGIN."""
    plugin = tmp_path / "plugin.py"
    plugin.write_text(PLUGIN)
    env = [{"name": "TOKEN_LIFETIME", "value": str(lifetime)}] if lifetime is not None else []
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [
            {
                "name": "u",
                "user": {
                    "exec": {
                        "apiVersion": "client.authentication.k8s.io/v1",
                        "command": sys.executable,
                        "args": [str(plugin), str(tmp_path / "runs")],
                        "env": env,
                        "interactiveMode": "Never",
                    }
                },
            }
        ],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "ctx",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    return path


def _runs(tmp_path: Path) -> int:
    return int((tmp_path / "runs").read_text())


def test_exec_plugin_token_and_expiry_are_loaded_and_the_plugin_reruns_on_demand(tmp_path: Path) -> None:
    before = time.time()
    credentials = load_credentials(_exec_kubeconfig(tmp_path, lifetime=120))
    assert credentials.token == "token-1"
    assert credentials.token_expires_at is not None
    assert before + 118 <= credentials.token_expires_at <= time.time() + 121
    fresh = credentials.fetch_token()
    assert fresh is not None
    assert fresh.value == "token-2"
    assert _runs(tmp_path) == 2


def test_a_missing_kubeconfig_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"--kubeconfig .*no such file"):
        load_credentials(tmp_path / "absent")


class TokenChecker:
    """Accepts only the tokens in ``valid``; records the token of every request."""

    def __init__(self) -> None:
        self.valid: set[str] = set()
        self.seen: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.seen.append(token)
        if token not in self.valid:
            return web.json_response({"kind": "Status", "reason": "Unauthorized"}, status=401)
        return web.json_response({"kind": "APIVersions", "versions": ["v1"]})


@pytest.fixture
async def checker() -> AsyncIterator[tuple[TokenChecker, str]]:
    checker = TokenChecker()
    app = web.Application()
    app.router.add_get("/api", checker.handle)
    async with serving(app) as url:
        yield checker, url


async def test_a_401_reruns_the_plugin_once_and_the_next_request_passes(
    tmp_path: Path, checker: tuple[TokenChecker, str]
) -> None:
    server, url = checker
    credentials = load_credentials(_exec_kubeconfig(tmp_path, lifetime=None, server=url))
    server.valid = {"token-2"}  # the first token is revoked
    async with KubeApi(credentials) as api:
        with pytest.raises(ApiError) as raised:
            await api.get_json("/api")
        assert raised.value.status == 401
        assert (await api.get_json("/api"))["versions"] == ["v1"]
        assert (await api.get_json("/api"))["versions"] == ["v1"]
    assert server.seen == ["token-1", "token-2", "token-2"]
    assert _runs(tmp_path) == 2


async def test_many_401s_for_one_token_cause_one_refresh(
    tmp_path: Path, checker: tuple[TokenChecker, str]
) -> None:
    server, url = checker
    credentials = load_credentials(_exec_kubeconfig(tmp_path, lifetime=None, server=url))
    server.valid = {"token-2"}
    async with KubeApi(credentials) as api:
        answers = await asyncio.gather(*(api.get_json("/api") for _ in range(10)), return_exceptions=True)
        assert all(isinstance(answer, ApiError) for answer in answers)
        await asyncio.gather(*(api.get_json("/api") for _ in range(10)))
    assert _runs(tmp_path) == 2


async def test_a_token_is_replaced_before_it_expires(
    tmp_path: Path, checker: tuple[TokenChecker, str]
) -> None:
    server, url = checker
    credentials = load_credentials(_exec_kubeconfig(tmp_path, lifetime=3, server=url))
    server.valid = {"token-1", "token-2"}
    async with KubeApi(credentials) as api:
        await api.get_json("/api")
        await asyncio.sleep(2.5)  # within the last quarter of its lifetime: due, not yet expired
        await api.get_json("/api")
    assert server.seen == ["token-1", "token-2"]


async def test_a_plugin_that_gives_nothing_new_is_not_rerun_per_request(
    tmp_path: Path, checker: tuple[TokenChecker, str]
) -> None:
    server, url = checker
    kubeconfig = _exec_kubeconfig(tmp_path, lifetime=None, server=url)
    credentials = load_credentials(kubeconfig)
    broken_runs = tmp_path / "broken-runs"
    broken = (
        f"import pathlib, sys\npathlib.Path({str(broken_runs)!r}).open('a').write('run\\n')\nsys.exit(1)\n"
    )
    (tmp_path / "plugin.py").write_text(broken)
    async with KubeApi(credentials) as api:
        for _ in range(5):
            with pytest.raises(ApiError):
                await api.get_json("/api")
    # One re-run after the first 401, then held for REFRESH_HOLD_SECONDS: the old token is sent.
    assert REFRESH_HOLD_SECONDS >= 5
    assert broken_runs.read_text().splitlines() == ["run"]
    assert server.seen == ["token-1"] * 5
