"""Typing, receipts and profile changes between two in-process Ranvier servers: what a user does on one
server reaches the other server's users through their /sync (S2S "Typing Notifications", "Receipts")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from ranvier.app import Homeserver
from tests.workers.target import workers_target

from .servers import Client, eventually, start_server


def _ephemeral(sync: dict[str, Any], room_id: str, event_type: str) -> list[dict[str, Any]]:
    room = sync["rooms"]["join"].get(room_id, {})
    return [e["content"] for e in room.get("ephemeral", {}).get("events", []) if e["type"] == event_type]


async def test_typing_receipts_and_profiles_cross_servers(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a = await start_server(tmp_path / "a")
    b = await start_server(tmp_path / "b")
    servers += [a, b]
    alice = await Client.register(session, a, "alice")
    bob = await Client.register(session, b, "bob")
    room_id = await alice.create_room(name="Ephemeral")
    await bob.ok("POST", f"/join/{room_id}", {}, server_name=a.server_name)
    await bob.sync()
    await alice.sync()

    # Alice types on A; Bob's long-polling sync on B wakes with it.
    await alice.ok("PUT", f"/rooms/{room_id}/typing/{alice.user_id}", {"typing": True, "timeout": 30_000})
    seen_typing: list[list[str]] = []

    async def bob_sees_alice_typing() -> bool:
        seen_typing.extend(t["user_ids"] for t in _ephemeral(await bob.sync(5_000), room_id, "m.typing"))
        return [alice.user_id] in seen_typing

    await eventually(bob_sees_alice_typing, timeout=20)

    # Alice's public receipt reaches B; her private one stays on A.
    event_id = await alice.send_text(room_id, "read this")
    await alice.ok("POST", f"/rooms/{room_id}/receipt/m.read.private/{event_id}", {})
    await alice.ok("POST", f"/rooms/{room_id}/receipt/m.read/{event_id}", {})
    receipts: list[dict[str, Any]] = []

    async def bob_sees_the_receipt() -> bool:
        receipts.extend(_ephemeral(await bob.sync(5_000), room_id, "m.receipt"))
        return any(alice.user_id in r.get(event_id, {}).get("m.read", {}) for r in receipts)

    await eventually(bob_sees_the_receipt, timeout=20)
    assert not any("m.read.private" in by_type for r in receipts for by_type in r.values())
    if not workers_target():  # B's own storage (a deployment's is in other processes)
        assert await b.storage.receipts.get_receipt(room_id, "m.read.private", alice.user_id) is None

    # Bob types on B and renames himself; both show up on A.
    await bob.ok("PUT", f"/rooms/{room_id}/typing/{bob.user_id}", {"typing": True})
    await bob.ok("PUT", f"/profile/{bob.user_id}/displayname", {"displayname": "Robert"})
    typing_at_a: list[list[str]] = []

    async def alice_sees_bob() -> bool:
        typing_at_a.extend(t["user_ids"] for t in _ephemeral(await alice.sync(5_000), room_id, "m.typing"))
        members = await alice.ok("GET", f"/rooms/{room_id}/joined_members")
        renamed = members["joined"].get(bob.user_id, {}).get("display_name") == "Robert"
        return renamed and any(bob.user_id in users for users in typing_at_a)

    await eventually(alice_sees_bob, timeout=20)
