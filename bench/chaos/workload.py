"""The users: one per server, all in one room, each sending messages with its own transaction ids.

A message is acknowledged when its ``PUT /send`` answers 200 with an event id; that id is recorded. A send
that fails (connection refused or reset while the server is down, a 5xx, a timeout) is retried with the same
``txnId`` until it is acknowledged, as a client library does; so a crash between persisting an event and
remembering its transaction id shows up as two events for one ``txnId``. Every body names its ``txnId``, which
is how duplicates are counted from the databases.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .cluster import ChaosServer

RETRY_PAUSE = 0.5
REQUEST_TIMEOUT = 30.0
# Retries of the message in flight once the load stops, before it is given up (never acknowledged).
GIVE_UP_AFTER_STOP = 60


class ClientError(Exception):
    pass


@dataclass
class Ack:
    event_id: str
    txn_id: str
    server: int
    acked_at: float
    attempts: int


@dataclass
class User:
    server: ChaosServer
    session: aiohttp.ClientSession
    user_id: str = ""
    token: str = ""
    acks: list[Ack] = field(default_factory=list)
    retries: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"{self.server.client_url}/_matrix/client/v3"

    async def call(self, method: str, path: str, body: Any = None, **params: str) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with self.session.request(
            method,
            self.base + path,
            json=body,
            params=params or None,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
        ) as resp:
            return resp.status, await resp.json(content_type=None)

    async def ok(self, method: str, path: str, body: Any = None, **params: str) -> Any:
        status, answer = await self.call(method, path, body, **params)
        if status != 200:
            raise ClientError(f"{method} {path} on server {self.server.index}: {status} {answer}")
        return answer

    async def register(self, name: str) -> None:
        if self.server.kind == "synapse":
            # Shared-secret registration: Synapse's m.login.dummy flow wants a UIA session first.
            self.user_id, self.token = await asyncio.to_thread(self.server.register_user, name)  # type: ignore[attr-defined]
            return
        answer = await self.ok(
            "POST",
            "/register",
            {"username": name, "password": f"pw-{name}", "auth": {"type": "m.login.dummy"}},
        )
        self.user_id, self.token = answer["user_id"], answer["access_token"]

    async def send(self, room_id: str, txn_id: str, stop: asyncio.Event | None = None) -> Ack | None:
        """Send until acknowledged (same txnId every time); None if ``stop`` is set first or the server
        refuses the message for good (4xx other than 429)."""
        attempts = 0
        while True:
            attempts += 1
            try:
                status, answer = await self.call(
                    "PUT",
                    f"/rooms/{room_id}/send/m.room.message/{txn_id}",
                    {"msgtype": "m.text", "body": f"chaos {txn_id}"},
                )
                if status == 200:
                    ack = Ack(answer["event_id"], txn_id, self.server.index, time.monotonic(), attempts)
                    self.acks.append(ack)
                    return ack
                if status < 500 and status != 429:
                    self.errors.append(f"{txn_id}: {status} {answer}")
                    return None
            except (aiohttp.ClientError, TimeoutError, ValueError):
                pass
            self.retries += 1
            if (
                stop is not None
                and stop.is_set()
                and (not self.server.alive or attempts > GIVE_UP_AFTER_STOP)
            ):
                return None
            await asyncio.sleep(RETRY_PAUSE)

    async def send_loop(self, room_id: str, prefix: str, interval: float, stop: asyncio.Event) -> None:
        """Send one message every ``interval`` seconds until ``stop``; an unacknowledged one is retried
        first (a retry in flight when ``stop`` is set finishes)."""
        seq = 0
        while not stop.is_set():
            started = time.monotonic()
            await self.send(room_id, f"{prefix}-{self.server.index}-{seq}", stop)
            seq += 1
            with_pause = interval - (time.monotonic() - started)
            if with_pause > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), with_pause)

    async def state(self, room_id: str) -> dict[tuple[str, str], str]:
        events = await self.ok("GET", f"/rooms/{room_id}/state")
        return {(e["type"], e.get("state_key", "")): e["event_id"] for e in events}


async def setup_room(users: list[User], trial: str) -> str:
    """Register everyone, create a public room on server 0, the others join over federation."""
    for u in users:
        await u.register(f"chaos{trial}u{u.server.index}")
    room_id = str(
        (await users[0].ok("POST", "/createRoom", {"preset": "public_chat", "name": trial}))["room_id"]
    )
    for u in users[1:]:
        await u.ok("POST", f"/join/{room_id}", {}, server_name=users[0].server.server_name)
    return room_id
