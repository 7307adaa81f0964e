"""Knocking (CS "Knocking on rooms", S2S "Knocking upon a room"): locally and over federation between two
in-process Ranvier servers, with /sync's ``rooms.knock``, the invite that answers a knock, and rescinding."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from ranvier.app import Homeserver
from ranvier.federation.client import FederationError
from ranvier.protocol.events import build_event
from ranvier.protocol.room_versions import get_room_version
from tests.scenarios.servers import Client, eventually, start_server

KNOCK_RULES = {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}


async def _knock_room(alice: Client, name: str) -> str:
    return await alice.create_room(
        preset="private_chat", name=name, room_version="10", initial_state=[KNOCK_RULES]
    )


async def test_knock_over_federation_then_invite_and_join(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a = await start_server(tmp_path / "a")
    b = await start_server(tmp_path / "b")
    servers += [a, b]
    alice = await Client.register(session, a, "alice")
    bob = await Client.register(session, b, "bob")
    room_id = await _knock_room(alice, "Knock knock")
    await alice.sync()

    # Without a knock join rule, nobody may knock: the resident's make_knock refusal is passed on.
    public = await alice.create_room(name="open", room_version="10")
    status, body = await bob.call("POST", f"/knock/{public}", {}, via=a.server_name)
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN"), body

    answer = await bob.ok("POST", f"/knock/{room_id}", {"reason": "let me in"}, via=a.server_name)
    assert answer == {"room_id": room_id}

    sync = await bob.sync()
    knocked = sync["rooms"]["knock"][room_id]["knock_state"]["events"]
    by_type = {e["type"]: e for e in knocked}
    assert by_type["m.room.name"]["content"] == {"name": "Knock knock"}
    assert by_type["m.room.join_rules"]["content"]["join_rule"] == "knock"
    assert "m.room.create" in by_type
    mine = by_type["m.room.member"]
    assert (mine["state_key"], mine["content"]["membership"]) == (bob.user_id, "knock")
    assert room_id not in sync["rooms"]["join"]

    # The resident's members see the knock, with its reason.
    member = await alice.ok("GET", f"/rooms/{room_id}/state/m.room.member/{bob.user_id}")
    assert member["membership"] == "knock" and member["reason"] == "let me in"

    # Knocking twice is fine (knock -> knock is allowed); knocking while invited is not.
    await alice.ok("POST", f"/rooms/{room_id}/invite", {"user_id": bob.user_id})

    async def invited() -> bool:
        return room_id in (await bob.sync())["rooms"]["invite"]

    await eventually(invited)
    status, body = await bob.call("POST", f"/knock/{room_id}", {}, via=a.server_name)
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN"), body

    await bob.ok("POST", f"/join/{room_id}", {})
    joined = await alice.ok("GET", f"/rooms/{room_id}/joined_members")
    assert set(joined["joined"]) == {alice.user_id, bob.user_id}


async def test_knock_locally_rescind_and_unsupported_version(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a = await start_server(tmp_path / "a")
    b = await start_server(tmp_path / "b")
    servers += [a, b]
    alice = await Client.register(session, a, "alice")
    carol = await Client.register(session, a, "carol")
    bob = await Client.register(session, b, "bob")
    room_id = await _knock_room(alice, "Local knock")
    alias = f"#knockers:{a.server_name}"
    await alice.ok("PUT", f"/directory/room/{quote(alias)}", {"room_id": room_id})

    # A local user of a server in the room: an ordinary local event, through the alias.
    await carol.sync()
    assert (await carol.ok("POST", f"/knock/{quote(alias)}", {})) == {"room_id": room_id}
    sync = await carol.sync()
    assert room_id in sync["rooms"]["knock"]
    member = await alice.ok("GET", f"/rooms/{room_id}/state/m.room.member/{carol.user_id}")
    assert member["membership"] == "knock"

    # Rescinding a remote knock: a leave through make_leave/send_leave at the resident.
    await bob.ok("POST", f"/knock/{quote(alias)}", {})
    await bob.ok("POST", f"/rooms/{room_id}/leave", {})

    async def rescinded() -> bool:
        status, member = await alice.call("GET", f"/rooms/{room_id}/state/m.room.member/{bob.user_id}")
        return status == 200 and member["membership"] == "leave"

    await eventually(rescinded)

    # A refused knock: the resident's kick reaches bob's server, which is not in the room, and ends it.
    await bob.ok("POST", f"/knock/{quote(alias)}", {})
    assert room_id in (await bob.sync())["rooms"]["knock"]
    await alice.ok("POST", f"/rooms/{room_id}/kick", {"user_id": bob.user_id, "reason": "no thanks"})

    async def refused() -> bool:
        return room_id in (await bob.sync())["rooms"]["leave"]

    await eventually(refused)
    assert (await b.storage.state.get_membership(room_id, bob.user_id))[0] == "leave"

    # Room versions before 7 have no knocking.
    old = await alice.create_room(room_version="6")
    status, body = await carol.call("POST", f"/knock/{old}", {})
    assert (status, body["errcode"]) == (400, "M_UNSUPPORTED_ROOM_VERSION"), body
    # No server to ask: a v12-style room id we have never heard of, and no via.
    status, body = await carol.call("POST", "/knock/!nowhere", {})
    assert status == 404, body


async def test_make_knock_and_send_knock_refuse_bad_requests(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a = await start_server(tmp_path / "a")
    b = await start_server(tmp_path / "b")
    servers += [a, b]
    alice = await Client.register(session, a, "alice")
    room_id = await _knock_room(alice, "Strict door")
    user = f"@mallory:{b.server_name}"
    base = "/_matrix/federation/v1"

    async def status_of(method: str, path: str, query: Any = None, body: Any = None) -> tuple[int, str]:
        try:
            await b.federation_client.request(method, a.server_name, path, query, body)
        except FederationError as e:
            return e.status, e.errcode or ""
        return 200, ""

    # ``ver`` is required; a user of another server; a room we do not know.
    assert await status_of("GET", f"{base}/make_knock/{quote(room_id)}/{quote(user)}") == (
        400,
        "M_MISSING_PARAM",
    )
    other = f"@someone:{a.server_name}"
    assert (await status_of("GET", f"{base}/make_knock/{quote(room_id)}/{quote(other)}", {"ver": ["10"]}))[
        0
    ] == 403
    assert (await status_of("GET", f"{base}/make_knock/{quote('!nope:x')}/{quote(user)}", {"ver": ["10"]}))[
        0
    ] == 404
    # A make_knock template signed as a join is refused by send_knock.
    template = await b.federation_client.make_knock(a.server_name, room_id, user, ["10"])
    assert template["room_version"] == "10" and template["event"]["content"] == {"membership": "knock"}
    event = template["event"]
    join = build_event(
        room_version=get_room_version("10"),
        room_id=room_id,
        sender=user,
        event_type="m.room.member",
        state_key=user,
        content={"membership": "join"},
        prev_events=event["prev_events"],
        auth_events=event["auth_events"],
        depth=event["depth"],
        origin_server_ts=event["origin_server_ts"],
        server_name=b.server_name,
        signing_key=b.signing_key,
    )
    path = f"{base}/send_knock/{quote(room_id)}/{quote(join.event_id)}"
    assert (await status_of("PUT", path, None, join.json))[0] == 400
    member = await alice.call("GET", f"/rooms/{room_id}/state/m.room.member/{quote(user)}")
    assert member[0] == 404
