"""Slow and unfinished connections are closed, oversized bodies refused unread, and /versions keeps
answering throughout (issue 12, defect 5). Real sockets against a real server on loopback."""

from __future__ import annotations

import asyncio
import json
from contextlib import suppress
from pathlib import Path

import aiohttp
import pytest
import yaml

from ranvier.config import ConfigError, parse_config, render_config

from .limits_server import RawConnection, limited_server, request_head

VERSIONS = "/_matrix/client/versions"


async def _trickle(conns: list[RawConnection], stop: asyncio.Event) -> None:
    """Slowloris: one more header line on every connection, again and again, never the blank line."""
    n = 0
    while not stop.is_set():
        n += 1
        for c in conns:
            await c.send(f"X-Slow-{n}: a\r\n".encode())
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.2)


async def _versions(port: int) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{VERSIONS}", timeout=aiohttp.ClientTimeout(total=10)) as resp,
    ):
        return resp.status


async def test_slowloris_connections_are_closed(tmp_path: Path) -> None:
    async with limited_server(tmp_path) as hs:
        for listener in ("client", "federation"):
            port = hs.ports[listener]
            conns = [await RawConnection.open(port) for _ in range(20)]
            for c in conns:
                await c.send(b"GET " + VERSIONS.encode() + b" HTTP/1.1\r\nHost: x\r\n")
            stop = asyncio.Event()
            trickler = asyncio.create_task(_trickle(conns, stop))
            try:
                closed = await asyncio.gather(*(c.closed_by_server() for c in conns))
            finally:
                stop.set()
                await trickler
                for c in conns:
                    c.close()
            assert all(closed), f"{closed.count(False)} of 20 slowloris connections still open ({listener})"
            assert hs.guards[listener].stats.head_timeouts >= 20


async def test_silent_and_idle_connections_are_closed(tmp_path: Path) -> None:
    async with limited_server(tmp_path) as hs:
        port = hs.ports["client"]
        silent = await RawConnection.open(port)  # connects and never sends a byte
        idle = await RawConnection.open(port)  # one complete request, then nothing (keep-alive)
        await idle.send(request_head("GET", VERSIONS, port))
        try:
            assert await silent.closed_by_server()
            assert await idle.closed_by_server()
        finally:
            silent.close()
            idle.close()
        # A well-behaved client still gets its answer.
        assert await _versions(port) == 200


async def test_unfinished_body_is_answered_408_and_closed(tmp_path: Path) -> None:
    async with limited_server(tmp_path) as hs:
        port = hs.ports["federation"]
        conn = await RawConnection.open(port)
        await conn.send(
            request_head(
                "PUT",
                "/_matrix/federation/v1/send/t1",
                port,
                Content_Type="application/json",
                Content_Length=500_000,
            )
        )
        await conn.send(b'{"pdus": [' + b" " * 10_000)
        try:
            status, body = await conn.response()
        finally:
            conn.close()
        assert status == 408, body
        assert json.loads(body)["errcode"] == "M_UNKNOWN"
        assert hs.guards["federation"].stats.body_timeouts >= 1
        assert hs.guards["federation"].unauthenticated_bodies == 0
        assert hs.guards["federation"].unauthenticated_body_bytes == 0


async def test_declared_content_length_over_the_limit_is_refused_unread(tmp_path: Path) -> None:
    async with limited_server(tmp_path, max_federation_body_bytes=64 * 1024) as hs:
        cases = [
            ("federation", "PUT", "/_matrix/federation/v1/send/t1", 8 * 1024 * 1024 + 1),
            ("federation", "PUT", "/_matrix/federation/v2/invite/!r:x/$e", 64 * 1024 + 1),
            ("client", "POST", "/_matrix/client/v3/login", 1024 * 1024 + 1),
        ]
        for listener, method, path, length in cases:
            port = hs.ports[listener]
            conn = await RawConnection.open(port)
            # Only the head: the server must answer without waiting for a body that never comes.
            await conn.send(
                request_head(method, path, port, Content_Type="application/json", Content_Length=length)
            )
            try:
                status, body = await conn.response()
            finally:
                conn.close()
            assert status == 413, (path, status, body)
            assert json.loads(body)["errcode"] == "M_TOO_LARGE"
        # Under the limit, the same endpoint reads the body and answers as usual (401: not signed).
        port = hs.ports["federation"]
        async with (
            aiohttp.ClientSession() as session,
            session.put(
                f"http://127.0.0.1:{port}/_matrix/federation/v1/send/t2", data=b'{"pdus": []}'
            ) as resp,
        ):
            assert resp.status == 401
            assert (await resp.json())["errcode"] == "M_UNAUTHORIZED"


async def test_chunked_body_over_the_limit_is_refused(tmp_path: Path) -> None:
    async with limited_server(tmp_path, max_client_body_bytes=4096) as hs:
        port = hs.ports["client"]
        conn = await RawConnection.open(port)
        await conn.send(request_head("POST", "/_matrix/client/v3/login", port, Transfer_Encoding="chunked"))
        chunk = b"x" * 3000
        for _ in range(3):
            await conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        try:
            status, body = await conn.response()
        finally:
            conn.close()
        assert status == 413, body
        assert json.loads(body)["errcode"] == "M_TOO_LARGE"


