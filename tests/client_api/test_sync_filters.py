"""/sync honours the filter's room options (CS "Filtering", "Lazy-loading room members", "Room summary"):
``room.state.lazy_load_members`` (only the timeline senders' member events, the user's own and the heroes';
redundant ones skipped per device unless ``include_redundant_members``), ``room.rooms`` /
``room.not_rooms`` and ``room.include_leave``. Each test also checks the answer without the filter, so
a filter that were ignored fails it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from ranvier.app import Homeserver
from ranvier.client_api.sync_lazy_members import MAX_MEMBERS_PER_ROOM, LazyMembersSent
from tests.scenarios.servers import Client, start_server

pytestmark = pytest.mark.asyncio(loop_scope="module")

LAZY = {"room": {"state": {"lazy_load_members": True}, "timeline": {"limit": 1}}}
LAZY_REDUNDANT = {
    "room": {
        "state": {"lazy_load_members": True, "include_redundant_members": True},
        "timeline": {"limit": 1},
    }
}
NOT_LAZY = {"room": {"timeline": {"limit": 1}}}


@dataclass
class World:
    hs: Homeserver
    session: aiohttp.ClientSession
    alice: Client
    bob: Client
    carol: Client
    dave: Client
    room: str  # named; alice, bob, carol and dave joined


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    hs = await start_server(Path(tmp_path_factory.mktemp("sync_filters")), rate_limits={"enabled": False})
    try:
        async with aiohttp.ClientSession() as session:
            alice = await Client.register(session, hs, "alice")
            bob = await Client.register(session, hs, "bob")
            carol = await Client.register(session, hs, "carol")
            dave = await Client.register(session, hs, "dave")
            room = await alice.create_room(name="Lazy")
            for member in (bob, carol, dave):
                await member.ok("POST", f"/join/{room}", {})
            yield World(hs, session, alice, bob, carol, dave, room)
    finally:
        await hs.stop()


async def sync(
    client: Client, flt: dict[str, Any] | str | None, since: str | None = None, **extra: str
) -> Any:
    params = dict(extra)
    if flt is not None:
        params["filter"] = flt if isinstance(flt, str) else json.dumps(flt)
    if since is not None:
        params["since"] = since
    return await client.ok("GET", "/sync", **params)


async def login(client: Client, name: str) -> Client:
    """Another device of ``client``'s user."""
    answer = await client.ok(
        "POST",
        "/login",
        {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": name},
            "password": "pw-" + name * 3,
        },
    )
    return Client(client.session, client.hs, client.user_id, answer["access_token"])


def members(body: Any, room: str) -> set[str]:
    """The user ids whose member events the room's ``state`` block carries."""
    return {
        e["state_key"] for e in body["rooms"]["join"][room]["state"]["events"] if e["type"] == "m.room.member"
    }


def senders(body: Any, room: str) -> set[str]:
    return {e["sender"] for e in body["rooms"]["join"][room]["timeline"]["events"]}


async def test_lazy_initial_sync_carries_only_senders_and_own_member(world: World) -> None:
    await world.carol.send_text(world.room, "from carol")
    device = await login(world.alice, "alice")
    full = await sync(device, NOT_LAZY)
    assert members(full, world.room) == {c.user_id for c in (world.alice, world.bob, world.carol, world.dave)}
    lazy = await sync(device, LAZY)
    assert senders(lazy, world.room) == {world.carol.user_id}
    assert members(lazy, world.room) == {world.alice.user_id, world.carol.user_id}
    # Other state is untouched, and the summary still counts every member.
    types = {e["type"] for e in lazy["rooms"]["join"][world.room]["state"]["events"]}
    assert {"m.room.create", "m.room.name", "m.room.power_levels"} <= types
    assert lazy["rooms"]["join"][world.room]["summary"]["m.joined_member_count"] == 4


async def test_lazy_incremental_sends_a_new_senders_member_once(world: World) -> None:
    device = await login(world.alice, "alice")
    await world.carol.send_text(world.room, "carol again")
    first = await sync(device, LAZY)
    assert members(first, world.room) == {world.alice.user_id, world.carol.user_id}
    # Bob speaks: his member event (from before the timeline) comes with the incremental sync...
    await world.bob.send_text(world.room, "bob speaks")
    second = await sync(device, LAZY, since=first["next_batch"])
    assert senders(second, world.room) == {world.bob.user_id}
    assert members(second, world.room) == {world.bob.user_id}
    # ...once: this device has it now.
    await world.bob.send_text(world.room, "bob again")
    third = await sync(device, LAZY, since=second["next_batch"])
    assert senders(third, world.room) == {world.bob.user_id}
    assert members(third, world.room) == set()
    # Carol's was sent by the initial sync: not again either.
    await world.carol.send_text(world.room, "carol a third time")
    fourth = await sync(device, LAZY, since=third["next_batch"])
    assert members(fourth, world.room) == set()
    # include_redundant_members: sent every time.
    await world.bob.send_text(world.room, "bob, redundantly")
    fifth = await sync(device, LAZY_REDUNDANT, since=fourth["next_batch"])
    assert members(fifth, world.room) == {world.bob.user_id}


