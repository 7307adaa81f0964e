"""The chaos harness's link proxy, in-process against a loopback echo server: each mode does what the
harness's reports assume it does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bench.chaos.proxy import LinkProxy
from tests.ports import free_port


class Echo:
    def __init__(self) -> None:
        self.connections = 0
        self.received = b""
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        while data := await reader.read(65536):
            self.received += data
            writer.write(data)
            await writer.drain()
        writer.close()


@pytest.fixture
async def link() -> AsyncIterator[tuple[LinkProxy, Echo]]:
    echo = Echo()
    await echo.start()
    proxy = LinkProxy("test", free_port(), echo.port)
    await proxy.start()
    yield proxy, echo
    await proxy.close()
    assert echo.server is not None
    echo.server.close()


async def roundtrip(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    got = await reader.readexactly(len(payload))
    writer.close()
    return got


async def test_ok_and_slow_relay_in_order(link: tuple[LinkProxy, Echo]) -> None:
    proxy, _ = link
    payload = bytes(range(256)) * 1000
    assert await roundtrip(proxy.port, payload) == payload
    await proxy.set_mode("slow", 0.01)
    assert await roundtrip(proxy.port, payload) == payload


async def test_refuse_refuses_and_resets_open_connections_then_heals(link: tuple[LinkProxy, Echo]) -> None:
    proxy, _ = link
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"x")
    assert await reader.readexactly(1) == b"x"
    await proxy.set_mode("refuse")
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await reader.readexactly(1)  # the open connection was reset
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", proxy.port)
    await proxy.set_mode("ok")
    assert await roundtrip(proxy.port, b"healed") == b"healed"


async def test_blackhole_swallows_and_never_reaches_the_server(link: tuple[LinkProxy, Echo]) -> None:
    proxy, echo = link
    await proxy.set_mode("blackhole")
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)  # accepted
    writer.write(b"lost" * 1000)
    await writer.drain()
    writer.write_eof()
    assert await reader.read() == b""  # nothing came back; the proxy ended the stream when we did
    writer.close()
    assert echo.connections == 0 and echo.received == b""
