"""Several real Ranvier homeservers in one test process, on loopback, federating with each other."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import aiohttp

from ranvier.app import Homeserver
from ranvier.config import parse_config
from tests.ports import free_port
from tests.workers.target import start_deployed_server, workers_target


def fed_port_of(hs: Homeserver) -> int:
    return int(hs.server_name.rsplit(":", 1)[1])


async def start_server(
    data_dir: Path,
    fed_port: int | None = None,
    database_url: str | None = None,
    rate_limits: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    **rooms: Any,
) -> Homeserver:
    """A server over ``data_dir`` (SQLite there unless ``database_url`` says otherwise); pass the old
    ``fed_port`` (its name) to restart one over the same data. ``extra``: more top-level config sections.

    ``RANVIER_TARGET=workers``: a multi-process deployment on PostgreSQL and Redis instead, seen through its
    routing proxy (tests/workers/target.py; a test reading the process's internals is skipped there)."""
    if workers_target():
        # A stand-in with the HTTP face of a Homeserver (server_name, ports, running, stop).
        return cast(Homeserver, await start_deployed_server(data_dir, fed_port, rate_limits, extra, rooms))
    return await start_single_server(data_dir, fed_port, database_url, rate_limits, extra, **rooms)


async def start_single_server(
    data_dir: Path,
    fed_port: int | None = None,
    database_url: str | None = None,
    rate_limits: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    **rooms: Any,
) -> Homeserver:
    """``start_server`` always in this process, whatever ``RANVIER_TARGET`` says."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fed_port = fed_port or free_port()
    config = parse_config(
        {
            "server_name": f"127.0.0.1:{fed_port}",
            "data_dir": str(data_dir),
            "signing_key_path": str(data_dir / "signing.key"),
            "database": {"url": database_url or f"sqlite:///{data_dir / 'homeserver.db'}"},
            "listeners": {
                "client": {"bind": "127.0.0.1", "port": 0},
                "federation": {
                    "bind": "127.0.0.1",
                    "port": fed_port,
                    "tls": True,
                    "tls_certificate_path": str(data_dir / "tls.crt"),
                    "tls_private_key_path": str(data_dir / "tls.key"),
                },
            },
            "registration": {"enabled": True},
            "federation": {"verify_tls": False, "allow_loopback": True},
            "rooms": rooms,
            "rate_limits": rate_limits or {},
            **(extra or {}),
        }
    )
    hs = Homeserver(config)
    await hs.start()
    return hs


class Client:
    """A minimal Matrix client over raw HTTP (the matrix-nio tests cover real client libraries)."""

    def __init__(self, session: aiohttp.ClientSession, hs: Homeserver, user_id: str, token: str) -> None:
        self.session = session
        self.hs = hs
        self.user_id = user_id
        self.token = token
        self.base = f"http://127.0.0.1:{hs.ports['client']}/_matrix/client/v3"
        self.since: str | None = None

    @classmethod
    async def register(cls, session: aiohttp.ClientSession, hs: Homeserver, name: str) -> Client:
        async with session.post(
            f"http://127.0.0.1:{hs.ports['client']}/_matrix/client/v3/register",
            json={"username": name, "password": "pw-" + name * 3, "auth": {"type": "m.login.dummy"}},
        ) as resp:
            body = await resp.json()
            assert resp.status == 200, body
        return cls(session, hs, body["user_id"], body["access_token"])

    async def call(self, method: str, path: str, body: Any = None, **params: Any) -> tuple[int, Any]:
        async with self.session.request(
            method,
            self.base + path,
            json=body,
            params=params or None,
            headers={"Authorization": f"Bearer {self.token}"},
        ) as resp:
            return resp.status, await resp.json()

    async def ok(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        status, answer = await self.call(method, path, body, **params)
        assert status == 200, (status, answer)
        return answer

    async def create_room(self, **body: Any) -> str:
        return str((await self.ok("POST", "/createRoom", {"preset": "public_chat", **body}))["room_id"])

    async def send_text(self, room_id: str, text: str) -> str:
        txn = f"t{asyncio.get_running_loop().time()}-{text}"
        answer = await self.ok(
            "PUT", f"/rooms/{room_id}/send/m.room.message/{txn}", {"msgtype": "m.text", "body": text}
        )
        return str(answer["event_id"])

    async def messages(self, room_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """The room's history, oldest first (paginating backwards from the end)."""
        answer = await self.ok("GET", f"/rooms/{room_id}/messages", dir="b", limit=str(limit))
        return list(reversed(answer["chunk"]))

    async def texts(self, room_id: str) -> list[str]:
        return [
            e["content"].get("body") for e in await self.messages(room_id) if e["type"] == "m.room.message"
        ]

    async def sync(self, timeout_ms: int = 0) -> dict[str, Any]:
        params = {"timeout": str(timeout_ms)}
        if self.since:
            params["since"] = self.since
        answer = await self.ok("GET", "/sync", **params)
        self.since = answer["next_batch"]
        return dict(answer)


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 10.0, interval: float = 0.05
) -> float:
    """Wait until ``check()`` holds; return how long it took. Fails the test after ``timeout``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        if await check():
            return loop.time() - start
        if loop.time() - start > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