async def test_redundant_members_are_per_device_and_reset_by_initial_sync(world: World) -> None:
    one = await login(world.alice, "alice")
    two = await login(world.alice, "alice")
    start_one = await sync(one, LAZY)
    start_two = await sync(two, LAZY)
    await world.dave.send_text(world.room, "dave speaks")
    got_one = await sync(one, LAZY, since=start_one["next_batch"])
    assert members(got_one, world.room) == {world.dave.user_id}
    # The other device was not sent dave's member event: it gets it.
    got_two = await sync(two, LAZY, since=start_two["next_batch"])
    assert members(got_two, world.room) == {world.dave.user_id}
    # A new initial sync on device one: the client starts over, so dave's member event comes again.
    again = await sync(one, LAZY)
    assert senders(again, world.room) == {world.dave.user_id}
    assert members(again, world.room) == {world.alice.user_id, world.dave.user_id}


async def test_lazy_gappy_incremental_sync_skips_members_already_sent(world: World) -> None:
    device = await login(world.alice, "alice")
    await world.carol.send_text(world.room, "carol before the gap")
    start = await sync(device, LAZY)
    assert members(start, world.room) == {world.alice.user_id, world.carol.user_id}
    await world.bob.send_text(world.room, "bob in the gap")
    await world.carol.send_text(world.room, "carol after the gap")
    gappy = await sync(device, LAZY, since=start["next_batch"])
    room = gappy["rooms"]["join"][world.room]
    assert room["timeline"]["limited"] is True
    assert senders(gappy, world.room) == {world.carol.user_id}
    # The state at the start of the timeline, lazily: carol's (and alice's own) member already sent.
    assert members(gappy, world.room) == set()
    assert {e["type"] for e in room["state"]["events"]} >= {"m.room.create", "m.room.name"}
    # full_state sends them anyway.
    full = await sync(device, LAZY, since=gappy["next_batch"], full_state="true")
    assert members(full, world.room) == {world.alice.user_id, world.carol.user_id}


async def test_uploaded_lazy_filter_is_honoured(world: World) -> None:
    device = await login(world.alice, "alice")
    await world.dave.send_text(world.room, "dave, for the uploaded filter")
    answer = await device.ok("POST", f"/user/{world.alice.user_id}/filter", LAZY)
    body = await sync(device, answer["filter_id"])
    assert members(body, world.room) == {world.alice.user_id, world.dave.user_id}


async def test_summary_and_heroes_members_when_lazy(world: World) -> None:
    erin = await Client.register(world.session, world.hs, "erin")
    room = await world.bob.create_room()  # no name, no alias: clients name it from the heroes
    await world.alice.ok("POST", f"/join/{room}", {})
    await world.bob.ok("POST", f"/rooms/{room}/invite", {"user_id": erin.user_id})
    await world.alice.send_text(room, "alice speaks")
    lazy = await sync(await login(world.alice, "alice"), LAZY)
    summary = lazy["rooms"]["join"][room]["summary"]
    assert summary["m.joined_member_count"] == 2
    assert summary["m.invited_member_count"] == 1
    assert summary["m.heroes"] == [world.bob.user_id, erin.user_id]
    # The timeline's sender is alice alone, yet the heroes' member events come along.
    assert senders(lazy, room) == {world.alice.user_id}
    assert members(lazy, room) == {world.alice.user_id, world.bob.user_id, erin.user_id}
    # A named room has no heroes.
    assert "m.heroes" not in lazy["rooms"]["join"][world.room]["summary"]


