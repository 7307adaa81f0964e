"""Simplified sliding sync (MSC4186) on one in-process server: lists (ranges, recency, filters), room
subscriptions, required_state wildcards, timelines (limited, prev_batch with /messages, num_live), the
room fields (name, avatar, heroes, counts, notification counts), connection positions and their errors,
long-polling, and the extensions. Each test registers its own users on the module's server."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from ranvier.app import Homeserver
from tests.devices.helpers import TestDevice
from tests.scenarios.servers import fed_port_of, start_server

from .helpers import SlidingClient, one_list, register

pytestmark = pytest.mark.asyncio(loop_scope="module")
_names = itertools.count()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hs(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Homeserver]:
    # Rate limits off: the module shares one server, and its tests register many users from one address.
    server = await start_server(Path(tmp_path_factory.mktemp("sliding")), rate_limits={"enabled": False})
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def user(session: aiohttp.ClientSession, hs: Homeserver, name: str) -> SlidingClient:
    return await register(session, f"http://127.0.0.1:{hs.ports['client']}", f"{name}{next(_names)}")


def types_of(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((e["type"], e.get("state_key", "")) for e in events)


async def test_versions_advertise_simplified_sliding_sync(
    hs: Homeserver, session: aiohttp.ClientSession
) -> None:
    async with session.get(f"http://127.0.0.1:{hs.ports['client']}/_matrix/client/versions") as resp:
        body = await resp.json()
    assert body["unstable_features"]["org.matrix.simplified_msc3575"] is True


async def test_lists_sorted_by_recency_with_ranges_and_room_fields(
    hs: Homeserver, session: aiohttp.ClientSession
) -> None:
    alice = await user(session, hs, "alice")
    bob = await user(session, hs, "bob")
    named = await alice.create_room(name="Named", preset="public_chat")
    plain = await alice.create_room(preset="public_chat")
    third = await alice.create_room(name="Third")
    await bob.ok("POST", f"/join/{plain}", {})
    await alice.state(named, "m.room.avatar", {"url": "mxc://example.org/abc"})
    await alice.text(plain, "newest in plain")
    await alice.text(named, "newest of all")

    body = await alice.sync(one_list([[0, 1]], timeline_limit=2))
    ops = body["lists"]["all"]["ops"]
    assert body["lists"]["all"]["count"] == 3
    assert ops == [{"op": "SYNC", "range": [0, 1], "room_ids": [named, plain]}]
    assert set(body["rooms"]) == {named, plain}  # the third is outside the range
    room = body["rooms"][named]
    assert room["initial"] is True
    assert room["name"] == "Named" and room["avatar"] == "mxc://example.org/abc"
    assert [e["content"].get("body") for e in room["timeline"]][-1] == "newest of all"
    assert len(room["timeline"]) == 2 and room["limited"] is True
    assert room["joined_count"] == 1 and room["invited_count"] == 0
    assert room["num_live"] == 0 and "heroes" not in room
    assert body["rooms"][plain]["bump_stamp"] < room["bump_stamp"]
    # A room without a name has heroes: the other members, with their profile.
    assert body["rooms"][plain]["heroes"] == [
        {"user_id": bob.user_id, "displayname": bob.user_id[1:].split(":")[0]}
    ]
    assert body["rooms"][plain]["joined_count"] == 2

    # Whole list without ranges; a message moves the third room to the top.
    await alice.text(third, "now third is newest")
    body = await alice.sync(one_list(timeline_limit=1), fresh=True)
    assert body["lists"]["all"]["ops"][0]["room_ids"] == [third, named, plain]


async def test_required_state_wildcards_me_and_lazy(hs: Homeserver, session: aiohttp.ClientSession) -> None:
    alice = await user(session, hs, "alice")
    bob = await user(session, hs, "bob")
    carol = await user(session, hs, "carol")
    room = await alice.create_room(name="State", topic="T", preset="public_chat")
    await bob.ok("POST", f"/join/{room}", {})
    await carol.ok("POST", f"/join/{room}", {})
    await bob.text(room, "bob speaks")

    async def state_for(required: list[list[str]], limit: int = 1) -> list[tuple[str, str]]:
        body = await alice.sync(one_list(required_state=required, timeline_limit=limit), fresh=True)
        return types_of(body["rooms"][room].get("required_state", []))

    assert await state_for([["m.room.topic", ""], ["m.room.member", "$ME"]]) == [
        ("m.room.member", alice.user_id),
        ("m.room.topic", ""),
    ]
    # $LAZY: only the members the timeline shows (bob's message).
    assert await state_for([["m.room.member", "$LAZY"]]) == [("m.room.member", bob.user_id)]
    members = await state_for([["m.room.member", "*"]])
    assert members == sorted(("m.room.member", u.user_id) for u in (alice, bob, carol))
    everything = await state_for([["*", "*"]])
    assert ("m.room.create", "") in everything and ("m.room.topic", "") in everything and len(everything) > 6
    assert await state_for([]) == []


async def test_incremental_sends_changes_only(hs: Homeserver, session: aiohttp.ClientSession) -> None:
    alice = await user(session, hs, "alice")
    quiet = await alice.create_room(name="Quiet")
    busy = await alice.create_room(name="Busy")
    request = one_list([[0, 9]], required_state=[["m.room.topic", ""]], timeline_limit=5)
    first = await alice.sync(request)
    assert set(first["rooms"]) == {quiet, busy}

    # Nothing new: an incremental response without rooms.
    again = await alice.sync(request)
    assert again["rooms"] == {}

    event_id = await alice.text(busy, "news")
    topic_id = await alice.state(busy, "m.room.topic", {"topic": "fresh"})
    later = await alice.sync(request)
    assert set(later["rooms"]) == {busy}
    room = later["rooms"][busy]
    assert "initial" not in room and room["limited"] is False
    assert [e["event_id"] for e in room["timeline"]] == [event_id, topic_id]
    assert room["num_live"] == 2
    assert [e["event_id"] for e in room["required_state"]] == [topic_id]
    assert "name" not in room and "joined_count" not in room  # unchanged since they were sent

    # A retry of the same position is answered again (the client may not have had the answer).
    status, retry = await alice.raw_sync(request, again["pos"])
    assert status == 200 and set(retry["rooms"]) == {busy}
    # ...and the connection goes on from the retry's answer (the answer it replaced is forgotten).
    status, gone = await alice.raw_sync(request, later["pos"])
    assert (status, gone["errcode"]) == (400, "M_UNKNOWN_POS")
    alice.pos = retry["pos"]
    # Widening required_state sends the newly asked-for state of rooms already sent.
    wider = one_list([[0, 9]], required_state=[["m.room.topic", ""], ["m.room.create", ""]], timeline_limit=5)
    widened = await alice.sync(wider)
    assert {r: types_of(v["required_state"]) for r, v in widened["rooms"].items()} == {
        quiet: [("m.room.create", "")],
        busy: [("m.room.create", "")],
    }


async def test_prev_batch_pages_back_with_messages(hs: Homeserver, session: aiohttp.ClientSession) -> None:
    alice = await user(session, hs, "alice")
    room = await alice.create_room(name="History")
    for i in range(6):
        await alice.text(room, f"m{i}")
    body = await alice.sync(one_list(timeline_limit=3))
    entry = body["rooms"][room]
    assert [e["content"]["body"] for e in entry["timeline"]] == ["m3", "m4", "m5"] and entry[
        "limited"
    ] is True
    page = await alice.ok(
        "GET", f"/rooms/{room}/messages", dir="b", limit="3", **{"from": entry["prev_batch"]}
    )
    assert [e["content"]["body"] for e in page["chunk"]] == ["m2", "m1", "m0"]


async def test_filters(hs: Homeserver, session: aiohttp.ClientSession) -> None:
    alice = await user(session, hs, "alice")
    bob = await user(session, hs, "bob")
    dm = await alice.create_room(invite=[bob.user_id], is_direct=True, preset="trusted_private_chat")
    await alice.ok("PUT", f"/user/{alice.user_id}/account_data/m.direct", {bob.user_id: [dm]})
    encrypted = await alice.create_room(
        initial_state=[
            {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}
        ]
    )
    space = await alice.create_room(creation_content={"type": "m.space"}, name="Space")
    child = await alice.create_room(name="Child")
    await alice.state(space, "m.space.child", {"via": ["example.org"]}, state_key=child)
    invited = await bob.create_room(invite=[alice.user_id])
    await alice.ok("PUT", f"/user/{alice.user_id}/rooms/{child}/tags/u.work", {})

    async def rooms(filters: dict[str, Any]) -> set[str]:
        body = await alice.sync(one_list(filters=filters, timeline_limit=0), fresh=True)
        return set(body["lists"]["all"]["ops"][0]["room_ids"])

    everything = {dm, encrypted, space, child, invited}
    assert await rooms({}) == everything
    assert await rooms({"is_dm": True}) == {dm}
    assert await rooms({"is_dm": False}) == everything - {dm}
    assert await rooms({"is_encrypted": True}) == {encrypted}
    assert await rooms({"is_invite": True}) == {invited}
    assert await rooms({"is_invite": False}) == everything - {invited}
    assert await rooms({"room_types": ["m.space"]}) == {space}
    assert await rooms({"not_room_types": ["m.space"]}) == everything - {space}
    assert await rooms({"room_types": [None]}) == everything - {space}
    assert await rooms({"spaces": [space]}) == {child}
    assert await rooms({"tags": ["u.work"]}) == {child}
    assert await rooms({"not_tags": ["u.work"]}) == everything - {child}
    assert await rooms({"is_invite": False, "is_encrypted": False, "not_room_types": ["m.space"]}) == {
        dm,
        child,
    }


async def test_invites_leaves_and_subscriptions(hs: Homeserver, session: aiohttp.ClientSession) -> None:
    alice = await user(session, hs, "alice")
    bob = await user(session, hs, "bob")
    room = await bob.create_room(name="Bob's", topic="about")
    first = await alice.sync(one_list(timeline_limit=5))
    assert first["lists"]["all"]["count"] == 0

    await bob.ok("POST", f"/rooms/{room}/invite", {"user_id": alice.user_id})
    invited = await alice.sync(one_list(timeline_limit=5), timeout_ms=5000)
    entry = invited["rooms"][room]
    assert entry["initial"] is True and "timeline" not in entry
    state = {(e["type"], e["state_key"]): e for e in entry["invite_state"]}
    assert state[("m.room.name", "")]["content"] == {"name": "Bob's"}
    assert state[("m.room.member", alice.user_id)]["content"]["membership"] == "invite"

    await alice.ok("POST", f"/join/{room}", {})
    joined = await alice.sync(one_list(timeline_limit=5), timeout_ms=5000)
    assert joined["rooms"][room]["timeline"][-1]["state_key"] == alice.user_id

    await alice.ok("POST", f"/rooms/{room}/leave", {})
    await bob.text(room, "after alice left")
    left = await alice.sync(one_list(timeline_limit=5), timeout_ms=5000)
    timeline = left["rooms"][room]["timeline"]
    assert timeline[-1]["content"]["membership"] == "leave"  # nothing after the leave
    # A fresh connection no longer lists a room the user left themselves...
    fresh = await alice.sync(one_list(timeline_limit=5), fresh=True)
    assert fresh["lists"]["all"]["count"] == 0
    # ...but a subscription still reaches it, up to the leave.
    sub = await alice.sync(
        {"room_subscriptions": {room: {"required_state": [["m.room.name", ""]], "timeline_limit": 1}}},
        fresh=True,
    )
    assert sub["rooms"][room]["timeline"][-1]["content"]["membership"] == "leave"
    assert types_of(sub["rooms"][room]["required_state"]) == [("m.room.name", "")]
    # A room the user was never in is not served to a subscription.
    other = await bob.create_room()
    none = await alice.sync(
        {"room_subscriptions": {other: {"required_state": [], "timeline_limit": 1}}}, fresh=True
    )
    assert none["rooms"] == {}


async def test_notification_counts_are_computed(hs: Homeserver, session: aiohttp.ClientSession) -> None:
    alice = await user(session, hs, "alice")
    bob = await user(session, hs, "bob")
    room = await alice.create_room(name="Counts", preset="public_chat")
    await bob.ok("POST", f"/join/{room}", {})
    await bob.text(room, "plain message")
    await bob.send(
        room,
        {"msgtype": "m.text", "body": "hey alice", "m.mentions": {"user_ids": [alice.user_id]}},
    )
    body = await alice.sync(one_list(timeline_limit=1))
    assert (body["rooms"][room]["notification_count"], body["rooms"][room]["highlight_count"]) == (2, 1)
    last = body["rooms"][room]["timeline"][-1]["event_id"]
    await alice.ok("POST", f"/rooms/{room}/receipt/m.read/{last}", {})
    body = await alice.sync(one_list(timeline_limit=1), fresh=True)
    assert (body["rooms"][room]["notification_count"], body["rooms"][room]["highlight_count"]) == (0, 0)


async def test_positions_and_errors(hs: Homeserver, session: aiohttp.ClientSession) -> None:
    alice = await user(session, hs, "alice")
    await alice.sync(one_list())
    status, body = await alice.raw_sync(one_list(), "99/s1_0_0_0_0_0")
    assert (status, body["errcode"]) == (400, "M_UNKNOWN_POS")
    status, body = await alice.raw_sync(one_list(), "not-a-pos")
    assert (status, body["errcode"]) == (400, "M_UNKNOWN")  # Synapse's "Invalid stream token"
    # Another connection id is another connection: the first one's pos is unknown there.
    status, body = await alice.raw_sync({**one_list(), "conn_id": "other"}, alice.pos)
    assert (status, body["errcode"]) == (400, "M_UNKNOWN_POS")
    # A new request without pos restarts the connection: older positions are forgotten.
    old = alice.pos
    await alice.sync(one_list(), fresh=True)
    status, body = await alice.raw_sync(one_list(), old)
    assert (status, body["errcode"]) == (400, "M_UNKNOWN_POS")
    bad_bodies: list[Any] = [
        [],
        {"lists": {"a": {"required_state": []}}},  # timeline_limit is required
        {"lists": {"a": {"timeline_limit": 1}}},  # so is required_state
        {"lists": {"a": {"required_state": [["only-one"]], "timeline_limit": 1}}},
        {"lists": {"a": {"required_state": [], "timeline_limit": 1001}}},
        {"lists": {"a": {"required_state": [], "timeline_limit": 1, "ranges": [[0, -1]]}}},
        {"lists": {"a": {"required_state": [], "timeline_limit": True}}},
        {"extensions": {"to_device": {"enabled": True, "since": "abc"}}},
        {"lists": {"x" * 65: {"required_state": [], "timeline_limit": 1}}},
        {"lists": {"a": {"required_state": [], "timeline_limit": 1, "filters": {"is_dm": "yes"}}}},
        {"lists": {"a": {"required_state": [], "timeline_limit": 1, "filters": {"spaces": "!s:x"}}}},
        {"lists": {"a": {"required_state": [], "timeline_limit": 1, "filters": {"room_types": [1]}}}},
        {"lists": {"a": {"required_state": [], "timeline_limit": 1, "ranges": [[0]]}}},
        {"lists": {"a": {"required_state": [], "timeline_limit": 1, "slow_get_all_rooms": "no"}}},
        {"room_subscriptions": {"!r:x": {"required_state": "all", "timeline_limit": 1}}},
        {"room_subscriptions": []},
        {"extensions": {"receipts": {"enabled": True, "lists": "all"}}},
        {"extensions": {"to_device": {"enabled": "true"}}},
        {"extensions": {"to_device": {"enabled": True, "limit": "5"}}},
        {"conn_id": 5},
    ]
    for bad in bad_bodies:
        status, body = await alice.raw_sync(bad)
        assert (status, body.get("errcode")) == (400, "M_BAD_JSON"), bad
    status, body = await alice.call(
        "POST", "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync", None, timeout="0"
    )
    assert status == 200  # an empty body is an empty request
    # Unknown extensions are ignored.
    status, body = await alice.raw_sync({"extensions": {"org.example.unknown": {"enabled": True}}})
    assert status == 200 and body["extensions"] == {}


async def test_long_poll_woken_by_a_message(hs: Homeserver, session: aiohttp.ClientSession) -> None:
    alice = await user(session, hs, "alice")
    room = await alice.create_room(name="Poll")
    await alice.sync(one_list(timeline_limit=3))
    waiting = asyncio.ensure_future(alice.sync(one_list(timeline_limit=3), timeout_ms=30_000))
    await asyncio.sleep(0.3)
    assert not waiting.done()  # nothing new yet: the request waits
    event_id = await alice.text(room, "wake up")
    body = await asyncio.wait_for(waiting, 20)
    assert [e["event_id"] for e in body["rooms"][room]["timeline"]] == [event_id]


async def test_extensions(hs: Homeserver, session: aiohttp.ClientSession) -> None:
    alice = await user(session, hs, "alice")
    bob = await user(session, hs, "bob")
    room = await alice.create_room(name="Ext", preset="public_chat")
    await bob.ok("POST", f"/join/{room}", {})
    alice_device = (await alice.ok("GET", "/account/whoami"))["device_id"]
    dev = TestDevice(alice.user_id, alice_device)
    await alice.ok(
        "POST", "/keys/upload", {"device_keys": dev.device_keys(), "one_time_keys": dev.one_time_keys(3)}
    )
    await alice.ok("PUT", f"/user/{alice.user_id}/account_data/org.example.global", {"g": 1})
    await alice.ok("PUT", f"/user/{alice.user_id}/rooms/{room}/account_data/org.example.room", {"r": 1})
    last = await bob.text(room, "hello")
    await bob.ok("POST", f"/rooms/{room}/receipt/m.read/{last}", {})
    await bob.ok("PUT", f"/rooms/{room}/typing/{bob.user_id}", {"typing": True, "timeout": 30000})
    await bob.ok(
        "PUT", "/sendToDevice/org.example.ping/1", {"messages": {alice.user_id: {alice_device: {"n": 1}}}}
    )
    all_on = {
        "to_device": {"enabled": True},
        "e2ee": {"enabled": True},
        "account_data": {"enabled": True},
        "receipts": {"enabled": True},
        "typing": {"enabled": True},
    }
    body = await alice.sync({**one_list(timeline_limit=1), "extensions": all_on})
    ext = body["extensions"]
    assert [e["content"] for e in ext["to_device"]["events"]] == [{"n": 1}]
    assert ext["e2ee"]["device_one_time_keys_count"]["signed_curve25519"] == 3
    assert ext["e2ee"]["device_unused_fallback_key_types"] == []
    assert "device_lists" not in ext["e2ee"]  # only on incremental responses
    assert {"type": "org.example.global", "content": {"g": 1}} in ext["account_data"]["global"]
    assert ext["account_data"]["rooms"][room] == [{"type": "org.example.room", "content": {"r": 1}}]
    assert ext["receipts"]["rooms"][room]["content"][last]["m.read"][bob.user_id]["ts"] > 0
    assert ext["typing"]["rooms"][room] == {"type": "m.typing", "content": {"user_ids": [bob.user_id]}}

    # Incremental: to-device acknowledged by since; device list change of a room member.
    bob_device = (await bob.ok("GET", "/account/whoami"))["device_id"]
    await bob.ok("POST", "/keys/upload", {"device_keys": TestDevice(bob.user_id, bob_device).device_keys()})
    await bob.ok("PUT", f"/rooms/{room}/typing/{bob.user_id}", {"typing": False})
    all_on["to_device"] = {"enabled": True, "since": ext["to_device"]["next_batch"]}
    later = await alice.sync({**one_list(timeline_limit=1), "extensions": all_on}, timeout_ms=5000)
    ext = later["extensions"]
    assert ext["to_device"]["events"] == []
    assert ext["e2ee"]["device_lists"] == {"changed": [bob.user_id], "left": []}
    assert ext["account_data"] == {"global": [], "rooms": {}}
    assert ext["typing"]["rooms"][room]["content"] == {"user_ids": []}
    # An extension limited to a list that does not exist covers no room.
    only = {"typing": {"enabled": True, "lists": ["nope"], "rooms": []}}
    await bob.ok("PUT", f"/rooms/{room}/typing/{bob.user_id}", {"typing": True, "timeout": 30000})
    fresh = await alice.sync({**one_list(timeline_limit=1), "extensions": only}, fresh=True)
    assert fresh["extensions"]["typing"] == {"rooms": {}}


async def test_kicks_lazy_members_and_subscriptions_outside_ranges(
    hs: Homeserver, session: aiohttp.ClientSession
) -> None:
    alice = await user(session, hs, "alice")
    bob = await user(session, hs, "bob")
    chat = await bob.create_room(name="Chat", preset="public_chat")
    await alice.ok("POST", f"/join/{chat}", {})
    await bob.text(chat, "one")
    lazy = one_list([[0, 0]], required_state=[["m.room.member", "$LAZY"]], timeline_limit=1)
    first = await alice.sync(lazy)
    assert types_of(first["rooms"][chat]["required_state"]) == [("m.room.member", bob.user_id)]
    # Bob's membership was sent already: his next message comes without it.
    await bob.text(chat, "two")
    later = await alice.sync(lazy, timeout_ms=5000)
    assert "required_state" not in later["rooms"][chat]
    # Bob renames himself, then the timeline moves on without him (limited): his new member event is not
    # sent then, so the next time he speaks it is sent, not taken as known (else the client keeps "Bob").
    await bob.ok("PUT", f"/profile/{bob.user_id}/displayname", {"displayname": "Robert"})
    await alice.text(chat, "filler 1")
    await alice.text(chat, "filler 2")
    moved_on = await alice.sync(lazy, timeout_ms=5000)
    sent = [e["state_key"] for e in moved_on["rooms"][chat].get("required_state", [])]
    assert bob.user_id not in sent and moved_on["rooms"][chat]["limited"] is True
    await bob.text(chat, "three")
    renamed = await alice.sync(lazy, timeout_ms=5000)
    (member,) = renamed["rooms"][chat]["required_state"]
    assert member["state_key"] == bob.user_id and member["content"]["displayname"] == "Robert"

    # A subscription reaches a room outside the list's range, with its own required_state.
    other = await alice.create_room(name="Other")
    await alice.text(chat, "chat is newest")  # "other" is second, outside [0, 0]
    body = {
        **lazy,
        "room_subscriptions": {other: {"required_state": [["m.room.name", ""]], "timeline_limit": 1}},
    }
    both = await alice.sync(body, fresh=True)
    assert both["lists"]["all"]["ops"][0]["room_ids"] == [chat]
    assert set(both["rooms"]) == {chat, other}
    assert types_of(both["rooms"][other]["required_state"]) == [("m.room.name", "")]

    # Kicked: the room stays listed (unlike a room the user left), its timeline ends at the kick.
    await bob.ok("POST", f"/rooms/{chat}/kick", {"user_id": alice.user_id, "reason": "test"})
    await bob.text(chat, "after the kick")
    fresh = await alice.sync(one_list(timeline_limit=2), fresh=True)
    assert chat in fresh["lists"]["all"]["ops"][0]["room_ids"]
    kicked = fresh["rooms"][chat]
    assert kicked["timeline"][-1]["content"]["membership"] == "leave"
    assert kicked["timeline"][-1]["sender"] == bob.user_id
    assert "joined_count" not in kicked  # counts are for rooms the user is in


async def test_long_poll_woken_by_to_device_and_typing(
    hs: Homeserver, session: aiohttp.ClientSession
) -> None:
    alice = await user(session, hs, "alice")
    bob = await user(session, hs, "bob")
    room = await alice.create_room(name="Wake", preset="public_chat")
    await bob.ok("POST", f"/join/{room}", {})
    device = (await alice.ok("GET", "/account/whoami"))["device_id"]
    body = {
        **one_list(timeline_limit=1),
        "extensions": {"to_device": {"enabled": True}, "typing": {"enabled": True}},
    }
    await alice.sync(body)

    waiting = asyncio.ensure_future(alice.sync(body, timeout_ms=30_000))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    await bob.ok(
        "PUT", "/sendToDevice/org.example.wake/w1", {"messages": {alice.user_id: {device: {"w": 1}}}}
    )
    woken = await asyncio.wait_for(waiting, 20)
    assert [e["content"] for e in woken["extensions"]["to_device"]["events"]] == [{"w": 1}]

    body["extensions"]["to_device"]["since"] = woken["extensions"]["to_device"]["next_batch"]
    waiting = asyncio.ensure_future(alice.sync(body, timeout_ms=30_000))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    await bob.ok("PUT", f"/rooms/{room}/typing/{bob.user_id}", {"typing": True, "timeout": 30000})
    woken = await asyncio.wait_for(waiting, 20)
    assert woken["extensions"]["typing"]["rooms"][room]["content"] == {"user_ids": [bob.user_id]}
    assert woken["rooms"] == {}


async def test_larger_timeline_limit_expands_a_sent_room(
    hs: Homeserver, session: aiohttp.ClientSession
) -> None:
    alice = await user(session, hs, "alice")
    room = await alice.create_room(name="Expand")
    for i in range(3):
        await alice.text(room, f"e{i}")
    first = await alice.sync(one_list(timeline_limit=1))
    assert [e["content"]["body"] for e in first["rooms"][room]["timeline"]] == ["e2"]
    # The client opens the room: a subscription with a larger limit gets the longer timeline once.
    opened = {
        **one_list(timeline_limit=1),
        "room_subscriptions": {room: {"required_state": [], "timeline_limit": 3}},
    }
    expanded = await alice.sync(opened)
    entry = expanded["rooms"][room]
    assert entry["unstable_expanded_timeline"] is True and "initial" not in entry
    assert [e["content"]["body"] for e in entry["timeline"]] == ["e0", "e1", "e2"]
    assert (await alice.sync(opened))["rooms"] == {}  # nothing new since


async def test_positions_survive_a_restart(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    server = await start_server(tmp_path / "restart")
    try:
        alice = await user(session, server, "alice")
        room = await alice.create_room(name="Durable")
        request = one_list(timeline_limit=2, required_state=[["m.room.name", ""]])
        await alice.sync(request)
        await alice.text(room, "before the restart")
        await alice.sync(request)
    finally:
        await server.stop()
    server = await start_server(tmp_path / "restart", fed_port=fed_port_of(server))
    try:
        alice.base_url = f"http://127.0.0.1:{server.ports['client']}"
        await alice.text(room, "after the restart")
        later = await alice.sync(request)
        entry = later["rooms"][room]
        assert "initial" not in entry and "required_state" not in entry
        assert [e["content"]["body"] for e in entry["timeline"]] == ["after the restart"]
        status, body = await alice.raw_sync(request, "1/s1_0_0_0_0_0")
        assert (status, body["errcode"]) == (400, "M_UNKNOWN_POS")
    finally:
        await server.stop()


async def test_a_knocked_room_is_listed_with_its_stripped_state(
    hs: Homeserver, session: aiohttp.ClientSession
) -> None:
    alice = await user(session, hs, "alice")
    bob = await user(session, hs, "bob")
    rules = {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}
    room = await bob.create_room(name="Knock here", initial_state=[rules])
    await alice.ok("POST", f"/knock/{room}", {"reason": "let me in"})
    body = await alice.sync(one_list(timeline_limit=1))
    entry = body["rooms"][room]
    assert entry["initial"] is True and "timeline" not in entry
    state = {(e["type"], e["state_key"]): e["content"] for e in entry["invite_state"]}
    assert state[("m.room.name", "")] == {"name": "Knock here"}
    assert state[("m.room.member", alice.user_id)]["membership"] == "knock"
    invites = await alice.sync(one_list(timeline_limit=1, filters={"is_invite": True}), fresh=True)
    assert invites["lists"]["all"]["count"] == 0  # a knock is not an invite


async def test_limited_timeline_carries_bundled_aggregations(
    hs: Homeserver, session: aiohttp.ClientSession
) -> None:
    """As /sync: a limited timeline's events carry their bundled aggregations (the thread summary)."""
    alice = await user(session, hs, "alice")
    room = await alice.create_room(name="Threads")
    root = await alice.text(room, "root")
    reply = {
        "msgtype": "m.text",
        "body": "in the thread",
        "m.relates_to": {"rel_type": "m.thread", "event_id": root},
    }
    await alice.send(room, reply)
    await alice.text(room, "after")
    answer = await alice.sync(one_list(timeline_limit=3), fresh=True)
    data = answer["rooms"][room]
    assert data["limited"] is True
    (root_event,) = [e for e in data["timeline"] if e["event_id"] == root]
    thread = root_event["unsigned"]["m.relations"]["m.thread"]
    assert thread["count"] == 1 and thread["current_user_participated"] is True
