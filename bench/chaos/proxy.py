"""A TCP proxy per federation link whose faults the harness switches at run time.

The proxy relays bytes without looking at them (federation is TLS end to end), so a fault is a property of
the link, not of a request:

- ``ok``: relay.
- ``refuse``: the listening socket is closed (new connections get ECONNREFUSED) and open connections are
  reset.
- ``blackhole``: connections are accepted and everything sent on them is swallowed, new and open ones alike;
  a connection that lost bytes this way never relays again (its stream is broken), as behind a dead router.
- ``slow``: every chunk is held ``delay`` seconds before it is passed on (in order).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from dataclasses import dataclass, field
from typing import Literal

log = logging.getLogger(__name__)

Mode = Literal["ok", "refuse", "blackhole", "slow"]
CHUNK = 64 * 1024


@dataclass(eq=False)
class _Conn:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    broken: bool = False  # bytes were swallowed: never relay again

    def abort(self) -> None:
        for w in (self.client, self.upstream):
            if w is not None:
                with contextlib.suppress(Exception):
                    # SO_LINGER 0: a reset, as a crashed peer or a refusing firewall would send.
                    sock = w.get_extra_info("socket")
                    if sock is not None:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    w.transport.abort()

    def close(self) -> None:
        for w in (self.client, self.upstream):
            if w is not None:
                with contextlib.suppress(Exception):
                    w.close()


@dataclass(eq=False)
class LinkProxy:
    """Listens on 127.0.0.1:``port`` and relays to 127.0.0.1:``target_port``."""

    name: str
    port: int
    target_port: int
    mode: Mode = "ok"
    delay: float = 0.0
    connections: int = 0
    _server: asyncio.Server | None = None
    _conns: set[_Conn] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._handle, "127.0.0.1", self.port, reuse_address=True, backlog=256
            )

    async def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def set_mode(self, mode: Mode, delay: float = 0.0) -> None:
        previous, self.mode, self.delay = self.mode, mode, delay
        if mode == "refuse":
            await self._stop_listening()
            for conn in list(self._conns):
                conn.abort()
        elif previous == "refuse":
            await self.start()

    async def close(self) -> None:
        await self._stop_listening()
        for conn in list(self._conns):
            conn.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = _Conn(writer)
        self._conns.add(conn)
        self.connections += 1
        try:
            if self.mode == "blackhole":
                conn.broken = True
            if not conn.broken:
                try:
                    up_reader, conn.upstream = await asyncio.open_connection("127.0.0.1", self.target_port)
                except OSError:
                    # The server behind us is down: pass the refusal on as a reset.
                    conn.abort()
                    return
                await asyncio.gather(
                    self._pump(reader, conn.upstream, conn), self._pump(up_reader, writer, conn)
                )
            else:
                while await reader.read(CHUNK):
                    pass
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._conns.discard(conn)
            conn.close()
            self._tasks.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: _Conn) -> None:
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                if self.mode == "blackhole":
                    conn.broken = True
                if conn.broken:
                    continue  # swallowed
                if self.mode == "slow" and self.delay > 0:
                    await asyncio.sleep(self.delay)
                writer.write(data)
                await writer.drain()
        except (OSError, ConnectionError):
            conn.abort()
        finally:
            conn.close()  # one side ended: end the other (HTTP/1.1 never half-closes)
