"""Backfill between Ranvier servers: history from before a server joined a room is fetched with /backfill
when its clients page /messages back past the join (S2S "Backfilling and retrieving missing events")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from ranvier.app import Homeserver

from .servers import Client, start_server


async def history(client: Client, room_id: str, limit: int) -> list[dict[str, Any]]:
    """Every event /messages gives, paging backwards from the end to the room's creation; oldest first."""
    events: list[dict[str, Any]] = []
    token: str | None = None
    for _ in range(100):
        params = {"dir": "b", "limit": str(limit), **({"from": token} if token else {})}
        page = await client.ok("GET", f"/rooms/{room_id}/messages", **params)
        events += page["chunk"]
        token = page.get("end")
        if not page["chunk"] or token is None:
            break
    return list(reversed(events))


async def test_history_before_the_join_is_backfilled_in_order(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a = await start_server(tmp_path / "a")
    b = await start_server(tmp_path / "b")
    servers += [a, b]
    alice = await Client.register(session, a, "alice")
    bob = await Client.register(session, b, "bob")
    room_id = await alice.create_room(name="Old times")
    await alice.ok("PUT", f"/rooms/{room_id}/state/m.room.topic", {"topic": "in the middle"})
    for i in range(30):
        await alice.send_text(room_id, f"old {i}")
    await bob.ok("POST", f"/join/{room_id}", {}, server_name=a.server_name)
    await bob.send_text(room_id, "bob is here")

    seen = await history(bob, room_id, limit=7)

    texts = [e["content"].get("body") for e in seen if e["type"] == "m.room.message"]
    assert texts == [f"old {i}" for i in range(30)] + ["bob is here"]
    assert seen[0]["type"] == "m.room.create"
    ids = [e["event_id"] for e in seen]
    assert len(ids) == len(set(ids))
    # The same history, in the same order, as the server that was there all along has it.
    assert ids == [e["event_id"] for e in await history(alice, room_id, limit=50)]
    # Backfilled events are history, not news: an incremental /sync after the join does not list them.
    since = (await bob.sync())["next_batch"]
    bob.since = since
    await alice.send_text(room_id, "new")
    timeline = (await bob.sync(timeout_ms=5000))["rooms"]["join"][room_id]["timeline"]["events"]
    assert [e["content"].get("body") for e in timeline if e["type"] == "m.room.message"] == ["new"]
    # Old events did not become forward extremities, nor did the room's state on b move back in time.
    assert await b.storage.events.get_forward_extremities(room_id) == [timeline[-1]["event_id"]]
    assert await b.storage.events.get_backward_extremities(room_id) == []
    topic = await bob.ok("GET", f"/rooms/{room_id}/state/m.room.topic")
    assert topic == {"topic": "in the middle"}
