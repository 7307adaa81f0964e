"""A TLS-terminating reverse proxy in front of a server's federation listener, listening on the port that
the server's name carries. It forwards everything unchanged, except that when armed it runs a hook (the
resident's user sends a message: the join gap) before forwarding the next ``send_join``. This works the same
for any resident, which is what makes the join-gap workload comparable between Ranvier and Synapse."""

from __future__ import annotations

import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import yarl
from aiohttp import web

from ranvier.federation.tls import generate_self_signed_cert, server_ssl_context

HOP_BY_HOP = {"content-length", "transfer-encoding", "connection", "keep-alive", "accept-encoding"}


class DelayProxy:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        # Bound now: the resident's server name (fixed at configuration time) carries this port.
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.target_port: int | None = None
        self._hook: Callable[[], Awaitable[None]] | None = None
        self.send_join_forwarded_at: float | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    def arm(self, hook: Callable[[], Awaitable[None]]) -> None:
        self._hook = hook
        self.send_join_forwarded_at = None

    async def start(self, target_port: int) -> None:
        self.target_port = target_port
        self.workdir.mkdir(parents=True, exist_ok=True)
        cert, key = self.workdir / "proxy.crt", self.workdir / "proxy.key"
        generate_self_signed_cert(cert, key, dns_names=(), ip_addresses=("127.0.0.1",))
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=False, limit=0), auto_decompress=False
        )
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, self._sock, ssl_context=server_ssl_context(cert, key)).start()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        body = await request.read()
        if "/send_join/" in request.path and self._hook is not None:
            hook, self._hook = self._hook, None
            await hook()
            self.send_join_forwarded_at = time.perf_counter()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with self._session.request(
            request.method,
            # raw_path: the exact bytes that were signed (X-Matrix covers the URI); no re-encoding.
            yarl.URL(f"https://127.0.0.1:{self.target_port}{request.raw_path}", encoded=True),
            data=body or None,
            headers=headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=600),
        ) as resp:
            payload = await resp.read()
            out = {k: v for k, v in resp.headers.items() if k.lower() not in HOP_BY_HOP}
            return web.Response(status=resp.status, body=payload, headers=out)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
        self._sock.close()
