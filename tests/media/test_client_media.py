"""The client media endpoints end to end on a real server: uploads (direct, and create + PUT), downloads
(authenticated and legacy), headers, limits and what is left on disk."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ranvier.app import Homeserver
from tests.workers.target import workers_target

from .conftest import MediaClient, register, start_media_server


def _files(hs: Homeserver) -> list[Path]:
    root = Path(hs.config.data_dir) / "media"
    return [p for p in root.rglob("*") if p.is_file()]


async def _local_rows(hs: Homeserver) -> int:
    return int(await hs.storage.db.fetchval("SELECT COUNT(*) FROM local_media"))


def _media_id(uri: str) -> tuple[str, str]:
    assert uri.startswith("mxc://")
    server, _, media_id = uri[len("mxc://") :].partition("/")
    return server, media_id


async def test_upload_and_authenticated_download_round_trip(alice: MediaClient) -> None:
    data = bytes(range(256)) * 100
    uri = await alice.upload(data, "image/png", filename="cat.png")
    server, media_id = _media_id(uri)
    assert server == alice.hs.server_name
    async with alice.session.get(
        alice.url(f"/_matrix/client/v1/media/download/{server}/{media_id}"), headers=alice.auth
    ) as resp:
        assert resp.status == 200
        assert await resp.read() == data
        assert resp.headers["Content-Type"] == "image/png"
        assert resp.headers["Content-Disposition"] == 'inline; filename="cat.png"'
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Content-Security-Policy"].startswith("sandbox;")
        assert resp.headers["Cross-Origin-Resource-Policy"] == "cross-origin"
    # The file name in the path overrides the uploaded one; a non-ASCII one is sent as filename*.
    async with alice.session.get(
        alice.url(f"/_matrix/client/v1/media/download/{server}/{media_id}/th%C3%A9.png"), headers=alice.auth
    ) as resp:
        assert resp.status == 200
        assert await resp.read() == data
        assert resp.headers["Content-Disposition"] == "inline; filename*=utf-8''th%C3%A9.png"
    # Authenticated media needs a token.
    async with alice.session.get(alice.url(f"/_matrix/client/v1/media/download/{server}/{media_id}")) as resp:
        assert resp.status == 401
        assert (await resp.json())["errcode"] == "M_MISSING_TOKEN"


async def test_unsafe_types_are_attachments_and_untyped_uploads_octet_stream(alice: MediaClient) -> None:
    html = b"<html><script>alert(1)</script></html>"
    uri = await alice.upload(html, "text/html", filename="page.html")
    server, media_id = _media_id(uri)
    async with alice.session.get(
        alice.url(f"/_matrix/client/v1/media/download/{server}/{media_id}"), headers=alice.auth
    ) as resp:
        assert await resp.read() == html
        assert resp.headers["Content-Type"] == "text/html"
        assert resp.headers["Content-Disposition"] == 'attachment; filename="page.html"'
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
    # No file name given: none in the header. A malformed Content-Type is stored as octet-stream.
    uri = await alice.upload(b"abc", "not a type")
    server, media_id = _media_id(uri)
    async with alice.session.get(
        alice.url(f"/_matrix/client/v1/media/download/{server}/{media_id}"), headers=alice.auth
    ) as resp:
        assert await resp.read() == b"abc"
        assert resp.headers["Content-Type"] == "application/octet-stream"
        assert resp.headers["Content-Disposition"] == "attachment"


async def test_identical_uploads_share_one_file(alice: MediaClient) -> None:
    before = len(_files(alice.hs))
    a = await alice.upload(b"same bytes" * 1000, "text/plain")
    b = await alice.upload(b"same bytes" * 1000, "text/plain")
    assert a != b
    assert len(_files(alice.hs)) == before + 1


async def test_create_then_put_upload(alice: MediaClient, media_server: Homeserver) -> None:
    async with alice.session.post(alice.url("/_matrix/media/v1/create"), headers=alice.auth) as resp:
        assert resp.status == 200
        created = await resp.json()
    server, media_id = _media_id(created["content_uri"])
    assert created["unused_expires_at"] > 0
    download = alice.url(f"/_matrix/client/v1/media/download/{server}/{media_id}")
    # Not uploaded yet: 504 M_NOT_YET_UPLOADED once the (zero) wait is over.
    async with alice.session.get(download, params={"timeout_ms": "0"}, headers=alice.auth) as resp:
        assert resp.status == 504
        assert (await resp.json())["errcode"] == "M_NOT_YET_UPLOADED"

    # A download waiting for the upload gets it as soon as it is done.
    async def wait_for_it() -> bytes:
        async with alice.session.get(download, params={"timeout_ms": "20000"}, headers=alice.auth) as r:
            assert r.status == 200
            return await r.read()

    waiter = asyncio.create_task(wait_for_it())
    await asyncio.sleep(0.1)
    bob = await register(media_server, alice.session, "bob")
    put = alice.url(f"/_matrix/media/v3/upload/{server}/{media_id}")
    async with alice.session.put(
        put, data=b"late bytes", headers={**bob.auth, "Content-Type": "text/plain"}
    ) as r:
        assert r.status == 403
        assert (await r.json())["errcode"] == "M_FORBIDDEN"
    async with alice.session.put(
        put,
        data=b"late bytes",
        params={"filename": "late.txt"},
        headers={**alice.auth, "Content-Type": "text/plain"},
    ) as r:
        assert r.status == 200, await r.text()
        assert await r.json() == {"content_uri": created["content_uri"]}
    assert await waiter == b"late bytes"
    async with alice.session.get(download, headers=alice.auth) as resp:
        assert resp.headers["Content-Disposition"] == 'inline; filename="late.txt"'
    # Never overwritten.
    async with alice.session.put(
        put, data=b"other", headers={**alice.auth, "Content-Type": "text/plain"}
    ) as r:
        assert r.status == 409
        assert (await r.json())["errcode"] == "M_CANNOT_OVERWRITE_MEDIA"
    # Ids never created here.
    unknown = alice.url(f"/_matrix/media/v3/upload/{server}/neverCreated123")
    async with alice.session.put(unknown, data=b"x", headers=alice.auth) as r:
        assert r.status == 404
        assert (await r.json())["errcode"] == "M_NOT_FOUND"


async def test_pending_uploads_are_limited(tmp_path: Path) -> None:
    hs = await start_media_server(tmp_path, max_pending_uploads=2)
    try:
        async with aiohttp.ClientSession() as session:
            alice = await register(hs, session, "alice")
            statuses = []
            for _ in range(3):
                async with session.post(alice.url("/_matrix/media/v1/create"), headers=alice.auth) as resp:
                    statuses.append((resp.status, (await resp.json()).get("errcode")))
            assert statuses == [(200, None), (200, None), (429, "M_LIMIT_EXCEEDED")]
    finally:
        await hs.stop()


async def test_oversize_upload_refused_before_reading_and_nothing_stored(alice: MediaClient) -> None:
    limit = alice.hs.config.media.max_upload_size
    files_before = len(_files(alice.hs))
    # Declared too large: refused from the Content-Length alone.
    async with alice.session.post(
        alice.url("/_matrix/media/v3/upload"),
        data=b"x" * (limit + 1),
        headers={**alice.auth, "Content-Type": "application/octet-stream"},
    ) as resp:
        assert resp.status == 413
        body = await resp.json()
        assert body["errcode"] == "M_TOO_LARGE"

    # Chunked, with no length: cut off once it passes the limit.
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(limit // 65536 + 4):
            yield b"y" * 65536

    async with aiohttp.ClientSession() as session:
        try:
            async with session.post(
                alice.url("/_matrix/media/v3/upload"),
                data=chunks(),
                headers={**alice.auth, "Content-Type": "application/octet-stream"},
            ) as resp:
                assert resp.status == 413
                body = await resp.json()
                assert body["errcode"] == "M_TOO_LARGE"
                assert str(limit) in body["error"]
        except aiohttp.ClientOSError:
            pass  # the server may close while the client is still sending: what matters is below
    assert await _local_rows(alice.hs) == 0
    assert len(_files(alice.hs)) == files_before
    # A body just at the limit is accepted.
    await alice.upload(b"z" * limit)


async def test_media_config_both_paths(alice: MediaClient) -> None:
    for path in ("/_matrix/client/v1/media/config", "/_matrix/media/v3/config"):
        async with alice.session.get(alice.url(path), headers=alice.auth) as resp:
            assert resp.status == 200
            assert await resp.json() == {"m.upload.size": alice.hs.config.media.max_upload_size}


async def test_bad_ids_and_unknown_media(alice: MediaClient) -> None:
    name = alice.hs.server_name
    cases = {
        f"/_matrix/client/v1/media/download/{name}/bad.id": (400, "M_INVALID_PARAM"),
        f"/_matrix/client/v1/media/download/{name}/..%2F..%2Fetc": (400, "M_INVALID_PARAM"),
        "/_matrix/client/v1/media/download/not_a%20server/abc": (400, "M_INVALID_PARAM"),
        f"/_matrix/client/v1/media/download/{name}/doesNotExist": (404, "M_NOT_FOUND"),
        f"/_matrix/client/v1/media/thumbnail/{name}/doesNotExist?width=32&height=32": (404, "M_NOT_FOUND"),
        f"/_matrix/client/v1/media/thumbnail/{name}/x?width=0&height=32": (400, "M_INVALID_PARAM"),
        f"/_matrix/client/v1/media/thumbnail/{name}/x?width=32": (400, "M_MISSING_PARAM"),
        f"/_matrix/client/v1/media/thumbnail/{name}/x?width=3&height=3&method=zoom": (400, "M_INVALID_PARAM"),
    }
    for path, (status, errcode) in cases.items():
        async with alice.session.get(alice.url(path), headers=alice.auth) as resp:
            assert (resp.status, (await resp.json())["errcode"]) == (status, errcode), path


async def test_legacy_endpoints_frozen_by_default(alice: MediaClient) -> None:
    uri = await alice.upload(b"new media", "text/plain")
    server, media_id = _media_id(uri)
    async with alice.session.get(alice.url(f"/_matrix/media/v3/download/{server}/{media_id}")) as resp:
        assert resp.status == 404
        assert (await resp.json())["errcode"] == "M_NOT_FOUND"


async def test_legacy_download_round_trip_when_not_frozen(tmp_path: Path) -> None:
    hs = await start_media_server(tmp_path, freeze_unauthenticated_after_ms=None)
    try:
        async with aiohttp.ClientSession() as session:
            alice = await register(hs, session, "alice")
            for prefix in ("/_matrix/media/v3", "/_matrix/media/r0"):
                uri = await alice.upload(b"legacy " + prefix.encode(), "text/plain", filename="a.txt")
                server, media_id = _media_id(uri)
                async with session.get(alice.url(f"{prefix}/download/{server}/{media_id}")) as resp:
                    assert resp.status == 200
                    assert await resp.read() == b"legacy " + prefix.encode()
                    assert resp.headers["Content-Disposition"] == 'inline; filename="a.txt"'
                async with session.get(alice.url(f"{prefix}/download/{server}/{media_id}/b.txt")) as resp:
                    assert resp.headers["Content-Disposition"] == 'inline; filename="b.txt"'
                # Remote media is never fetched for allow_remote=false (no loops between servers).
                async with session.get(
                    alice.url(f"{prefix}/download/other.example/{media_id}"), params={"allow_remote": "false"}
                ) as resp:
                    assert resp.status == 404
    finally:
        await hs.stop()


async def test_upload_rate_limited_per_user(tmp_path: Path) -> None:
    hs = await start_media_server(tmp_path, upload_rate={"per_second": 0.001, "burst": 2})
    try:
        async with aiohttp.ClientSession() as session:
            alice = await register(hs, session, "alice")
            bob = await register(hs, session, "bob")
            await alice.upload(b"1")
            await alice.upload(b"2")
            async with session.post(
                alice.url("/_matrix/media/v3/upload"), data=b"3", headers=alice.auth
            ) as r:
                assert r.status == 429
                body = await r.json()
                assert body["errcode"] == "M_LIMIT_EXCEEDED" and body["retry_after_ms"] > 0
            await bob.upload(b"bob's own bucket")
    finally:
        await hs.stop()


async def test_versions_claim_authenticated_media_and_it_answers(alice: MediaClient) -> None:
    async with alice.session.get(alice.url("/_matrix/client/versions")) as resp:
        versions = (await resp.json())["versions"]
    assert "v1.11" in versions and "v1.12" in versions
    uri = await alice.upload(b"v1.11", "text/plain")
    server, media_id = _media_id(uri)
    async with alice.session.get(
        alice.url(f"/_matrix/client/v1/media/download/{server}/{media_id}"), headers=alice.auth
    ) as resp:
        assert resp.status == 200 and await resp.read() == b"v1.11"


async def test_unauthenticated_upload_refused_before_the_body(alice: MediaClient) -> None:
    async with alice.session.post(
        alice.url("/_matrix/media/v3/upload"), data=b"q" * 500_000, headers={"Content-Type": "text/plain"}
    ) as resp:
        assert resp.status == 401
        assert (await resp.json())["errcode"] == "M_MISSING_TOKEN"
    async with alice.session.put(
        alice.url(f"/_matrix/media/v3/upload/{alice.hs.server_name}/someId"),
        data=b"q" * 1000,
        headers={"Authorization": "Bearer wrong"},
    ) as resp:
        assert resp.status == 401
        assert (await resp.json())["errcode"] == "M_UNKNOWN_TOKEN"
    assert await _local_rows(alice.hs) == 0
    assert _files(alice.hs) == []


async def _slow_body(parts: int, pause: float) -> AsyncIterator[bytes]:
    for _ in range(parts):
        yield b"s" * 1000
        await asyncio.sleep(pause)


async def _slow_upload(hs: Homeserver) -> tuple[int, dict[str, Any]]:
    if workers_target():
        # The deployment's routing proxy reads a request's whole body before passing it on, as nginx does by
        # default (proxy_request_buffering on): the media worker gets it at once, and how long a client may
        # take to send it is the proxy's timeout, not media.upload_timeout.
        pytest.skip("RANVIER_TARGET=workers: the routing proxy buffers request bodies (upload timeouts)")
    async with aiohttp.ClientSession() as session:
        alice = await register(hs, session, "alice")
        try:
            async with session.post(
                alice.url("/_matrix/media/v3/upload"), data=_slow_body(4, 0.6), headers=alice.auth
            ) as resp:
                return resp.status, await resp.json()
        except aiohttp.ClientError as e:
            return 0, {"error": str(e)}


async def test_authenticated_upload_gets_upload_timeout_not_body_timeout(tmp_path: Path) -> None:
    # The listener's body_timeout (1 s here) is for JSON bodies and requests not yet authenticated; an
    # authenticated upload gets media.upload_timeout.
    hs = await start_media_server(tmp_path, request_limits={"body_timeout": 1}, upload_timeout=30)
    try:
        status, body = await _slow_upload(hs)
        assert status == 200, body
        assert body["content_uri"].startswith("mxc://")
    finally:
        await hs.stop()


async def test_upload_timeout_ends_a_slow_upload(tmp_path: Path) -> None:
    hs = await start_media_server(tmp_path, request_limits={"body_timeout": 30}, upload_timeout=1)
    try:
        status, body = await _slow_upload(hs)
        assert status in (408, 0), body  # 408 M_UNKNOWN, or the connection closed while still sending
        if status == 408:
            assert body["errcode"] == "M_UNKNOWN"
        assert await _local_rows(hs) == 0
        assert _files(hs) == []
    finally:
        await hs.stop()


async def test_user_storage_quota(tmp_path: Path) -> None:
    hs = await start_media_server(tmp_path, max_user_storage_bytes=1000)
    try:
        async with aiohttp.ClientSession() as session:
            alice = await register(hs, session, "alice")
            bob = await register(hs, session, "bob")
            await alice.upload(b"a" * 600)
            # Declared: refused before the body.
            async with session.post(
                alice.url("/_matrix/media/v3/upload"), data=b"b" * 600, headers=alice.auth
            ) as r:
                assert r.status == 403
                assert (await r.json())["errcode"] == "M_FORBIDDEN"

            # Chunked (no length): refused once the body is in, and not kept.
            async def chunks() -> AsyncIterator[bytes]:
                yield b"c" * 300
                yield b"c" * 300

            async with session.post(
                alice.url("/_matrix/media/v3/upload"), data=chunks(), headers=alice.auth
            ) as r:
                assert r.status == 403
                assert (await r.json())["errcode"] == "M_FORBIDDEN"
            assert await _local_rows(hs) == 1
            assert len(_files(hs)) == 1
            await alice.upload(b"d" * 400)  # exactly up to the quota
            await bob.upload(b"e" * 1000)  # per user
    finally:
        await hs.stop()
