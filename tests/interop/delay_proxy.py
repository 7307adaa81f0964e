"""A TLS reverse proxy on loopback that can hold a joining server's send_join.

It stands in front of a Ranvier federation listener so that a test can widen the make_join/send_join gap
of a *remote* joiner it does not control (a real Synapse): the proxy forwards every request unchanged,
except that ``PUT /_matrix/federation/v2/send_join/...`` waits until the test calls ``release()``.

The peer must know Ranvier by the proxy's address, so Ranvier's server name is ``127.0.0.1:<proxy port>``
while it listens elsewhere. X-Matrix signatures cover method, URI, origin, destination and body, none of
which the proxy changes, so authentication passes through it untouched. TLS: the proxy terminates TLS with
its own self-signed certificate and speaks TLS again (unverified, loopback only) to Ranvier.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import aiohttp
from aiohttp import web
from yarl import URL

from ranvier.federation.tls import generate_self_signed_cert

SEND_JOIN_PREFIX = "/_matrix/federation/v2/send_join/"
# Hop-by-hop headers (RFC 9110 section 7.6.1) and those aiohttp recomputes for the new connection.
_DROPPED = {"host", "connection", "keep-alive", "transfer-encoding", "content-length", "upgrade", "te"}


class DelayProxy:
    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.upstream: str | None = None  # "https://127.0.0.1:<ranvier port>", set before traffic flows
        self.hold_send_join = False
        self.send_join_arrived = asyncio.Event()
        self._released = asyncio.Event()
        self.send_join_forwarded_at: float | None = None  # loop time the held request went on
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cert, key = self.workdir / "proxy.crt", self.workdir / "proxy.key"
        generate_self_signed_cert(cert, key, dns_names=(), ip_addresses=("127.0.0.1",))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=False), auto_decompress=False
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=context).start()

    async def close(self) -> None:
        self._released.set()  # never leave a held request hanging at shutdown
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def release(self) -> None:
        self._released.set()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self.upstream is not None and self._session is not None
        body = await request.read()
        if request.method == "PUT" and request.path.startswith(SEND_JOIN_PREFIX) and self.hold_send_join:
            self.send_join_arrived.set()
            await self._released.wait()
            self.send_join_forwarded_at = asyncio.get_running_loop().time()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROPPED}
        async with self._session.request(
            request.method,
            # Encoded as received: the signed URI must reach Ranvier byte for byte (yarl would requote).
            URL(self.upstream + request.raw_path, encoded=True),
            headers=headers,
            data=body,
            allow_redirects=False,
        ) as upstream:
            payload = await upstream.read()
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in _DROPPED}
            return web.Response(status=upstream.status, body=payload, headers=out)
