"""Helpers of the catch-up scenarios: servers with federation settings of their own, one reached through a
TCP proxy that can refuse connections (a partition, one way: the proxied server still reaches the others
directly), and reading what a server holds straight from its storage (no client paging, which would
backfill)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from ranvier.app import Homeserver
from ranvier.config import parse_config
from tests.ports import free_port


async def start(
    data_dir: Path,
    name_port: int | None = None,
    listen_port: int | None = None,
    database_url: str | None = None,
    **federation: Any,
) -> Homeserver:
    """A server named ``127.0.0.1:<name_port>`` listening on ``listen_port`` (the same unless a proxy sits
    in front of it), on SQLite in ``data_dir`` unless ``database_url`` says otherwise; ``federation``
    overrides homeserver.yaml's ``federation`` section."""
    data_dir.mkdir(parents=True, exist_ok=True)
    name_port = name_port or free_port()
    config = parse_config(
        {
            "server_name": f"127.0.0.1:{name_port}",
            "data_dir": str(data_dir),
            "signing_key_path": str(data_dir / "signing.key"),
            "database": {"url": database_url or f"sqlite:///{data_dir / 'homeserver.db'}"},
            "listeners": {
                "client": {"bind": "127.0.0.1", "port": 0},
                "federation": {
                    "bind": "127.0.0.1",
                    "port": listen_port or name_port,
                    "tls": True,
                    "tls_certificate_path": str(data_dir / "tls.crt"),
                    "tls_private_key_path": str(data_dir / "tls.key"),
                },
            },
            "registration": {"enabled": True},
            "federation": {"verify_tls": False, "allow_loopback": True, **federation},
            "rate_limits": {"enabled": False},
        }
    )
    hs = Homeserver(config)
    await hs.start()
    return hs


class Proxy:
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``target``; ``refuse()`` closes the listening socket and
    every open connection (new ones are refused by the OS), ``heal()`` listens again."""

    def __init__(self, port: int, target: int) -> None:
        self.port = port
        self.target = target
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)

    async def refuse(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def heal(self) -> None:
        await self.open()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True)
        self._writers -= {writer, up_writer}


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def timeline_status(hs: Homeserver, event_ids: list[str]) -> dict[str, str]:
    """Each event as ``hs`` holds it: ``live`` (a timeline event /sync showed), ``backfilled`` (a timeline
    event filled in later), ``outlier``, ``rejected`` or ``missing``."""
    out: dict[str, str] = {}
    for event_id in event_ids:
        meta = await hs.storage.events.get_event_meta(event_id)
        if meta is None:
            out[event_id] = "missing"
        elif meta.outlier:
            out[event_id] = "outlier"
        elif meta.rejected_reason is not None or meta.soft_failed:
            out[event_id] = "rejected"
        else:
            out[event_id] = "live" if meta.stream_ordering > 0 else "backfilled"
    return out


async def in_timeline(hs: Homeserver, event_ids: list[str]) -> bool:
    return all(s in ("live", "backfilled") for s in (await timeline_status(hs, event_ids)).values())
