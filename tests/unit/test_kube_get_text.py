"""KubeApi.get_text: body bound, error mapping and headers, against a local HTTP server.

This server is not an apiserver stand-in: it checks only what KubeApi does with bytes on the
wire (how much it reads, which error type it raises). The apiserver's /metrics is read in
tests/integration/test_kube_client.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from local_server import serving

from kms_storage_migrator.kube import ApiCredentials, ApiError, KubeApi, ResponseTooLarge, TransportError

BIG = b"x" * 300_000


async def _metrics(request: web.Request) -> web.Response:
    seen = {"accept": request.headers.get("Accept"), "authorization": request.headers.get("Authorization")}
    return web.Response(text="# HELP up\nup 1\n" + json.dumps(seen), content_type="text/plain")


async def _streamed(request: web.Request) -> web.StreamResponse:
    # Chunked, so no Content-Length: the bound must hold while reading.
    reply = web.StreamResponse()
    reply.enable_chunked_encoding()
    await reply.prepare(request)
    for _ in range(3):
        await reply.write(BIG)
    await reply.write_eof()
    return reply


async def _declared(request: web.Request) -> web.Response:
    return web.Response(body=BIG)


async def _forbidden(request: web.Request) -> web.Response:
    message = 'forbidden: User "x" cannot get path "/metrics"'
    status = {"kind": "Status", "reason": "Forbidden", "message": message}
    return web.json_response(status, status=403)


@pytest.fixture
async def server() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/streamed", _streamed)
    app.router.add_get("/declared", _declared)
    app.router.add_get("/forbidden", _forbidden)
    async with serving(app) as url:
        yield url


async def test_text_comes_back_with_token_and_text_accept(server: str) -> None:
    async with KubeApi(ApiCredentials(server=server, token="t0ken")) as api:
        text = await api.get_text("/metrics")
    head, seen = text.rsplit("\n", 1)
    assert head == "# HELP up\nup 1"
    assert json.loads(seen)["authorization"] == "Bearer t0ken"
    assert json.loads(seen)["accept"].startswith("text/plain")


@pytest.mark.parametrize("path", ["/streamed", "/declared"])
async def test_a_body_over_the_bound_is_refused(server: str, path: str) -> None:
    async with KubeApi(ApiCredentials(server=server)) as api:
        with pytest.raises(ResponseTooLarge, match="100000-byte limit") as raised:
            await api.get_text(path, max_bytes=100_000)
    # Callers that already handle "no usable answer" handle this one too.
    assert isinstance(raised.value, TransportError)


async def test_a_body_under_the_bound_is_read_whole(server: str) -> None:
    async with KubeApi(ApiCredentials(server=server)) as api:
        assert len(await api.get_text("/streamed", max_bytes=len(BIG) * 3)) == len(BIG) * 3


async def test_non_2xx_raises_api_error_with_the_status_reason(server: str) -> None:
    async with KubeApi(ApiCredentials(server=server)) as api:
        with pytest.raises(ApiError) as raised:
            await api.get_text("/forbidden")
    assert (raised.value.status, raised.value.reason) == (403, "Forbidden")


async def test_connection_refused_is_a_transport_error() -> None:
    async with KubeApi(ApiCredentials(server="http://127.0.0.1:9")) as api:
        with pytest.raises(TransportError):
            await api.get_text("/metrics")
