"""Inbound federation: a remote server (the driver) joins a public room of a real Ranvier through ``/send``
and talks in it; forged PDUs are dropped or rejected and never reach clients; transactions are idempotent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ranvier.app import Homeserver
from ranvier.federation.client import FederationError
from ranvier.protocol.events import Pdu, StateKey
from ranvier.protocol.redaction import redact_event
from ranvier.protocol.room_versions import RoomVersion
from ranvier.protocol.signing import SigningKey, compute_signature

from .inbound_driver import (
    ClientUser,
    Driver,
    auth_events_for,
    current_state_events,
    register,
    start_driver,
    start_homeserver,
)


@dataclass
class Room:
    hs: Homeserver
    driver: Driver
    alice: ClientUser
    room_id: str
    rv: RoomVersion
    bob: str
    state: dict[StateKey, Pdu]  # the driver's view of the room state
    last: Pdu  # the driver's latest event

    def message(self, body: str, prev: Pdu | None = None, sender: str | None = None) -> Pdu:
        sender = sender or self.bob
        content = {"msgtype": "m.text", "body": body}
        auth = auth_events_for(self.rv, self.state, "m.room.message", sender, content)
        pdu = self.driver.build(
            self.rv, self.room_id, sender, "m.room.message", content, [prev or self.last], auth
        )
        # Messages change no state: the state before each is the room state as the driver knows it.
        self.driver.state_before[pdu.event_id] = sorted(e.event_id for e in self.state.values())
        self.last = pdu
        return pdu

    async def send(
        self, pdus: list[Pdu], txn_id: str | None = None, edus: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        return (await self.driver.send(self.hs.server_name, pdus, txn_id, edus))["pdus"]


@pytest.fixture
async def room(tmp_path: Path) -> AsyncIterator[Room]:
    hs = await start_homeserver(tmp_path / "hs")
    driver = await start_driver(tmp_path)
    session = aiohttp.ClientSession()
    try:
        alice = await register(session, hs, "alice")
        status, body = await alice.call("POST", "/_matrix/client/v3/createRoom", {"preset": "public_chat"})
        assert status == 200, body
        room_id = body["room_id"]
        rv = await hs.storage.rooms.get_room_version(room_id)
        state = await current_state_events(hs, room_id)
        extremities = await hs.storage.events.get_events(
            await hs.storage.events.get_forward_extremities(room_id)
        )
        bob = driver.user("bob")
        content = {"membership": "join"}
        auth = auth_events_for(rv, state, "m.room.member", bob, content, bob)
        join = driver.build(rv, room_id, bob, "m.room.member", content, list(extremities.values()), auth, bob)
        r = Room(hs, driver, alice, room_id, rv, bob, state, join)
        assert await r.send([join]) == {join.event_id: {}}
        state[("m.room.member", bob)] = join
        yield r
    finally:
        await session.close()
        await driver.close()
        await hs.stop()


def bodies(events: list[dict[str, Any]]) -> list[str]:
    return [e["content"]["body"] for e in events if e["type"] == "m.room.message"]


async def test_messages_from_the_driver_reach_clients_in_order(room: Room) -> None:
    pdus = [room.message(f"hello {i}") for i in range(5)]
    assert await room.send(pdus) == {p.event_id: {} for p in pdus}
    events = await room.alice.messages(room.room_id)
    assert bodies(events) == [f"hello {i}" for i in range(5)]
    joins = [e for e in events if e["type"] == "m.room.member" and e["state_key"] == room.bob]
    assert len(joins) == 1
    assert await room.hs.storage.state.get_membership(room.room_id, room.bob) == (
        "join",
        room.state[("m.room.member", room.bob)].event_id,
    )
    assert room.driver.served["get_missing_events"] == 0 and room.driver.served["event"] == 0


async def test_a_retried_transaction_is_answered_from_the_first_and_not_processed_again(room: Room) -> None:
    first = room.message("once")
    assert await room.send([first], txn_id="same") == {first.event_id: {}}
    second = room.message("not processed")
    # Same transaction id, different content: the stored response comes back, the new PDU is ignored.
    assert await room.send([second], txn_id="same") == {first.event_id: {}}
    assert bodies(await room.alice.messages(room.room_id)) == ["once"]


async def test_bad_signature_is_dropped_and_never_served(room: Room) -> None:
    good = room.message("good")
    forged = dict(room.message("forged", prev=good).json)
    sigs = forged["signatures"][room.driver.server_name]
    key_id = next(iter(sigs))
    other = SigningKey.generate("x")
    sigs = {key_id: compute_signature(redact_event(forged, room.rv), other)}
    forged["signatures"] = {room.driver.server_name: sigs}
    forged_pdu = Pdu(forged, room.rv)
    result = await room.send([good, forged_pdu])
    assert result[good.event_id] == {}
    assert "signature" in result[forged_pdu.event_id]["error"]
    assert await room.hs.storage.events.have_events([forged_pdu.event_id]) == set()
    assert bodies(await room.alice.messages(room.room_id)) == ["good"]


async def test_content_hash_mismatch_keeps_the_redacted_event(room: Room) -> None:
    pdu = room.message("secret")
    tampered = dict(pdu.json)
    tampered["content"] = {"msgtype": "m.text", "body": "tampered"}  # signatures cover the redacted form only
    tampered_pdu = Pdu(tampered, room.rv)
    assert tampered_pdu.event_id == pdu.event_id
    assert await room.send([tampered_pdu]) == {pdu.event_id: {}}
    events = await room.alice.messages(room.room_id)
    served = [e for e in events if e["event_id"] == pdu.event_id]
    assert len(served) == 1 and served[0]["content"] == {}


async def test_event_failing_auth_is_rejected_and_not_served(room: Room) -> None:
    mallory = room.driver.user("mallory")  # never joined
    content = {"msgtype": "m.text", "body": "let me in"}
    auth = auth_events_for(room.rv, room.state, "m.room.message", mallory, content)
    pdu = room.driver.build(room.rv, room.room_id, mallory, "m.room.message", content, [room.last], auth)
    result = await room.send([pdu])
    assert "rejected" in result[pdu.event_id]["error"]
    meta = await room.hs.storage.events.get_event_meta(pdu.event_id)
    assert meta is not None and meta.rejected_reason is not None
    assert await room.hs.storage.events.get_event(pdu.event_id) is None
    assert bodies(await room.alice.messages(room.room_id)) == []
    # A later event citing the rejected one is still accepted (S2S "Rejection").
    after = room.message("after", prev=pdu)
    assert await room.send([after]) == {after.event_id: {}}
    assert bodies(await room.alice.messages(room.room_id)) == ["after"]


async def test_event_of_another_server_unsigned_by_it_is_dropped(room: Room) -> None:
    # The driver relays an event "from" a user of a server that did not sign it.
    impostor = "@alice2:elsewhere.example"
    content = {"msgtype": "m.text", "body": "relayed forgery"}
    auth = auth_events_for(room.rv, room.state, "m.room.message", impostor, content)
    pdu = room.driver.build(room.rv, room.room_id, impostor, "m.room.message", content, [room.last], auth)
    result = await room.send([pdu])
    assert "signature" in result[pdu.event_id]["error"]
    assert await room.hs.storage.events.have_events([pdu.event_id]) == set()


async def test_unknown_room_is_a_per_pdu_error(room: Room) -> None:
    ok = room.message("fine")
    stray = room.driver.build(room.rv, "!" + "A" * 43, room.bob, "m.room.message", {"body": "x"}, [ok], [])
    result = await room.send([stray, ok])
    assert result == {ok.event_id: {}}  # the stray PDU cannot even be named without its room's version


async def test_missing_prev_events_are_fetched_from_the_origin(room: Room) -> None:
    gap = [room.message(f"gap {i}") for i in range(3)]
    tip = room.message("tip")
    assert await room.send([tip]) == {tip.event_id: {}}
    assert room.driver.served["get_missing_events"] == 1
    assert bodies(await room.alice.messages(room.room_id)) == ["gap 0", "gap 1", "gap 2", "tip"]
    assert gap  # fetched, not sent


async def test_read_endpoints_need_membership(room: Room, tmp_path: Path) -> None:
    client = room.driver.fed.client
    state = await client.get_state_ids(room.hs.server_name, room.room_id, room.last.event_id)
    assert room.state[("m.room.create", "")].event_id in state["pdu_ids"] + state["auth_chain_ids"]
    got = await client.get_event(room.hs.server_name, room.last.event_id)
    assert got["pdus"][0]["sender"] == room.bob
    # An unrelated server may not read the room.
    stranger = await start_driver(tmp_path / "stranger")
    try:
        with pytest.raises(FederationError) as e:
            await stranger.fed.client.get_state_ids(room.hs.server_name, room.room_id, room.last.event_id)
        assert e.value.status == 403 and e.value.errcode == "M_FORBIDDEN"
    finally:
        await stranger.close()


async def test_oversized_transactions_are_refused_whole(room: Room) -> None:
    pdus = [room.message(f"x{i}") for i in range(51)]
    with pytest.raises(FederationError) as e:
        await room.send(pdus)
    assert e.value.status == 400 and e.value.errcode == "M_BAD_JSON"
    assert await room.hs.storage.events.have_events([p.event_id for p in pdus]) == set()
