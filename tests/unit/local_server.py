"""An aiohttp application served on a free loopback port, for the HTTP client's unit tests.

These stand in for no apiserver behaviour worth testing; they only let the real client code
(``kube.KubeApi``: headers, bounds, tokens, Accept negotiation) talk over a real socket.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """The base URL (``http://127.0.0.1:PORT``) while ``app`` is served."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
