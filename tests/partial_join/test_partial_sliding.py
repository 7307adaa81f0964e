"""Simplified sliding sync (MSC4186) and a room joined with partial state: a list that lazy-loads members
has the room at once; a list asking for every member gets it once the resync completes (as Synapse)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from ranvier.app import Homeserver
from tests.scenarios.servers import Client, eventually, start_server

from .helpers import JOINER_ROOMS, Gate, fill_room

PATH = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
LAZY = [["m.room.name", ""], ["m.room.member", "$LAZY"]]
EVERY_MEMBER = [["m.room.name", ""], ["m.room.member", "*"]]


async def test_sliding_sync_lists_and_partial_state(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a = await start_server(tmp_path / "a", rate_limits={"enabled": False})
    b = await start_server(tmp_path / "b", rate_limits={"enabled": False}, **JOINER_ROOMS)
    servers += [a, b]
    alice = await Client.register(session, a, "alice")
    bob = await Client.register(session, b, "bob")
    room_id = await alice.create_room(name="Sliding")
    await fill_room(a, room_id, 25)
    gate = Gate(b)
    await bob.ok("POST", f"/join/{room_id}", {}, server_name=a.server_name)

    def request(required_state: list[list[str]]) -> dict[str, Any]:
        return {
            "lists": {"l": {"ranges": [[0, 9]], "required_state": required_state, "timeline_limit": 5}},
        }

    async def listed(required_state: list[list[str]]) -> list[str]:
        body = await _sliding(session, b, bob.token, request(required_state))
        ops = body["lists"]["l"].get("ops") or []
        return [r for op in ops for r in op.get("room_ids", [])]

    assert await listed(LAZY) == [room_id]
    assert await listed(EVERY_MEMBER) == []  # partial: its members are not all known yet
    gate.open()

    async def listed_in_full() -> bool:
        return await listed(EVERY_MEMBER) == [room_id]

    await eventually(listed_in_full, timeout=20)
    body = await _sliding(session, b, bob.token, request(EVERY_MEMBER))
    members = [e for e in body["rooms"][room_id]["required_state"] if e["type"] == "m.room.member"]
    assert len(members) == 27  # alice, the 25, bob


async def _sliding(session: aiohttp.ClientSession, hs: Homeserver, token: str, body: dict[str, Any]) -> Any:
    async with session.post(
        f"http://127.0.0.1:{hs.ports['client']}{PATH}",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
    ) as resp:
        answer = await resp.json()
        assert resp.status == 200, answer
        return answer
