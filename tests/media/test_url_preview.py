"""URL previews: off by default; when on, loopback and other internal addresses refused unless allowed
(also behind a name or a redirect), OpenGraph data with the image stored as media, bounded size and time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from ranvier.app import Homeserver
from ranvier.media.preview import parse_open_graph
from tests.ports import free_port

from .conftest import MediaClient, image_bytes, register, start_media_server

PAGE = """<html><head><meta charset="utf-8"><title>Ignored title</title>
<meta property="og:title" content="Tea &amp; biscuits">
<meta property="og:description" content="A page about tea">
<meta property="og:image" content="/pic.png">
</head><body>hello</body></html>"""


@pytest.fixture
async def site() -> AsyncIterator[int]:
    """A web site on 127.0.0.1: a page, its image, a redirect to 127.0.0.2, a big page and a slow one."""
    port = free_port()
    png = image_bytes("PNG", (64, 48))

    async def page(_: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def pic(_: web.Request) -> web.Response:
        return web.Response(body=png, content_type="image/png")

    async def away(_: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://127.0.0.2:{port}/page")

    async def big(_: web.Request) -> web.Response:
        return web.Response(text="<html>" + "x" * 50_000 + "</html>", content_type="text/html")

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(10)
        return web.Response(text=PAGE, content_type="text/html")

    app = web.Application()
    app.router.add_get("/page", page)
    app.router.add_get("/pic.png", pic)
    app.router.add_get("/away", away)
    app.router.add_get("/big", big)
    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port
    finally:
        await runner.cleanup()


async def _preview(client: MediaClient, url: str) -> tuple[int, dict[str, Any]]:
    async with client.session.get(
        client.url("/_matrix/client/v1/media/preview_url"), params={"url": url}, headers=client.auth
    ) as resp:
        return resp.status, await resp.json()


async def _with_server(tmp_path: Path, **preview: Any) -> Homeserver:
    return await start_media_server(tmp_path, url_preview={"enabled": True, **preview})


async def test_off_by_default(alice: MediaClient) -> None:
    status, body = await _preview(alice, "https://example.org/")
    assert (status, body["errcode"]) == (404, "M_UNRECOGNIZED")


async def test_loopback_refused_unless_allowed(tmp_path: Path, site: int) -> None:
    hs = await _with_server(tmp_path, max_bytes=10_000, timeout=1)
    try:
        async with aiohttp.ClientSession() as session:
            alice = await register(hs, session, "alice")
            for url in (
                f"http://127.0.0.1:{site}/page",
                f"http://localhost:{site}/page",  # a name that resolves to loopback
                f"http://[::ffff:127.0.0.1]:{site}/page",
                "http://169.254.169.254/latest/meta-data/",
                "http://10.0.0.1/",
            ):
                status, body = await _preview(alice, url)
                assert (status, body["errcode"]) == (403, "M_FORBIDDEN"), url
            status, body = await _preview(alice, "file:///etc/passwd")
            assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    finally:
        await hs.stop()


async def test_preview_with_image_when_allowed(tmp_path: Path, site: int) -> None:
    hs = await _with_server(tmp_path, ip_range_allowlist=["127.0.0.1/32"], max_bytes=10_000, timeout=1)
    try:
        async with aiohttp.ClientSession() as session:
            alice = await register(hs, session, "alice")
            status, body = await _preview(alice, f"http://127.0.0.1:{site}/page")
            assert status == 200, body
            assert body["og:title"] == "Tea & biscuits"
            assert body["og:description"] == "A page about tea"
            assert body["og:image"].startswith(f"mxc://{hs.server_name}/")
            assert body["og:image:type"] == "image/png"
            server, _, media_id = body["og:image"][len("mxc://") :].partition("/")
            async with session.get(
                alice.url(f"/_matrix/client/v1/media/download/{server}/{media_id}"), headers=alice.auth
            ) as resp:
                assert resp.status == 200
                assert len(await resp.read()) == body["matrix:image:size"]
            # A redirect to an address that is not allowed (127.0.0.2) is refused like the address itself.
            status, body = await _preview(alice, f"http://127.0.0.1:{site}/away")
            assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
            status, body = await _preview(alice, f"http://127.0.0.1:{site}/big")
            assert (status, body["errcode"]) == (502, "M_TOO_LARGE")
            status, body = await _preview(alice, f"http://127.0.0.1:{site}/slow")
            assert status == 504, body
    finally:
        await hs.stop()


def test_open_graph_parsing() -> None:
    assert parse_open_graph(PAGE) == {
        "og:title": "Tea & biscuits",
        "og:description": "A page about tea",
        "og:image": "/pic.png",
    }
    assert parse_open_graph("<title> Plain </title><meta name='description' content='d'>") == {
        "og:title": "Plain",
        "og:description": "d",
    }
    assert (
        parse_open_graph("<meta property='x:evil' content='no'><meta property='og:bad key' content='no'>")
        == {}
    )