async def test_rooms_and_not_rooms_choose_the_rooms(world: World) -> None:
    frank = await Client.register(world.session, world.hs, "frank")
    a = await frank.create_room(name="A")
    b = await frank.create_room(name="B")
    invited = await world.bob.create_room(name="C")
    await world.bob.ok("POST", f"/rooms/{invited}/invite", {"user_id": frank.user_id})
    everything = await sync(frank, None)
    assert set(everything["rooms"]["join"]) == {a, b}
    assert set(everything["rooms"]["invite"]) == {invited}
    only_a = await sync(frank, {"room": {"rooms": [a]}})
    assert set(only_a["rooms"]["join"]) == {a} and only_a["rooms"]["invite"] == {}
    not_a = await sync(frank, {"room": {"not_rooms": [a]}})
    assert set(not_a["rooms"]["join"]) == {b} and set(not_a["rooms"]["invite"]) == {invited}
    # not_rooms wins over rooms.
    neither = await sync(frank, {"room": {"rooms": [a, invited], "not_rooms": [a]}})
    assert neither["rooms"]["join"] == {} and set(neither["rooms"]["invite"]) == {invited}
    # Incrementally too: news in a room filtered out does not show.
    await frank.send_text(a, "in A")
    await frank.send_text(b, "in B")
    news = await sync(frank, {"room": {"rooms": [b]}}, since=everything["next_batch"])
    assert set(news["rooms"]["join"]) == {b}


async def test_include_leave_shows_rooms_left_on_initial_sync(world: World) -> None:
    gina = await Client.register(world.session, world.hs, "gina")
    room = await world.bob.create_room(name="Left")
    await gina.ok("POST", f"/join/{room}", {})
    await gina.ok("POST", f"/rooms/{room}/leave", {})
    without = await sync(gina, None)
    assert room not in without["rooms"]["leave"]
    with_leave = await sync(gina, {"room": {"include_leave": True}})
    events = with_leave["rooms"]["leave"][room]["timeline"]["events"]
    assert [(e["type"], e["state_key"], e["content"]["membership"]) for e in events] == [
        ("m.room.member", gina.user_id, "leave")
    ]
    # Still subject to rooms/not_rooms.
    filtered = await sync(gina, {"room": {"include_leave": True, "not_rooms": [room]}})
    assert filtered["rooms"]["leave"] == {}


def timeline(body: Any, room: str) -> list[tuple[str, str]]:
    return [(e["type"], e["sender"]) for e in body["rooms"]["join"][room]["timeline"]["events"]]


async def test_timeline_event_filter(world: World) -> None:
    hana = await Client.register(world.session, world.hs, "hana")
    room = await hana.create_room(name="Events")
    await world.bob.ok("POST", f"/join/{room}", {})
    await hana.send_text(room, "hana text")
    await world.bob.ok("PUT", f"/rooms/{room}/send/org.example.ping/p1", {"n": 1})
    await world.bob.ok(
        "PUT",
        f"/rooms/{room}/send/m.room.message/img1",
        {"msgtype": "m.image", "body": "i", "url": "mxc://x/y"},
    )
    last3 = {"limit": 3}
    everything = await sync(hana, {"room": {"timeline": last3}})
    assert timeline(everything, room) == [
        ("m.room.message", hana.user_id),
        ("org.example.ping", world.bob.user_id),
        ("m.room.message", world.bob.user_id),
    ]
    by_type = await sync(hana, {"room": {"timeline": {**last3, "types": ["m.room.*"]}}})
    assert [t for t, _ in timeline(by_type, room)] == ["m.room.message", "m.room.message"]
    not_type = await sync(hana, {"room": {"timeline": {**last3, "not_types": ["m.room.mes*"]}}})
    assert timeline(not_type, room) == [("org.example.ping", world.bob.user_id)]
    by_sender = await sync(hana, {"room": {"timeline": {**last3, "senders": [hana.user_id]}}})
    assert timeline(by_sender, room) == [("m.room.message", hana.user_id)]
    not_sender = await sync(hana, {"room": {"timeline": {**last3, "not_senders": [hana.user_id]}}})
    assert {s for _, s in timeline(not_sender, room)} == {world.bob.user_id}
    with_url = await sync(hana, {"room": {"timeline": {**last3, "contains_url": True}}})
    assert [e["content"]["msgtype"] for e in with_url["rooms"]["join"][room]["timeline"]["events"]] == [
        "m.image"
    ]
    # Incrementally, a room whose news the filter drops entirely is left out.
    await world.bob.ok("PUT", f"/rooms/{room}/send/org.example.ping/p2", {"n": 2})
    news = await sync(
        hana, {"room": {"timeline": {"not_types": ["org.example.ping"]}}}, since=everything["next_batch"]
    )
    assert room not in news["rooms"]["join"]
    unfiltered = await sync(hana, None, since=everything["next_batch"])
    assert timeline(unfiltered, room) == [("org.example.ping", world.bob.user_id)]


