"""A simplified sliding sync (MSC4186) client over raw HTTP, for Ranvier and Synapse alike."""

from __future__ import annotations

import itertools
from typing import Any

import aiohttp

PATH = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
_txn = itertools.count()


class SlidingClient:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, user_id: str, token: str) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")  # http://host:port
        self.user_id = user_id
        self.token = token
        self.pos: str | None = None

    async def call(self, method: str, path: str, body: Any = None, **params: str) -> tuple[int, Any]:
        async with self.session.request(
            method,
            self.base_url + path,
            json=body,
            params=params or None,
            headers={"Authorization": f"Bearer {self.token}"},
        ) as resp:
            return resp.status, await resp.json()

    async def ok(self, method: str, path: str, body: Any = None, **params: str) -> Any:
        status, answer = await self.call(method, "/_matrix/client/v3" + path, body, **params)
        assert status == 200, (method, path, status, answer)
        return answer

    async def raw_sync(
        self, body: dict[str, Any], pos: str | None = None, timeout_ms: int = 0
    ) -> tuple[int, Any]:
        params = {"timeout": str(timeout_ms)}
        if pos is not None:
            params["pos"] = pos
        return await self.call("POST", PATH, body, **params)

    async def sync(self, body: dict[str, Any], timeout_ms: int = 0, fresh: bool = False) -> dict[str, Any]:
        """A request continuing this client's connection (or starting one: ``fresh``)."""
        status, answer = await self.raw_sync(body, None if fresh else self.pos, timeout_ms)
        assert status == 200, (status, answer)
        self.pos = answer["pos"]
        return dict(answer)

    async def create_room(self, **body: Any) -> str:
        return str((await self.ok("POST", "/createRoom", body))["room_id"])

    async def send(self, room_id: str, content: dict[str, Any], event_type: str = "m.room.message") -> str:
        answer = await self.ok("PUT", f"/rooms/{room_id}/send/{event_type}/ss{next(_txn)}", content)
        return str(answer["event_id"])

    async def text(self, room_id: str, body: str) -> str:
        return await self.send(room_id, {"msgtype": "m.text", "body": body})

    async def state(self, room_id: str, event_type: str, content: dict[str, Any], state_key: str = "") -> str:
        answer = await self.ok("PUT", f"/rooms/{room_id}/state/{event_type}/{state_key}", content)
        return str(answer["event_id"])


async def register(session: aiohttp.ClientSession, base_url: str, name: str) -> SlidingClient:
    async with session.post(
        base_url.rstrip("/") + "/_matrix/client/v3/register",
        json={"username": name, "password": "pw-" + name * 3, "auth": {"type": "m.login.dummy"}},
    ) as resp:
        body = await resp.json()
        assert resp.status == 200, body
    return SlidingClient(session, base_url, body["user_id"], body["access_token"])


def one_list(ranges: list[list[int]] | None = None, **params: Any) -> dict[str, Any]:
    """A request body with one list named "all"."""
    entry: dict[str, Any] = {"required_state": [], "timeline_limit": 5, **params}
    if ranges is not None:
        entry["ranges"] = ranges
    return {"lists": {"all": entry}}
