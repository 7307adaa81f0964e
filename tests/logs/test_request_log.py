"""The request log (ranvier.logs.access): one line per request with its fields, the request id on every
record written while serving it (tasks it spawns included), X-Forwarded-For only where trusted, secrets in
query strings redacted, abandoned requests logged as such."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from ranvier.app import Homeserver
from ranvier.logs.access import REDACTED, access_log_middleware, redact_path
from ranvier.logs.context import RequestIdFilter, current_request_id, install_record_factory
from tests.logs.servers import start
from tests.scenarios.servers import Client


def access_records(caplog: pytest.LogCaptureFixture, listener: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == f"ranvier.access.{listener}"]


async def wait_records(caplog: pytest.LogCaptureFixture, listener: str, n: int) -> list[logging.LogRecord]:
    """The line is written once the answer is sent, which the client may read a moment earlier."""
    for _ in range(1000):
        if len(access_records(caplog, listener)) >= n:
            break
        await asyncio.sleep(0.01)
    return access_records(caplog, listener)


def test_redact_path() -> None:
    assert redact_path("/a?access_token=s3cr3t&since=5") == f"/a?access_token={REDACTED}&since=5"
    assert redact_path("/a?ACCESS_TOKEN=x") == f"/a?ACCESS_TOKEN={REDACTED}"
    assert redact_path("/a?access%5Ftoken=x") == f"/a?access%5Ftoken={REDACTED}"
    assert redact_path("/login?loginToken=abc&x=1&refresh_token=r") == (
        f"/login?loginToken={REDACTED}&x=1&refresh_token={REDACTED}"
    )
    assert redact_path("/plain/path") == "/plain/path"


async def test_client_request_line(
    tmp_path: Path,
    servers: list[Homeserver],
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    hs = await start(tmp_path / "hs")
    servers.append(hs)
    alice = await Client.register(session, hs, "alice")
    room = await alice.create_room()
    await alice.send_text(room, "hello")
    caplog.clear()
    url = f"http://127.0.0.1:{hs.ports['client']}/_matrix/client/v3/sync"
    # A raw connection, so that the bytes the server sent (status line and headers included) are known.
    reader, writer = await asyncio.open_connection("127.0.0.1", hs.ports["client"])
    writer.write(
        f"GET /_matrix/client/v3/sync?access_token={alice.token}&timeout=0 HTTP/1.1\r\nHost: x\r\n"
        "X-Forwarded-For: 203.0.113.9\r\nConnection: close\r\n\r\n".encode()
    )
    await writer.drain()
    raw = await reader.read()
    writer.close()
    assert raw.startswith(b"HTTP/1.1 200 ")
    (record,) = access_records(caplog, "client")
    fields: dict[str, Any] = record.access  # type: ignore[attr-defined]
    device = await session.get(url.replace("/sync", "/account/whoami"), params={"access_token": alice.token})
    whoami = await device.json()
    assert fields["requester"] == f"{alice.user_id}/{whoami['device_id']}"
    assert fields["client_ip"] == "127.0.0.1"  # the header is not trusted on this listener
    assert fields["method"] == "GET"
    assert fields["path"].startswith("/_matrix/client/v3/sync?")
    assert f"access_token={REDACTED}" in fields["path"]
    assert alice.token not in record.getMessage()
    assert fields["status"] == 200
    assert fields["bytes"] == len(raw)
    assert fields["outcome"] == "sent"
    assert fields["db_queries"] > 0 and fields["db_ms"] > 0  # an initial sync reads the database
    assert fields["request_id"].startswith("GET-")
    assert record.request == fields["request_id"]  # type: ignore[attr-defined]
    assert fields["request_id"] in record.getMessage()

    # A long-polling /sync the client gives up on: answered after its timeout, to nobody.
    caplog.clear()
    since = (await alice.sync())["next_batch"]
    caplog.clear()
    reader, writer = await asyncio.open_connection("127.0.0.1", hs.ports["client"])
    writer.write(
        f"GET /_matrix/client/v3/sync?since={since}&timeout=300 HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {alice.token}\r\n\r\n".encode()
    )
    await writer.drain()
    writer.close()

    async def sync_logged() -> list[logging.LogRecord]:
        while not access_records(caplog, "client"):
            await asyncio.sleep(0.02)
        return access_records(caplog, "client")

    (record,) = await asyncio.wait_for(sync_logged(), 15)
    assert record.access["outcome"] == "abandoned"  # type: ignore[attr-defined]
    assert record.access["status"] == 200  # type: ignore[attr-defined]

    # An unauthenticated request: no requester; an error status is logged as it was sent.
    caplog.clear()
    async with session.get(url) as resp:
        assert resp.status == 401
        body = await resp.read()
    (record,) = await wait_records(caplog, "client", 1)
    fields = record.access  # type: ignore[attr-defined]
    assert (fields["requester"], fields["status"]) == ("-", 401)
    assert fields["bytes"] > len(body)


async def test_x_forwarded_for_when_trusted(
    tmp_path: Path,
    servers: list[Homeserver],
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    hs = await start(tmp_path / "hs", x_forwarded=True)
    servers.append(hs)
    url = f"http://127.0.0.1:{hs.ports['client']}/_matrix/client/versions"
    async with session.get(url, headers={"X-Forwarded-For": "203.0.113.9, 10.0.0.1"}) as resp:
        assert resp.status == 200
    async with session.get(url) as resp:
        assert resp.status == 200
    first, second = await wait_records(caplog, "client", 2)
    assert first.access["client_ip"] == "203.0.113.9"  # type: ignore[attr-defined]
    assert second.access["client_ip"] == "127.0.0.1"  # type: ignore[attr-defined]


async def test_request_id_on_records_of_the_request_and_its_tasks(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    work_log = logging.getLogger("ranvier.test_work")
    done = asyncio.Event()

    async def spawned() -> None:
        await asyncio.sleep(0)
        work_log.info("spawned work")
        done.set()

    async def handler(request: web.Request) -> web.Response:
        work_log.info("handler work")
        asyncio.get_running_loop().create_task(spawned())
        return web.json_response({})

    app = web.Application(middlewares=[access_log_middleware("test")])
    app.router.add_get("/x", handler)
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as session:
        for _ in range(2):
            done.clear()
            async with session.get(server.make_url("/x")) as resp:
                assert resp.status == 200
            await asyncio.wait_for(done.wait(), 10)
        lines = await wait_records(caplog, "test", 2)
    ids = [r.access["request_id"] for r in lines]  # type: ignore[attr-defined]
    assert len(set(ids)) == 2
    work = [r for r in caplog.records if r.name == "ranvier.test_work"]
    assert [(r.getMessage(), r.request) for r in work] == [  # type: ignore[attr-defined]
        ("handler work", ids[0]),
        ("spawned work", ids[0]),
        ("handler work", ids[1]),
        ("spawned work", ids[1]),
    ]
    outside = logging.getLogger("ranvier.test_work").makeRecord("x", logging.INFO, "f", 1, "m", (), None)
    assert outside.request == "-"  # type: ignore[attr-defined]


async def test_abandoned_request_is_logged_as_such(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)

    async def slow(request: web.Request) -> web.Response:
        # Answer only once the client has gone (bounded, so a regression fails instead of hanging).
        for _ in range(1000):
            if request.transport is None or request.transport.is_closing():
                break
            await asyncio.sleep(0.01)
        return web.json_response({"late": True})

    app = web.Application(middlewares=[access_log_middleware("test")])
    app.router.add_get("/slow", slow)
    async with TestServer(app, host="127.0.0.1") as server:
        _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /slow?access_token=abc HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()
        await writer.wait_closed()

        async def logged() -> list[logging.LogRecord]:
            while not access_records(caplog, "test"):
                await asyncio.sleep(0.01)
            return access_records(caplog, "test")

        (record,) = await asyncio.wait_for(logged(), 15)
    fields = record.access  # type: ignore[attr-defined]
    assert fields["outcome"] == "abandoned"
    assert fields["bytes"] is None
    assert fields["path"] == f"/slow?access_token={REDACTED}"
    assert record.getMessage().endswith(" abandoned")


def test_aiosqlite_statement_traces_are_dropped_whatever_its_level() -> None:
    """aiosqlite writes each statement with its parameters (tokens, password hashes) at DEBUG."""
    install_record_factory()
    logger = logging.getLogger("aiosqlite")
    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append  # type: ignore[method-assign]
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)  # as an operator's log_config might
    try:
        logger.debug("executing %s", ("SELECT ... WHERE token = ?", ("syt_secret",)))
        logger.warning("a real problem")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert [r.getMessage() for r in seen] == ["a real problem"]


async def test_request_id_filter_for_records_made_without_the_factory() -> None:
    """RequestIdFilter (for a dictConfig that names it) fills in ``request`` on records that lack it."""
    record = logging.LogRecord("x", logging.INFO, "f", 1, "m", (), None)  # bypasses the factory
    assert not hasattr(record, "request")
    token = current_request_id.set("GET-99")
    try:
        assert RequestIdFilter().filter(record)
    finally:
        current_request_id.reset(token)
    assert record.request == "GET-99"  # type: ignore[attr-defined]
