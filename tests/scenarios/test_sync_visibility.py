"""/sync applies history visibility: a first sync after joining does not reach back past what the
room's m.room.history_visibility lets the new member see (CS "History visibility")."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from .servers import Client, start_server


@pytest.mark.parametrize(("visibility", "sees_old"), [("joined", False), ("shared", True)])
async def test_first_sync_after_joining_respects_history_visibility(
    tmp_path: Path, visibility: str, sees_old: bool
) -> None:
    hs = await start_server(tmp_path / "a")
    try:
        async with aiohttp.ClientSession() as session:
            alice = await Client.register(session, hs, "alice")
            bob = await Client.register(session, hs, "bob")
            room_id = await alice.create_room(
                initial_state=[
                    {"type": "m.room.history_visibility", "content": {"history_visibility": visibility}}
                ]
            )
            await alice.send_text(room_id, "before bob")
            await bob.ok("POST", f"/rooms/{room_id}/join", {})
            await alice.send_text(room_id, "after bob")
            sync = await bob.sync()
            events = sync["rooms"]["join"][room_id]["timeline"]["events"]
            texts = [e["content"].get("body") for e in events if e["type"] == "m.room.message"]
            assert "after bob" in texts
            assert ("before bob" in texts) is sees_old
    finally:
        await hs.stop()