async def test_state_event_filter(world: World) -> None:
    body = await sync(world.alice, {"room": {"state": {"not_types": ["m.room.member"]}}})
    state = body["rooms"]["join"][world.room]["state"]["events"]
    assert state and all(e["type"] != "m.room.member" for e in state)
    names = await sync(
        world.alice, {"room": {"state": {"types": ["m.room.name"], "senders": [world.alice.user_id]}}}
    )
    assert [e["type"] for e in names["rooms"]["join"][world.room]["state"]["events"]] == ["m.room.name"]
    nobody = await sync(
        world.alice, {"room": {"state": {"types": ["m.room.name"], "not_senders": [world.alice.user_id]}}}
    )
    assert nobody["rooms"]["join"][world.room]["state"]["events"] == []


async def test_account_data_and_ephemeral_filters(world: World) -> None:
    ivan = await Client.register(world.session, world.hs, "ivan")
    room = await ivan.create_room(name="Ephemeral")
    await ivan.ok("PUT", f"/user/{ivan.user_id}/account_data/org.example.one", {"a": 1})
    await ivan.ok("PUT", f"/user/{ivan.user_id}/account_data/org.example.two", {"b": 2})
    await ivan.ok("PUT", f"/user/{ivan.user_id}/rooms/{room}/account_data/org.example.room", {"c": 3})
    event_id = await ivan.send_text(room, "to read")
    await ivan.ok("POST", f"/rooms/{room}/receipt/m.read/{event_id}", {})

    def global_types(body: Any) -> set[str]:
        return {e["type"] for e in body["account_data"]["events"]}

    plain = await sync(ivan, None)
    assert {"org.example.one", "org.example.two"} <= global_types(plain)
    joined = plain["rooms"]["join"][room]
    assert [e["type"] for e in joined["account_data"]["events"]] == ["org.example.room"]
    assert "m.receipt" in {e["type"] for e in joined["ephemeral"]["events"]}
    only_one = await sync(ivan, {"account_data": {"types": ["org.example.one"]}})
    assert global_types(only_one) == {"org.example.one"}
    none = await sync(ivan, {"account_data": {"limit": 0}})
    assert global_types(none) == set()
    filtered = await sync(
        ivan,
        {
            "room": {
                "account_data": {"not_types": ["org.example.*"]},
                "ephemeral": {"not_types": ["m.receipt"]},
            }
        },
    )
    joined = filtered["rooms"]["join"][room]
    assert joined["account_data"]["events"] == []
    assert "m.receipt" not in {e["type"] for e in joined["ephemeral"]["events"]}


async def test_lazy_member_resent_when_the_client_retries_an_older_token(world: World) -> None:
    device = await login(world.alice, "alice")
    await world.carol.send_text(world.room, "carol, before the lost answer")
    start = await sync(device, LAZY)
    assert members(start, world.room) == {world.alice.user_id, world.carol.user_id}
    await world.dave.send_text(world.room, "dave, answer lost")
    lost = await sync(device, LAZY, since=start["next_batch"])
    assert members(lost, world.room) == {world.dave.user_id}
    # The client never got that answer and syncs from the same token again: dave's member comes again.
    retried = await sync(device, LAZY, since=start["next_batch"])
    assert members(retried, world.room) == {world.dave.user_id}
    # From the answer's own token it is the client's: not again.
    await world.dave.send_text(world.room, "dave, answer kept")
    after = await sync(device, LAZY, since=retried["next_batch"])
    assert senders(after, world.room) == {world.dave.user_id}
    assert members(after, world.room) == set()


async def test_lazy_record_is_bounded() -> None:
    record = LazyMembersSent(max_devices=2)
    first = record.device("@a:x", "A", None, 10)
    first.record("!r:x", "@m:x", "$m")
    assert record.device("@a:x", "A", 10, 11).sent("!r:x", "@m:x") == "$m"
    # Not acknowledged: a since before the answer that carried it.
    assert record.device("@a:x", "A", 9, 11).sent("!r:x", "@m:x") is None
    # Two other devices push the first out: its members count as unsent (sent again, never missed).
    record.device("@b:x", "B", None, 12)
    record.device("@c:x", "C", None, 12)
    assert record.device("@a:x", "A", 10, 13).sent("!r:x", "@m:x") is None
    # Per room, only the most recent MAX_MEMBERS_PER_ROOM members are kept.
    view = record.device("@c:x", "C", None, 20)
    for i in range(MAX_MEMBERS_PER_ROOM + 1):
        view.record("!r:x", f"@u{i}:x", f"$u{i}")
    later = record.device("@c:x", "C", 20, 21)
    assert later.sent("!r:x", "@u0:x") is None
    assert later.sent("!r:x", f"@u{MAX_MEMBERS_PER_ROOM}:x") == f"$u{MAX_MEMBERS_PER_ROOM}"
    # An initial sync starts the device afresh.
    assert record.device("@c:x", "C", None, 22).sent("!r:x", f"@u{MAX_MEMBERS_PER_ROOM}:x") is None
