"""Across two in-process servers: a message sent on the other server is searchable here, and the other
server's user is in our user directory under the display name they set there. Then POST
/user_directory/search on one server: shared rooms, public rooms, private rooms, limited, bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from ranvier.app import Homeserver
from tests.scenarios.servers import Client, eventually, start_server


async def _search_bodies(client: Client, term: str) -> list[str]:
    body = {"search_categories": {"room_events": {"search_term": term, "order_by": "recent"}}}
    answer = await client.ok("POST", "/search", body)
    return [r["result"]["content"].get("body") for r in answer["search_categories"]["room_events"]["results"]]


async def _directory(client: Client, term: str, limit: int = 10) -> dict[str, Any]:
    return dict(await client.ok("POST", "/user_directory/search", {"search_term": term, "limit": limit}))


async def test_federated_events_and_users_are_found(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a = await start_server(tmp_path / "a")
    servers.append(a)
    b = await start_server(tmp_path / "b")
    servers.append(b)
    alice = await Client.register(session, a, "alice")
    bob = await Client.register(session, b, "bob")
    room = await alice.create_room()
    await bob.ok("POST", f"/join/{room}", {}, server_name=a.server_name)
    await bob.ok("PUT", f"/profile/{bob.user_id}/displayname", {"displayname": "Bobby Remote"})
    await bob.send_text(room, "a zeppelin over the federation")

    async def found() -> bool:
        return await _search_bodies(alice, "zeppelins") == ["a zeppelin over the federation"]

    await eventually(found)

    async def in_directory() -> bool:
        results = (await _directory(alice, "bobby"))["results"]
        return results == [{"user_id": bob.user_id, "display_name": "Bobby Remote"}]

    await eventually(in_directory)
    # And the other way: Bob's server indexed Alice's messages as they arrived.
    await alice.send_text(room, "zeppelin reply from home")

    async def found_there() -> bool:
        return "zeppelin reply from home" in await _search_bodies(bob, "zeppelin")

    await eventually(found_there)


async def test_user_directory_search(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    hs = await start_server(tmp_path / "a")
    servers.append(hs)
    alice, bob, carol, dave, erin = [
        await Client.register(session, hs, n) for n in ("alice", "bob", "carol", "dave", "erin")
    ]
    await bob.ok("PUT", f"/profile/{bob.user_id}/displayname", {"displayname": "Bob Builder"})
    shared = await alice.create_room(preset="private_chat")
    await alice.ok("POST", f"/rooms/{shared}/invite", {"user_id": bob.user_id})
    await bob.ok("POST", f"/join/{shared}", {})
    await carol.create_room(preset="public_chat")  # a public room: Carol is findable by anyone
    private = await dave.create_room(preset="private_chat")
    await dave.ok("POST", f"/rooms/{private}/invite", {"user_id": erin.user_id})
    await erin.ok("POST", f"/join/{private}", {})

    assert (await _directory(alice, "build"))["results"] == [
        {"user_id": bob.user_id, "display_name": "Bob Builder"}
    ]
    assert [r["user_id"] for r in (await _directory(alice, "carol"))["results"]] == [
        carol.user_id
    ]  # public room
    assert (await _directory(alice, "dave"))["results"] == []  # only in a private room Alice is not in
    assert [r["user_id"] for r in (await _directory(erin, "dave"))["results"]] == [dave.user_id]
    # Every local user matches the server name; the limit cuts and says so.
    first = await _directory(alice, hs.server_name.split(":")[0], limit=1)
    assert len(first["results"]) == 1 and first["limited"] is True
    everyone = await _directory(alice, hs.server_name.split(":")[0])
    assert {r["user_id"] for r in everyone["results"]} == {alice.user_id, bob.user_id, carol.user_id}
    assert everyone["limited"] is False
    # Bob leaves: he shares no room with Alice any more.
    await bob.ok("POST", f"/rooms/{shared}/leave", {})
    assert (await _directory(alice, "bob"))["results"] == []
    # Bad input.
    for body, errcode in (({}, "M_MISSING_PARAM"), ({"search_term": 1}, "M_INVALID_PARAM"),
                          ({"search_term": "x", "limit": "5"}, "M_BAD_JSON"),
                          ({"search_term": "x", "limit": -1}, "M_INVALID_PARAM")):  # fmt: skip
        status, answer = await alice.call("POST", "/user_directory/search", body)
        assert status == 400 and answer["errcode"] == errcode, (body, answer)
