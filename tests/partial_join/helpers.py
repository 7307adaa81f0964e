"""Shared pieces of the partial-state join tests (Ranvier joining Ranvier with ``omit_members``)."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from ranvier.app import Homeserver
from tests.scenarios.servers import Client

# Members of the resident's room: 200 by default, 5,000 with RANVIER_LONG=1.
ROOM_SIZE = 5000 if os.environ.get("RANVIER_LONG") == "1" else 200
LAZY_FILTER = json.dumps({"room": {"state": {"lazy_load_members": True}}})
# Fast retries and a short wait of an initial non-lazy /sync, so the tests see both behaviours quickly.
JOINER_ROOMS: dict[str, Any] = {"partial_state_retry_initial": 0.2, "partial_state_retry_max": 1.0}


async def fill_room(hs: Homeserver, room_id: str, count: int, prefix: str = "m") -> list[str]:
    """``count`` members of ``hs`` join ``room_id``: real signed join events through the normal path
    (the event creator authorises and persists each; the users need no account for that)."""
    users = []
    for i in range(count):
        user = f"@{prefix}{i}:{hs.server_name}"
        await hs.creator.send(
            room_id, user, "m.room.member", {"membership": "join", "displayname": f"M {i}"}, state_key=user
        )
        users.append(user)
    return users


class Gate:
    """Holds a server's partial-state resync before each attempt until opened."""

    def __init__(self, hs: Homeserver) -> None:
        self.opened = asyncio.Event()
        self.reached = asyncio.Event()
        hs.partial_resync.before_attempt = self._wait

    async def _wait(self, room_id: str, server: str) -> None:
        self.reached.set()
        await self.opened.wait()

    def open(self) -> None:
        self.opened.set()


async def lazy_sync(client: Client, since: str | None = None) -> dict[str, Any]:
    params = {"timeout": "0", "filter": LAZY_FILTER}
    if since is not None:
        params["since"] = since
    return dict(await client.ok("GET", "/sync", **params))


async def plain_sync(client: Client, since: str | None = None) -> dict[str, Any]:
    params = {"timeout": "0"}
    if since is not None:
        params["since"] = since
    return dict(await client.ok("GET", "/sync", **params))


async def joined_count(hs: Homeserver, room_id: str) -> int:
    return len(await hs.storage.state.get_joined_users(room_id))
