"""Tags, account data and read markers over the client API of an in-process server: tags as m.tag room
account data in /sync, the account data that clients may not set, /read_markers with m.fully_read, m.read
and m.read.private, and private receipts seen by their owner only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from ranvier.app import Homeserver
from tests.scenarios.servers import Client, start_server


def _room_account_data(sync: dict[str, Any], room_id: str) -> dict[str, Any]:
    room = sync.get("rooms", {}).get("join", {}).get(room_id, {})
    return {e["type"]: e["content"] for e in room.get("account_data", {}).get("events", [])}


def _receipts(sync: dict[str, Any], room_id: str) -> set[tuple[str, str, str]]:
    room = sync.get("rooms", {}).get("join", {}).get(room_id, {})
    out = set()
    for event in room.get("ephemeral", {}).get("events", []):
        if event["type"] == "m.receipt":
            for event_id, kinds in event["content"].items():
                for kind, users in kinds.items():
                    out |= {(user, kind, event_id) for user in users}
    return out


async def test_tags_account_data_and_read_markers(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    hs = await start_server(tmp_path / "a")
    servers.append(hs)
    alice = await Client.register(session, hs, "alice")
    bob = await Client.register(session, hs, "bob")
    room = await alice.create_room()
    await bob.ok("POST", f"/join/{room}", {})
    await alice.sync()
    tags = f"/user/{alice.user_id}/rooms/{room}/tags"

    # Tags: set (an order is a float), list, remove; /sync has them as m.tag.
    assert await alice.ok("GET", tags) == {"tags": {}}
    await alice.ok("PUT", tags + "/m.favourite", {"order": 0.25})
    await alice.ok("PUT", tags + "/u.work", {})
    assert await alice.ok("GET", tags) == {"tags": {"m.favourite": {"order": 0.25}, "u.work": {}}}
    assert _room_account_data(await alice.sync(), room)["m.tag"] == {
        "tags": {"m.favourite": {"order": 0.25}, "u.work": {}}
    }
    await alice.ok("DELETE", tags + "/m.favourite")
    await alice.ok("DELETE", tags + "/never.set")
    assert await alice.ok("GET", tags) == {"tags": {"u.work": {}}}
    assert _room_account_data(await alice.sync(), room)["m.tag"] == {"tags": {"u.work": {}}}
    # Someone else's tags, a tag too long, an order that is no number.
    assert (await bob.call("GET", tags))[0] == 403
    assert (await bob.call("PUT", tags + "/u.x", {}))[0] == 403
    status, answer = await alice.call("PUT", tags + "/" + "x" * 256, {})
    assert status == 400 and answer["errcode"] == "M_INVALID_PARAM"
    status, answer = await alice.call("PUT", tags + "/u.y", {"order": "first"})
    assert status == 400 and answer["errcode"] == "M_BAD_JSON"
    status, answer = await alice.call("PUT", f"/user/{alice.user_id}/rooms/not-a-room/tags/u.z", {})
    assert status == 400 and answer["errcode"] == "M_INVALID_PARAM"

    # Account data, global and per room, and what the server keeps for itself.
    await alice.ok("PUT", f"/user/{alice.user_id}/account_data/org.example.theme", {"dark": True})
    await alice.ok("PUT", f"/user/{alice.user_id}/rooms/{room}/account_data/org.example.draft", {"t": "hi"})
    assert await alice.ok("GET", f"/user/{alice.user_id}/account_data/org.example.theme") == {"dark": True}
    # Account data is never signed: fractions are kept as they are (clients store settings that way).
    await alice.ok("PUT", f"/user/{alice.user_id}/account_data/org.example.zoom", {"scale": 1.25})
    assert await alice.ok("GET", f"/user/{alice.user_id}/account_data/org.example.zoom") == {"scale": 1.25}
    assert await alice.ok("GET", f"/user/{alice.user_id}/rooms/{room}/account_data/org.example.draft") == {
        "t": "hi"
    }
    status, answer = await alice.call("GET", f"/user/{alice.user_id}/account_data/org.example.unset")
    assert status == 404 and answer["errcode"] == "M_NOT_FOUND"
    for path in (
        f"/user/{alice.user_id}/account_data/m.fully_read",
        f"/user/{alice.user_id}/rooms/{room}/account_data/m.fully_read",
        f"/user/{alice.user_id}/account_data/m.push_rules",
    ):
        status, answer = await alice.call("PUT", path, {"event_id": "$x"})
        assert status == 405 and answer["errcode"] == "M_BAD_JSON", (path, answer)
    assert (await bob.call("GET", f"/user/{alice.user_id}/account_data/org.example.theme"))[0] == 403

    # Read markers: the fully read marker (room account data), a public and a private receipt.
    first = await bob.send_text(room, "one")
    second = await bob.send_text(room, "two")
    await bob.sync()
    await alice.ok(
        "POST",
        f"/rooms/{room}/read_markers",
        {"m.fully_read": first, "m.read": first, "m.read.private": second},
    )
    alice_sync = await alice.sync()
    assert _room_account_data(alice_sync, room)["m.fully_read"] == {"event_id": first}
    assert {(alice.user_id, "m.read", first), (alice.user_id, "m.read.private", second)} <= _receipts(
        alice_sync, room
    )
    bob_sync = await bob.sync()
    assert (alice.user_id, "m.read", first) in _receipts(bob_sync, room)
    assert not any(kind == "m.read.private" for _, kind, _ in _receipts(bob_sync, room))
    # A private receipt through /receipt, likewise.
    await bob.ok("POST", f"/rooms/{room}/receipt/m.read.private/{second}", {})
    assert (bob.user_id, "m.read.private", second) in _receipts(await bob.sync(), room)
    assert not any(
        u == bob.user_id and k == "m.read.private" for u, k, _ in _receipts(await alice.sync(), room)
    )
    # Bad markers change nothing.
    status, answer = await alice.call("POST", f"/rooms/{room}/read_markers", {"m.fully_read": "nope"})
    assert status == 400 and answer["errcode"] == "M_INVALID_PARAM"
    status, _ = await alice.call(
        "POST", f"/rooms/{room}/read_markers", {"m.fully_read": second, "m.read": "$unknown:x"}
    )
    assert status == 404
    assert await alice.ok("GET", f"/user/{alice.user_id}/rooms/{room}/account_data/m.fully_read") == {
        "event_id": first
    }
