"""Presence between two in-process Ranvier servers (S2S "Presence"): m.presence EDUs both ways to the
servers sharing a room, the presence of a server's users sent to a server when one of its users joins,
and updates about users of another server, or of nobody we share a room with, dropped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from ranvier.app import Homeserver
from tests.workers.target import workers_target

from .servers import Client, eventually, start_server


async def test_presence_both_ways(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a = await start_server(tmp_path / "a")
    b = await start_server(tmp_path / "b")
    servers += [a, b]
    alice = await Client.register(session, a, "alice")
    bob = await Client.register(session, b, "bob")
    room_id = await alice.create_room(name="Presence")
    # Alice is online before B shares a room with her: B hears of it when Bob joins.
    await alice.ok("PUT", f"/presence/{alice.user_id}/status", {"presence": "online", "status_msg": "on A"})
    await bob.ok("POST", f"/join/{room_id}", {}, server_name=a.server_name)

    async def state(client: Client, user_id: str) -> dict[str, Any]:
        return dict(await client.ok("GET", f"/presence/{user_id}/status"))

    async def bob_sees_alice_online() -> bool:
        # B joined with partial state: alice is a member it learns of when the resync completes (403
        # until then: presence is only shown to users who share a room).
        status, seen = await bob.call("GET", f"/presence/{alice.user_id}/status")
        return status == 200 and seen.get("presence") == "online" and seen.get("status_msg") == "on A"

    await eventually(bob_sees_alice_online, timeout=20)

    # B to A: Bob goes unavailable; Alice's /sync on A shows it.
    await alice.sync()
    await bob.ok("PUT", f"/presence/{bob.user_id}/status", {"presence": "unavailable", "status_msg": "brb"})
    seen: list[dict[str, Any]] = []

    async def alice_syncs_bob() -> bool:
        body = await alice.sync(5_000)
        seen.extend(e["content"] for e in body["presence"]["events"] if e["sender"] == bob.user_id)
        return any(c["presence"] == "unavailable" and c.get("status_msg") == "brb" for c in seen)

    await eventually(alice_syncs_bob, timeout=20)
    assert (await state(alice, bob.user_id))["presence"] == "unavailable"

    # A to B again, a change of an existing state.
    await alice.ok("PUT", f"/presence/{alice.user_id}/status", {"presence": "offline"})

    async def bob_sees_alice_offline() -> bool:
        return (await state(bob, alice.user_id))["presence"] == "offline"

    await eventually(bob_sees_alice_offline, timeout=20)

    if workers_target():
        return  # the rest hands forged EDUs to A's presence service, inside its process
    # B may not speak for A's users; a user of B who shares no room with Alice is not shown to her.
    before = await a.presence.get_state(alice.user_id)
    forged = {"user_id": alice.user_id, "presence": "online", "last_active_ago": 0}
    stranger = {"user_id": f"@stranger:{b.server_name}", "presence": "online", "last_active_ago": 0}
    await a.presence.on_edu(b.server_name, {"push": [forged, stranger, "junk"]})
    await a.presence.on_edu(b.server_name, {"push": "junk"})
    assert await a.presence.get_state(alice.user_id) == before
    code, _ = await alice.call("GET", f"/presence/{stranger['user_id']}/status")
    assert code == 403
    body = await alice.ok("GET", "/sync", timeout="0")
    assert stranger["user_id"] not in {e["sender"] for e in body["presence"]["events"]}
