"""Media over federation between two real Ranvier servers on loopback, and against a canned peer that only
has the legacy endpoint: fetched for local users, stored once, bounded in size, errors as Matrix errors."""

from __future__ import annotations

import asyncio
import io
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from PIL import Image

from ranvier.app import Homeserver
from ranvier.federation.tls import generate_self_signed_cert
from tests.ports import free_port

from .conftest import MediaClient, image_bytes, register, start_media_server


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Homeserver, Homeserver]]:
    a = await start_media_server(tmp_path / "a", tls=True)
    b = await start_media_server(tmp_path / "b", tls=True, max_remote_size=200_000)
    try:
        yield a, b
    finally:
        await b.stop()
        await a.stop()


def _ids(uri: str) -> tuple[str, str]:
    server, _, media_id = uri[len("mxc://") :].partition("/")
    return server, media_id


async def _get(client: MediaClient, path: str, **params: str) -> tuple[int, bytes, dict[str, str]]:
    async with client.session.get(client.url(path), params=params, headers=client.auth) as resp:
        return resp.status, await resp.read(), dict(resp.headers)


async def test_remote_media_download_and_thumbnail(pair: tuple[Homeserver, Homeserver]) -> None:
    a, b = pair
    async with aiohttp.ClientSession() as session:
        alice = await register(a, session, "alice")
        bob = await register(b, session, "bob")
        data = image_bytes("PNG", (640, 480))
        uri = await alice.upload(data, "image/png", filename="holiday.png")
        server, media_id = _ids(uri)
        assert server == a.server_name

        status, body, headers = await _get(bob, f"/_matrix/client/v1/media/download/{server}/{media_id}")
        assert status == 200, body
        assert body == data
        assert headers["Content-Type"] == "image/png"
        assert headers["Content-Disposition"] == 'inline; filename="holiday.png"'
        assert await b.storage.db.fetchval("SELECT COUNT(*) FROM remote_media") == 1

        status, body, _ = await _get(
            bob,
            f"/_matrix/client/v1/media/thumbnail/{server}/{media_id}",
            width="32",
            height="32",
            method="crop",
        )
        assert status == 200, body
        assert Image.open(io.BytesIO(body)).size == (32, 32)

        # A's federation thumbnail endpoint, as another server would call it (multipart/mixed).
        path = f"/_matrix/federation/v1/media/thumbnail/{media_id}"
        async with b.federation_client.stream(
            a.server_name, path, {"width": 96, "height": 96, "method": "crop"}, timeout=10
        ) as resp:
            assert resp.status == 200
            reader = aiohttp.MultipartReader(resp.headers, resp.content)
            meta = await reader.next()
            assert isinstance(meta, aiohttp.BodyPartReader) and await meta.json() == {}
            part = await reader.next()
            assert isinstance(part, aiohttp.BodyPartReader)
            assert part.headers["Content-Type"] == "image/png"
            assert part.headers["Content-Disposition"].startswith("inline")
            assert Image.open(io.BytesIO(await part.read())).size == (96, 96)

        # Cached: served by B with A gone, and still one row, one file.
        await a.stop()
        status, body, _ = await _get(bob, f"/_matrix/client/v1/media/download/{server}/{media_id}")
        assert status == 200 and body == data
        assert await b.storage.db.fetchval("SELECT COUNT(*) FROM remote_media") == 1


async def test_remote_errors(pair: tuple[Homeserver, Homeserver]) -> None:
    a, b = pair
    async with aiohttp.ClientSession() as session:
        alice = await register(a, session, "alice")
        bob = await register(b, session, "bob")
        big = await alice.upload(b"x" * 300_000, "application/octet-stream")  # over B's 200 kB remote limit
        server, media_id = _ids(big)
        status, body, _ = await _get(bob, f"/_matrix/client/v1/media/download/{server}/{media_id}")
        assert status == 502 and b"M_TOO_LARGE" in body
        assert await b.storage.db.fetchval("SELECT COUNT(*) FROM remote_media") == 0
        assert not [p for p in (Path(b.config.data_dir) / "media").rglob("*") if p.is_file()]

        status, body, _ = await _get(bob, f"/_matrix/client/v1/media/download/{server}/noSuchMedia")
        assert status == 404 and b"M_NOT_FOUND" in body

        dead = f"127.0.0.1:{free_port()}"
        status, body, _ = await _get(bob, f"/_matrix/client/v1/media/download/{dead}/abc")
        assert status == 502 and b"M_UNKNOWN" in body