async def test_unauthenticated_bodies_are_capped(tmp_path: Path) -> None:
    async with limited_server(
        tmp_path, max_unauthenticated_bodies=3, max_unauthenticated_body_bytes=1024 * 1024, body_timeout=30
    ) as hs:
        port = hs.ports["federation"]
        guard = hs.guards["federation"]
        held = []
        try:
            # Three unfinished bodies take every slot ...
            for i in range(3):
                c = await RawConnection.open(port)
                await c.send(
                    request_head("PUT", f"/_matrix/federation/v1/send/h{i}", port, Content_Length=9000)
                )
                await c.send(b"{")
                held.append(c)
            for _ in range(100):
                if guard.unauthenticated_bodies == 3:
                    break
                await asyncio.sleep(0.05)
            assert guard.unauthenticated_bodies == 3
            # ... so a fourth is answered 429 at once, without being buffered.
            fourth = await RawConnection.open(port)
            await fourth.send(request_head("PUT", "/_matrix/federation/v1/send/h4", port, Content_Length=10))
            status, body = await fourth.response()
            fourth.close()
            assert status == 429, body
            assert json.loads(body)["errcode"] == "M_LIMIT_EXCEEDED"
        finally:
            for c in held:
                c.close()
        for _ in range(100):
            if guard.unauthenticated_bodies == 0:
                break
            await asyncio.sleep(0.05)
        assert guard.unauthenticated_bodies == 0

        # The byte budget: 700 KB each, the second one pushes the total over 1 MiB.
        first = await RawConnection.open(port)
        second = await RawConnection.open(port)
        try:
            for i, c in enumerate((first, second)):
                await c.send(
                    request_head("PUT", f"/_matrix/federation/v1/send/b{i}", port, Content_Length=900_000)
                )
                await c.send(b" " * 700_000)
                for _ in range(100):
                    if guard.unauthenticated_body_bytes >= 700_000 or guard.stats.over_budget:
                        break
                    await asyncio.sleep(0.05)
            status, body = await second.response()
            assert status == 429, body
            assert guard.unauthenticated_body_bytes <= 1024 * 1024
        finally:
            first.close()
            second.close()


async def test_versions_answers_while_connections_are_abused(tmp_path: Path) -> None:
    async with limited_server(tmp_path, max_connections=30, header_timeout=30, body_timeout=30) as hs:
        port = hs.ports["client"]
        slow = [await RawConnection.open(port) for _ in range(60)]  # twice the cap
        for c in slow:
            await c.send(b"GET " + VERSIONS.encode() + b" HTTP/1.1\r\n")
        unfinished = []
        for _ in range(5):
            c = await RawConnection.open(port)
            await c.send(request_head("POST", "/_matrix/client/v3/login", port, Content_Length=100_000))
            await c.send(b"{")
            unfinished.append(c)
        stop = asyncio.Event()
        trickler = asyncio.create_task(_trickle(slow, stop))
        try:
            statuses = [await _versions(port) for _ in range(10)]
            assert statuses == [200] * 10
            guard = hs.guards["client"]
            assert guard.stats.evicted > 0
            assert guard.open_connections <= 30
        finally:
            stop.set()
            await trickler
            for c in slow + unfinished:
                c.close()


async def test_handlers_get_the_body_read_by_the_guard(tmp_path: Path) -> None:
    async with limited_server(tmp_path) as hs:
        port = hs.ports["client"]
        login = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "nobody"},
            "password": "wrong",
        }
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"http://127.0.0.1:{port}/_matrix/client/v3/login", json=login) as resp,
        ):
            # 403 (wrong password) needs the parsed body; an empty body would be 400 M_NOT_JSON.
            assert resp.status == 403, await resp.text()
            assert (await resp.json())["errcode"] == "M_FORBIDDEN"
        assert hs.guards["client"].unauthenticated_bodies == 0


def test_limits_are_in_the_generated_config() -> None:
    text = render_config("example.org")
    for key in ("request_limits:", "header_timeout:", "body_timeout:", "max_connections:", "key_fetch:"):
        assert key in text
    data = yaml.safe_load(text)
    config = parse_config(data)
    assert config.request_limits.header_timeout == 20
    assert config.key_fetch.timeout == 5
    data["request_limits"]["header_timeout"] = -1
    with pytest.raises(ConfigError, match=r"request_limits\.header_timeout"):
        parse_config(data)


async def test_stalled_tls_handshake_is_closed(tmp_path: Path) -> None:
    async with limited_server(tmp_path, tls=True) as hs:
        conns = [await RawConnection.open(hs.ports["federation"]) for _ in range(5)]
        await conns[0].send(b"\x16\x03\x01")  # the start of a ClientHello, and nothing more
        try:
            closed = [await c.closed_by_server() for c in conns]
        finally:
            for c in conns:
                c.close()
        assert all(closed), closed


async def test_limits_are_visible_in_metrics(tmp_path: Path) -> None:
    async with limited_server(tmp_path, metrics=True) as hs:
        port = hs.ports["client"]
        slow = await RawConnection.open(port)
        await slow.send(b"GET " + VERSIONS.encode() + b" HTTP/1.1\r\n")
        try:
            assert await slow.closed_by_server()
        finally:
            slow.close()
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{hs.ports['metrics']}/metrics") as resp,
        ):
            text = await resp.text()
        line = 'ranvier_http_connections_limited_total{listener="client",reason="head_timeout"} 1.0'
        assert line in text, text[-2000:]
        assert 'ranvier_http_open_connections{listener="federation"}' in text
