"""Ranvier joining Ranvier with partial state (MSC3706): the room is usable at once, the members arrive in
the background, events received meanwhile are re-checked against the full state.

Three servers: A (the resident, a room of ROOM_SIZE members), C (another resident, joined with full state,
with members of its own) and B (the joiner, whose resync is held by a gate until the test opens it)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from ranvier.app import Homeserver
from ranvier.federation.client import FederationError
from ranvier.protocol.events import build_event
from ranvier.protocol.room_versions import get_room_version
from ranvier.storage.interfaces import EventToPersist
from tests.scenarios.servers import Client, eventually, start_server

from .helpers import JOINER_ROOMS, ROOM_SIZE, Gate, fill_room, joined_count, lazy_sync, plain_sync


async def _three_servers(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> tuple[Homeserver, Homeserver, Homeserver, Client, Client, str]:
    a = await start_server(tmp_path / "a", rate_limits={"enabled": False})
    c = await start_server(tmp_path / "c", rate_limits={"enabled": False}, partial_state_joins=False)
    b = await start_server(
        tmp_path / "b", rate_limits={"enabled": False}, partial_state_sync_wait=0.3, **JOINER_ROOMS
    )
    servers += [a, b, c]
    alice = await Client.register(session, a, "alice")
    carol = await Client.register(session, c, "carol")
    room_id = await alice.create_room(name="Big room", topic="partial joins")
    await fill_room(a, room_id, ROOM_SIZE)
    await carol.ok("POST", f"/join/{room_id}", {}, server_name=a.server_name)
    return a, b, c, alice, carol, room_id


async def test_partial_join_usable_at_once_then_complete(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a, b, c, alice, carol, room_id = await _three_servers(tmp_path, servers, session)
    # Mallory (of C) joins and leaves before B joins: B's partial state knows nothing of him.
    mallory = f"@mallory:{c.server_name}"
    mallory_join = await c.creator.send(
        room_id, mallory, "m.room.member", {"membership": "join"}, state_key=mallory
    )
    await c.creator.send(room_id, mallory, "m.room.member", {"membership": "leave"}, state_key=mallory)
    await eventually(lambda: _holds(a, room_id, mallory, "leave"))

    gate = Gate(b)
    bob = await Client.register(session, b, "bob")
    before = await plain_sync(bob)
    await bob.ok("POST", f"/join/{room_id}", {}, server_name=a.server_name)

    # The members_omitted path was taken: the room is partial, few members known, servers_in_room kept.
    record = await b.storage.partial_state.get(room_id)
    assert record is not None and not record.complete and record.joined_via == a.server_name
    assert await b.storage.rooms.is_partial_state(room_id)
    assert set(await b.storage.partial_state.servers(room_id)) == {a.server_name, c.server_name}
    assert await joined_count(b, room_id) < 5
    assert await joined_count(a, room_id) == ROOM_SIZE + 3  # alice, the members, carol, bob

    # Lazy-loading /sync has the room at once, with its name and topic; a non-lazy one leaves it out.
    lazy = await lazy_sync(bob)
    room = lazy["rooms"]["join"][room_id]
    state = {(e["type"], e["state_key"]): e for e in room["state"]["events"]}
    assert state[("m.room.name", "")]["content"]["name"] == "Big room"
    assert state[("m.room.topic", "")]["content"]["topic"] == "partial joins"
    plain = await plain_sync(bob, before["next_batch"])
    assert room_id not in plain["rooms"]["join"]

    # Bob sends at once; it reaches A and C (C through servers_in_room: B knows no member of C yet).
    await bob.send_text(room_id, "hello while partial")
    await eventually(lambda: _has_text(alice, room_id, "hello while partial"))
    await eventually(lambda: _has_text(carol, room_id, "hello while partial"))
    # Alice's and carol's messages reach bob (carol is a member B does not know yet).
    await alice.send_text(room_id, "from alice")
    await carol.send_text(room_id, "from carol")
    await eventually(lambda: _has_texts(bob, room_id, {"from alice", "from carol"}))
    lazy_after = await lazy_sync(bob, lazy["next_batch"])
    members_sent = {
        e["state_key"]
        for e in lazy_after["rooms"]["join"][room_id]["state"]["events"]
        if e["type"] == "m.room.member"
    }
    assert carol.user_id in members_sent  # lazy-loaded from the event's auth events

    # While partial, B is no resident others may join through or take state from (Synapse's 404 too).
    for request in (
        c.federation_client.make_join(b.server_name, room_id, f"@dan:{c.server_name}", ["10", "11", "12"]),
        c.federation_client.get_state_ids(b.server_name, room_id, record.join_event_id),
    ):
        with pytest.raises(FederationError) as refused:
            await request
        assert refused.value.status == 404 and "partial state" in refused.value.message

    # A remote event valid against the partial state but not the full one: mallory, who left, citing
    # his old join. Accepted now (B cannot know better), rejected once the full state is known.
    await eventually(lambda: _joined_server(c, room_id, b.server_name))
    rv = get_room_version((await b.storage.rooms.get_room_version(room_id)).identifier)
    tips = await b.storage.events.get_forward_extremities(room_id)
    create = await b.storage.state.get_current_state_event(room_id, "m.room.create", "")
    power = await b.storage.state.get_current_state_event(room_id, "m.room.power_levels", "")
    assert create is not None and power is not None
    auth = [power.event_id, mallory_join.event_id]
    if not rv.room_id_from_create_event:
        auth.insert(0, create.event_id)
    forged = build_event(
        room_version=rv,
        room_id=room_id,
        sender=mallory,
        event_type="m.room.message",
        content={"msgtype": "m.text", "body": "mallory after leaving"},
        prev_events=tips,
        auth_events=auth,
        depth=await b.storage.events.get_max_depth_of(tips) + 1,
        origin_server_ts=mallory_join.origin_server_ts + 10_000,
        server_name=c.server_name,
        signing_key=c.signing_key,
    )
    # C holds it (as an outlier) so that B can ask C for its auth chain, as from a real sender.
    await c.storage.events.persist_events(room_id, [EventToPersist(pdu=forged, outlier=True)])
    results = await b.incoming_pdus.receive_pdus(c.server_name, [forged.json])
    assert results.get(forged.event_id, {}) == {}, results
    assert "mallory after leaving" in await bob.texts(room_id)

    # The resync: open the gate; /state waits for it (and /members would) and is right at the end.
    gate.open()
    whole = await bob.ok("GET", f"/rooms/{room_id}/state")
    in_state = {
        e["state_key"] for e in whole if e["type"] == "m.room.member" and e["content"]["membership"] == "join"
    }
    assert len(in_state) == ROOM_SIZE + 3
    members = await bob.ok("GET", f"/rooms/{room_id}/members", membership="join")
    joined = {e["state_key"] for e in members["chunk"]}
    assert len(joined) == ROOM_SIZE + 3 and {alice.user_id, carol.user_id, bob.user_id} <= joined
    assert mallory not in joined
    record = await b.storage.partial_state.get(room_id)
    assert record is not None and record.complete and record.attempts == 0
    assert not await b.storage.rooms.is_partial_state(room_id)
    assert await joined_count(b, room_id) == ROOM_SIZE + 3
    assert len((await bob.ok("GET", f"/rooms/{room_id}/joined_members"))["joined"]) == ROOM_SIZE + 3

    # The members that arrived are in the user directory (their join events came as outliers).
    last = ROOM_SIZE - 1
    found = await bob.ok("POST", "/user_directory/search", {"search_term": f"M {last}", "limit": 50})
    assert f"@m{last}:{a.server_name}" in {r["user_id"] for r in found["results"]}

    # Mallory's event failed auth against the full state: rejected, gone from the timeline.
    verdicts = await b.storage.events.get_events_with_verdicts([forged.event_id])
    assert verdicts[forged.event_id][1] is not None
    texts = await bob.texts(room_id)
    assert "mallory after leaving" not in texts
    assert {"hello while partial", "from alice", "from carol"} <= set(texts)
    # B's current state now matches the resident's.
    assert await b.storage.state.get_current_state_ids(room_id) == await _current_without(a, room_id)

    # /sync tells clients: the non-lazy client now gets the room, with every member in its state; the
    # lazy one gets the room again with the members.
    plain_done = await plain_sync(bob, plain["next_batch"])
    room_done = plain_done["rooms"]["join"][room_id]
    member_events = [e for e in room_done["state"]["events"] if e["type"] == "m.room.member"]
    assert len(member_events) >= ROOM_SIZE
    lazy_done = await lazy_sync(bob, lazy_after["next_batch"])
    assert room_id in lazy_done["rooms"]["join"]

    # Bob's later events go to the servers of the full membership (C through its members now).
    await bob.send_text(room_id, "after the resync")
    await eventually(lambda: _has_text(carol, room_id, "after the resync"))


async def test_full_answer_from_resident_is_a_full_join(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    """A joiner with partial_state_joins off asks for (and gets) the full state: no partial room."""
    a = await start_server(tmp_path / "a", rate_limits={"enabled": False})
    b = await start_server(tmp_path / "b", rate_limits={"enabled": False}, partial_state_joins=False)
    servers += [a, b]
    alice = await Client.register(session, a, "alice")
    bob = await Client.register(session, b, "bob")
    room_id = await alice.create_room(name="Small")
    await fill_room(a, room_id, 5)
    await bob.ok("POST", f"/join/{room_id}", {}, server_name=a.server_name)
    assert await b.storage.partial_state.get(room_id) is None
    assert not await b.storage.rooms.is_partial_state(room_id)
    assert await joined_count(b, room_id) == 7
    assert room_id in (await plain_sync(bob))["rooms"]["join"]


async def _holds(hs: Homeserver, room_id: str, user: str, membership: str) -> bool:
    found = await hs.storage.state.get_membership(room_id, user)
    return found is not None and found[0] == membership


async def _joined_server(hs: Homeserver, room_id: str, server: str) -> bool:
    return server in await hs.storage.state.get_joined_servers(room_id)


async def _has_text(client: Client, room_id: str, text: str) -> bool:
    return text in await client.texts(room_id)


async def _has_texts(client: Client, room_id: str, texts: set[str]) -> bool:
    return texts <= set(await client.texts(room_id))


async def _current_without(hs: Homeserver, room_id: str) -> dict[tuple[str, str], str]:
    return await hs.storage.state.get_current_state_ids(room_id)


async def test_leave_and_join_again_is_partial_again_then_complete(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a = await start_server(tmp_path / "a", rate_limits={"enabled": False})
    b = await start_server(tmp_path / "b", rate_limits={"enabled": False}, **JOINER_ROOMS)
    servers += [a, b]
    alice = await Client.register(session, a, "alice")
    bob = await Client.register(session, b, "bob")
    room_id = await alice.create_room(name="Again")
    await fill_room(a, room_id, 10)
    await bob.ok("POST", f"/join/{room_id}", {}, server_name=a.server_name)
    assert len((await bob.ok("GET", f"/rooms/{room_id}/joined_members"))["joined"]) == 12
    first = await b.storage.partial_state.get(room_id)
    assert first is not None and first.complete
    await bob.ok("POST", f"/rooms/{room_id}/leave", {})
    await fill_room(a, room_id, 3, prefix="late")  # joined while B was away

    gate = Gate(b)
    await bob.ok("POST", f"/join/{room_id}", {}, server_name=a.server_name)
    again = await b.storage.partial_state.get(room_id)
    assert again is not None and not again.complete and again.join_event_id != first.join_event_id
    gate.open()
    assert len((await bob.ok("GET", f"/rooms/{room_id}/joined_members"))["joined"]) == 15
    done = await b.storage.partial_state.get(room_id)
    assert done is not None and done.complete


async def test_restricted_room_joined_with_partial_state(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    """A restricted room (v8+): the resident vouches for the joiner (join_authorised_via_users_server), found
    through its membership index; the joiner checks its join against the partial state with the
    authorising member its join cites."""
    a = await start_server(tmp_path / "a", rate_limits={"enabled": False})
    b = await start_server(tmp_path / "b", rate_limits={"enabled": False}, **JOINER_ROOMS)
    servers += [a, b]
    alice = await Client.register(session, a, "alice")
    bob = await Client.register(session, b, "bob")
    lobby = await alice.create_room(name="Lobby")
    allow = [{"type": "m.room_membership", "room_id": lobby}]
    inner = await alice.create_room(name="Inner")
    await fill_room(a, inner, 30)  # while it is public; then only the lobby's members may join
    await alice.ok(
        "PUT", f"/rooms/{inner}/state/m.room.join_rules", {"join_rule": "restricted", "allow": allow}
    )
    status, refused = await bob.call("POST", f"/join/{inner}", {}, server_name=a.server_name)
    assert status == 403, refused  # not in the lobby yet
    await bob.ok("POST", f"/join/{lobby}", {}, server_name=a.server_name)
    await bob.ok("POST", f"/join/{inner}", {}, server_name=a.server_name)
    join = await b.storage.state.get_current_state_event(inner, "m.room.member", bob.user_id)
    assert join is not None and join.content["join_authorised_via_users_server"] == alice.user_id
    assert len((await bob.ok("GET", f"/rooms/{inner}/joined_members"))["joined"]) == 32


async def test_invite_only_room_joined_after_an_invite(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    """The full state before our join holds our invite (the partial state omitted it): the join is right
    against it and the resync completes at its first attempt (it rejected our own join once)."""
    a = await start_server(tmp_path / "a", rate_limits={"enabled": False})
    b = await start_server(tmp_path / "b", rate_limits={"enabled": False}, **JOINER_ROOMS)
    servers += [a, b]
    alice = await Client.register(session, a, "alice")
    bob = await Client.register(session, b, "bob")
    room_id = await alice.create_room(name="Private", preset="private_chat", invite=[bob.user_id])
    await eventually(lambda: _holds(b, room_id, bob.user_id, "invite"))
    await bob.ok("POST", f"/join/{room_id}", {}, server_name=a.server_name)
    joined = (await bob.ok("GET", f"/rooms/{room_id}/joined_members"))["joined"]
    assert set(joined) == {alice.user_id, bob.user_id}
    record = await b.storage.partial_state.get(room_id)
    assert record is not None and record.complete and record.attempts == 0
    join = await b.storage.state.get_membership(room_id, bob.user_id)
    assert join is not None and join[0] == "join"
    verdicts = await b.storage.events.get_events_with_verdicts([join[1]])
    assert verdicts[join[1]][1] is None