@pytest.fixture
async def legacy_peer(tmp_path: Path) -> AsyncIterator[tuple[str, list[str]]]:
    """A TLS server that, like a server predating Matrix 1.11, answers the federation media endpoint with
    404 M_UNRECOGNIZED and serves the legacy download endpoint."""
    seen: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(request.path_qs)
        if (
            request.path.startswith("/_matrix/media/v3/download/")
            and request.query.get("allow_remote") == "false"
        ):
            await asyncio.sleep(0.3)  # slow enough for concurrent requests to overlap
            return web.Response(
                body=b"legacy bytes",
                headers={
                    "Content-Type": "text/plain",
                    "Content-Disposition": "inline; filename*=utf-8''na%C3%AFve.txt",
                },
            )
        return web.json_response({"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}, status=404)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    cert, key = tmp_path / "peer.crt", tmp_path / "peer.key"
    generate_self_signed_cert(cert, key)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx)
    await site.start()
    try:
        yield f"127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


async def test_fallback_to_the_legacy_endpoint(tmp_path: Path, legacy_peer: tuple[str, list[str]]) -> None:
    peer, seen = legacy_peer
    b = await start_media_server(tmp_path / "b", tls=True)
    try:
        async with aiohttp.ClientSession() as session:
            bob = await register(b, session, "bob")
            status, body, headers = await _get(bob, f"/_matrix/client/v1/media/download/{peer}/oldMedia")
            assert status == 200, body
            assert body == b"legacy bytes"
            assert headers["Content-Disposition"] == "inline; filename*=utf-8''na%C3%AFve.txt"
        assert seen == [
            "/_matrix/federation/v1/media/download/oldMedia",
            f"/_matrix/media/v3/download/{peer}/oldMedia?allow_remote=false",
        ]
    finally:
        await b.stop()


async def test_concurrent_requests_fetch_once(tmp_path: Path, legacy_peer: tuple[str, list[str]]) -> None:
    peer, seen = legacy_peer
    b = await start_media_server(tmp_path / "b", tls=True)
    try:
        async with aiohttp.ClientSession() as session:
            bob = await register(b, session, "bob")
            answers = await asyncio.gather(
                *(_get(bob, f"/_matrix/client/v1/media/download/{peer}/shared") for _ in range(5))
            )
            assert [(status, body) for status, body, _ in answers] == [(200, b"legacy bytes")] * 5
        assert len(seen) == 2  # one fetch (the federation endpoint, then the legacy one) for all five
        assert await b.storage.db.fetchval("SELECT COUNT(*) FROM remote_media") == 1
        assert b.remote_media is not None and b.remote_media._in_flight == {}
    finally:
        await b.stop()


async def test_remote_cache_is_bounded(tmp_path: Path) -> None:
    a = await start_media_server(tmp_path / "a", tls=True)
    b = await start_media_server(tmp_path / "b", tls=True, max_remote_cache_bytes=250_000)
    try:
        async with aiohttp.ClientSession() as session:
            alice = await register(a, session, "alice")
            bob = await register(b, session, "bob")
            uris = [await alice.upload(bytes([i]) * 100_000, "application/octet-stream") for i in range(3)]
            for uri in uris:
                server, media_id = _ids(uri)
                status, _, _ = await _get(bob, f"/_matrix/client/v1/media/download/{server}/{media_id}")
                assert status == 200
            # 300 kB fetched, 250 kB allowed: the first fetched is forgotten, file and all.
            rows = await b.storage.db.fetchall("SELECT media_id FROM remote_media ORDER BY fetched_ts")
            assert [r[0] for r in rows] == [_ids(u)[1] for u in uris[1:]]
            assert (
                len([p for p in (Path(b.config.data_dir) / "media" / "content").rglob("*") if p.is_file()])
                == 2
            )
            # Asked for again, it is fetched again.
            server, media_id = _ids(uris[0])
            status, body, _ = await _get(bob, f"/_matrix/client/v1/media/download/{server}/{media_id}")
            assert status == 200 and body == bytes([0]) * 100_000
    finally:
        await b.stop()
        await a.stop()


async def test_federation_media_endpoint_needs_a_signature(pair: tuple[Homeserver, Homeserver]) -> None:
    a, b = pair
    async with aiohttp.ClientSession() as session:
        alice = await register(a, session, "alice")
        uri = await alice.upload(b"for servers only", "text/plain")
        _, media_id = _ids(uri)
        fed = f"https://127.0.0.1:{a.ports['federation']}/_matrix/federation/v1/media/download/{media_id}"
        async with session.get(fed, ssl=False) as resp:
            assert resp.status == 401
            assert (await resp.json())["errcode"] == "M_UNAUTHORIZED"
    # Signed (by B): the media; an unknown id or a quarantined one: 404; a bad id: 400.
    for wanted, status in ((media_id, 200), ("unknownMedia", 404), ("bad.id", 400)):
        path = f"/_matrix/federation/v1/media/download/{wanted}"
        async with b.federation_client.stream(a.server_name, path, timeout=10) as resp:
            assert resp.status == status, wanted
    await a.media.store.set_local_quarantined(media_id, True)
    async with b.federation_client.stream(
        a.server_name, f"/_matrix/federation/v1/media/download/{media_id}", timeout=10
    ) as resp:
        assert resp.status == 404


@pytest.fixture
async def garbage_peer(tmp_path: Path) -> AsyncIterator[str]:
    """A TLS server whose federation media answers are malformed in a different way per media id."""

    async def handler(request: web.Request) -> web.StreamResponse:
        kind = request.match_info["media_id"]
        if kind == "notMultipart":
            return web.Response(body=b"just bytes", content_type="image/png")
        if kind == "noBoundary":
            return web.Response(body=b"--x\r\n\r\n{}\r\n--x--", headers={"Content-Type": "multipart/mixed"})
        if kind == "wrongBoundary":
            return web.Response(
                body=b"--other\r\nContent-Type: application/json\r\n\r\n{}\r\n--other--\r\n",
                headers={"Content-Type": "multipart/mixed; boundary=expected"},
            )
        if kind == "onePart":
            return web.Response(
                body=b"--b\r\nContent-Type: application/json\r\n\r\n{}\r\n--b--\r\n",
                headers={"Content-Type": "multipart/mixed; boundary=b"},
            )
        if kind == "truncated":
            return web.Response(
                body=b"--b\r\nContent-Type: application/json\r\n\r\n{}\r\n--b\r\n"
                b"Content-Type: image/png\r\n\r\nabc",
                headers={"Content-Type": "multipart/mixed; boundary=b"},
            )
        if kind == "badLocation":
            return web.Response(
                body=b"--b\r\nContent-Type: application/json\r\n\r\n{}\r\n--b\r\nLocation: file:///etc/passwd\r\n\r\n\r\n--b--\r\n",
                headers={"Content-Type": "multipart/mixed; boundary=b"},
            )
        if kind == "loopbackLocation":
            return web.Response(
                body=b"--b\r\nContent-Type: application/json\r\n\r\n{}\r\n--b\r\nLocation: http://127.0.0.1:9/x\r\n\r\n\r\n--b--\r\n",
                headers={"Content-Type": "multipart/mixed; boundary=b"},
            )
        return web.json_response({"errcode": "M_UNKNOWN", "error": "boom"}, status=500)

    app = web.Application()
    app.router.add_get("/_matrix/federation/v1/media/download/{media_id}", handler)
    cert, key = tmp_path / "g.crt", tmp_path / "g.key"
    generate_self_signed_cert(cert, key)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx).start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_malformed_remote_answers_are_502_and_nothing_kept(tmp_path: Path, garbage_peer: str) -> None:
    b = await start_media_server(tmp_path / "b", tls=True)
    try:
        async with aiohttp.ClientSession() as session:
            bob = await register(b, session, "bob")
            for kind in (
                "notMultipart", "noBoundary", "wrongBoundary", "onePart", "truncated", "badLocation",
                "loopbackLocation", "serverError",
            ):  # fmt: skip
                status, body, _ = await _get(bob, f"/_matrix/client/v1/media/download/{garbage_peer}/{kind}")
                assert status == 502, (kind, body)
                assert b"M_UNKNOWN" in body, kind
        assert await b.storage.db.fetchval("SELECT COUNT(*) FROM remote_media") == 0
        assert not [p for p in (Path(b.config.data_dir) / "media").rglob("*") if p.is_file()]
    finally:
        await b.stop()
