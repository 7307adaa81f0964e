"""A real Ranvier on loopback with short request limits, and raw sockets to abuse it (issue 12, defect 5).

The limits are configured short (a second or two) so that tests see slow connections closed without
waiting; tests check *that* a socket was closed, never how fast.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

from ranvier.app import Homeserver
from ranvier.config import parse_config
from tests.ports import free_port

SHORT_LIMITS: dict[str, Any] = {
    "header_timeout": 1.0,
    "body_timeout": 1.5,
    "idle_timeout": 2.0,
}


@asynccontextmanager
async def limited_server(
    tmp_path: Path, *, tls: bool = False, metrics: bool = False, **limits: Any
) -> AsyncIterator[Homeserver]:
    """A server whose federation listener speaks plain HTTP unless ``tls`` (raw sockets need no TLS to be
    slow)."""
    fed_port = free_port()
    config = parse_config(
        {
            "server_name": f"127.0.0.1:{fed_port}",
            "data_dir": str(tmp_path),
            "signing_key_path": str(tmp_path / "signing.key"),
            "database": {"url": f"sqlite:///{tmp_path / 'homeserver.db'}"},
            "listeners": {
                "client": {"bind": "127.0.0.1", "port": 0},
                "federation": {"bind": "127.0.0.1", "port": fed_port, "tls": tls},
                "metrics": {"enabled": metrics, "bind": "127.0.0.1", "port": 0},
            },
            "registration": {"enabled": True},
            "federation": {"verify_tls": False, "allow_loopback": True},
            "request_limits": {**SHORT_LIMITS, **limits},
        }
    )
    hs = Homeserver(config)
    await hs.start()
    try:
        yield hs
    finally:
        await hs.stop()


class RawConnection:
    """One TCP connection driven byte by byte."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> RawConnection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> bool:
        """False once the server has closed the connection."""
        try:
            self.writer.write(data)
            await self.writer.drain()
            return True
        except (ConnectionError, OSError):
            return False

    async def closed_by_server(self, within: float = 20.0) -> bool:
        """Read (and drop) whatever the server sends until it closes; False if it is still open after
        ``within`` seconds (a generous bound: the configured limits are a second or two)."""
        try:
            async with asyncio.timeout(within):
                while await self.reader.read(65536):
                    pass
            return True
        except ConnectionError:
            return True
        except TimeoutError:
            return False

    async def response(self, within: float = 20.0) -> tuple[int, bytes]:
        """The status and body of one HTTP response, read until the server closes the connection."""
        data = b""
        with suppress(ConnectionError):
            async with asyncio.timeout(within):
                while chunk := await self.reader.read(65536):
                    data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0
        return status, body

    def close(self) -> None:
        self.writer.transport.abort()


def kernel_sees_open(port: int) -> int:
    """Established TCP connections to ``port`` on loopback, counted from the server's side."""
    count = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            local, state = parts[1], parts[3]
            if state == "01" and int(local.split(":")[1], 16) == port:
                count += 1
    return count


def request_head(method: str, path: str, port: int, **headers: str | int) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
