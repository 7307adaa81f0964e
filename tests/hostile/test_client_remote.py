"""What a remote server sends must not break a room for its local members, and local requests that need a
remote server get a Matrix error when it cannot be reached (issue 12, defects 1, 2 and 7).

- One PDU at the largest canonical depth (2^53-1): local events after it are held at that depth (S2S PDU
  schema, "If the room's depth is already at the limit, the depth must be set to the limit") instead of
  2^53, which canonical JSON refuses (today's main: every local send, state change, ban and leave 400).
- Redactions over federation are applied only as the spec's "Redactions" allow: v3+ "Handling
  redactions" (the redact level, or the same server as the original sender) and v1-v2 auth rule 11;
  otherwise the redaction is kept and the target is served whole.
- An invite of a user whose server does not exist or refuses connections: a Matrix error naming the
  server, not a 500 (today's main).

A driver (a fake remote server with its own signing key) joins a real Ranvier's public room as Bob and
Carol and sends signed PDUs.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ranvier.app import Homeserver
from ranvier.protocol.canonical_json import MAX_SAFE_INT
from ranvier.protocol.events import MAX_DEPTH, Pdu, StateKey, build_event
from ranvier.protocol.room_versions import RoomVersion
from tests.scenarios.inbound_driver import (
    ClientUser,
    Driver,
    auth_events_for,
    current_state_events,
    register,
    start_driver,
    start_homeserver,
)

from .client_env import seg

V3 = "/_matrix/client/v3"


@dataclass
class RemoteRoom:
    hs: Homeserver
    driver: Driver
    alice: ClientUser  # local, the room's creator
    dan: ClientUser  # local, a plain member
    room_id: str
    rv: RoomVersion
    bob: str  # remote users, joined through the driver
    carol: str
    state: dict[StateKey, Pdu]  # the driver's view of the room state

    async def refresh(self) -> Pdu:
        """Take the room's current state and latest event from the homeserver (what the driver would have
        learnt over federation); return that latest event."""
        self.state = await current_state_events(self.hs, self.room_id)
        tips = await self.hs.storage.events.get_forward_extremities(self.room_id)
        events: dict[str, Pdu] = await self.hs.storage.events.get_events(tips)
        return max(events.values(), key=lambda p: p.depth)

    def build(
        self,
        sender: str,
        event_type: str,
        content: dict[str, Any],
        prev: Pdu,
        *,
        state_key: str | None = None,
        redacts: str | None = None,
        depth: int | None = None,
    ) -> Pdu:
        auth = auth_events_for(self.rv, self.state, event_type, sender, content, state_key)
        if redacts is not None and self.rv.redacts_in_content:
            content = {**content, "redacts": redacts}  # v11+: in content
        pdu = build_event(
            room_version=self.rv,
            room_id=self.room_id,
            sender=sender,
            event_type=event_type,
            content=content,
            prev_events=[prev.event_id],
            auth_events=sorted(p.event_id for p in auth),
            depth=depth if depth is not None else prev.depth + 1,
            origin_server_ts=int(time.time() * 1000),
            server_name=self.driver.server_name,
            signing_key=self.driver.fed.keyring.signing_key,
            state_key=state_key,
            redacts=None if self.rv.redacts_in_content else redacts,
        )
        self.driver.events[pdu.event_id] = pdu  # served on /event if the homeserver asks
        self.driver.state_before[pdu.event_id] = sorted(p.event_id for p in self.state.values())
        if state_key is not None:
            self.state[(event_type, state_key)] = pdu
        return pdu

    async def send(self, pdus: list[Pdu]) -> dict[str, Any]:
        return dict((await self.driver.send(self.hs.server_name, pdus))["pdus"])

    async def remote_text(self, sender: str, body: str, prev: Pdu, depth: int | None = None) -> Pdu:
        pdu = self.build(sender, "m.room.message", {"msgtype": "m.text", "body": body}, prev, depth=depth)
        assert await self.send([pdu]) == {pdu.event_id: {}}
        return pdu


async def start_room(tmp_path: Path, session: aiohttp.ClientSession, room_version: str) -> RemoteRoom:
    hs = await start_homeserver(tmp_path / "hs")
    driver = await start_driver(tmp_path)
    alice = await register(session, hs, "alice")
    dan = await register(session, hs, "dan")
    body = {"preset": "public_chat", "room_version": room_version}
    status, answer = await alice.call("POST", V3 + "/createRoom", body)
    assert status == 200, answer
    room_id = answer["room_id"]
    status, answer = await dan.call("POST", V3 + f"/join/{seg(room_id)}", {})
    assert status == 200, answer
    rv = await hs.storage.rooms.get_room_version(room_id)
    room = RemoteRoom(hs, driver, alice, dan, room_id, rv, driver.user("bob"), driver.user("carol"), {})
    for user in (room.bob, room.carol):
        prev = await room.refresh()
        join = room.build(user, "m.room.member", {"membership": "join"}, prev, state_key=user)
        assert await room.send([join]) == {join.event_id: {}}
    return room


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def rooms(session: aiohttp.ClientSession) -> AsyncIterator[list[RemoteRoom]]:
    started: list[RemoteRoom] = []
    yield started
    for room in started:
        await room.driver.close()
        await room.hs.stop()


async def _local_text(user: ClientUser, room_id: str, body: str, txn: str) -> str:
    path = V3 + f"/rooms/{seg(room_id)}/send/m.room.message/{txn}"
    status, answer = await user.call("PUT", path, {"msgtype": "m.text", "body": body})
    assert status == 200, answer
    return str(answer["event_id"])


async def _content(user: ClientUser, room_id: str, event_id: str) -> dict[str, Any]:
    status, answer = await user.call("GET", V3 + f"/rooms/{seg(room_id)}/event/{seg(event_id)}")
    assert status == 200, answer
    return dict(answer["content"])


async def _timeline_ids(user: ClientUser, room_id: str) -> set[str]:
    """The event ids a user gets through /messages and an initial /sync."""
    ids = {e["event_id"] for e in await user.messages(room_id)}
    status, synced = await user.call("GET", V3 + '/sync?filter={"room":{"timeline":{"limit":100}}}')
    assert status == 200, synced
    return ids | {e["event_id"] for e in synced["rooms"]["join"][room_id]["timeline"]["events"]}


# -- defect 2: the largest depth ----------------------------------------------------------------------


# Room versions 1-5 allow depths up to 2^63-1 (pdu_v1/pdu_v3 schemas), 6+ up to 2^53-1 (depth_v6).
@pytest.mark.parametrize(
    ("room_version", "limit"), [("12", MAX_SAFE_INT), ("6", MAX_SAFE_INT), ("5", MAX_DEPTH)]
)
async def test_a_pdu_at_the_largest_depth_leaves_the_room_usable(
    tmp_path: Path, session: aiohttp.ClientSession, rooms: list[RemoteRoom], room_version: str, limit: int
) -> None:
    room = await start_room(tmp_path, session, room_version)
    rooms.append(room)
    deepest = await room.remote_text(room.bob, "at the limit", await room.refresh(), depth=limit)
    # Every kind of local event still goes out, each held at the limit.
    alice, dan, room_id = room.alice, room.dan, room.room_id
    sent = [await _local_text(alice, room_id, "after the deep one", "d1")]
    status, answer = await alice.call(
        "PUT", V3 + f"/rooms/{seg(room_id)}/state/m.room.topic", {"topic": "deep"}
    )
    assert status == 200, answer
    sent.append(answer["event_id"])
    status, answer = await alice.call("POST", V3 + f"/rooms/{seg(room_id)}/ban", {"user_id": room.carol})
    assert status == 200, answer
    status, answer = await dan.call("POST", V3 + f"/rooms/{seg(room_id)}/leave", {})
    assert status == 200, answer
    status, answer = await dan.call("POST", V3 + f"/rooms/{seg(room_id)}/join", {})
    assert status == 200, answer
    sent.append(await _local_text(dan, room_id, "dan is back", "d2"))
    for event_id in sent:
        meta = await room.hs.storage.events.get_event_meta(event_id)
        assert meta is not None and meta.depth == limit
    # Templates for remote joins and leaves (make_join, make_leave) are held at the limit too.
    client = room.driver.fed.client
    template = await client.make_join(room.hs.server_name, room_id, room.driver.user("erin"), [room_version])
    assert template["event"]["depth"] == limit
    template = await client.make_leave(room.hs.server_name, room_id, room.bob)
    assert template["event"]["depth"] == limit
    # The remote side goes on too, at the limit, citing our latest event.
    after = await room.remote_text(room.bob, "still here", await room.refresh(), depth=limit)
    texts = [e["content"].get("body") for e in await alice.messages(room_id) if e["type"] == "m.room.message"]
    assert texts[-4:] == ["at the limit", "after the deep one", "dan is back", "still here"]
    assert deepest.event_id != after.event_id


# -- defect 1, federation side: when a received redaction applies ------------------------------------


@pytest.mark.parametrize("room_version", ["12", "10", "3", "1"])
async def test_remote_redactions_apply_only_as_the_spec_allows(
    tmp_path: Path, session: aiohttp.ClientSession, rooms: list[RemoteRoom], room_version: str
) -> None:
    room = await start_room(tmp_path, session, room_version)
    rooms.append(room)
    alice, room_id = room.alice, room.room_id
    by_alice = await _local_text(alice, room_id, "alice's words", "a1")
    by_carol = await room.remote_text(room.carol, "carol's words", await room.refresh())
    by_bob = await room.remote_text(room.bob, "bob's words", by_carol)

    # Bob (power 0, the driver's server) redacts a local user's message: not his server's, not his power.
    redaction = room.build(room.bob, "m.room.redaction", {}, by_bob, redacts=by_alice)
    answer = await room.send([redaction])
    # v3+: accepted by the auth rules and kept, never applied; v1-v2: rejected by auth rule 11.
    assert (answer[redaction.event_id] == {}) is (room.rv.deferred_redaction_check), answer
    assert await _content(alice, room_id, by_alice) == {"msgtype": "m.text", "body": "alice's words"}
    # Nor do clients see it: one that did would hide Alice's message itself ("Handling redactions": a
    # redaction goes to clients once the server applies it).
    unapplied = redaction.event_id
    assert unapplied not in await _timeline_ids(alice, room_id)
    status, _ = await alice.call("GET", V3 + f"/rooms/{seg(room_id)}/event/{seg(unapplied)}")
    assert status == 404

    # Bob redacts Carol's message and his own: events of his own server, which the spec lets him redact.
    prev = await room.refresh()
    for i, target in enumerate([by_carol, by_bob]):
        redaction = room.build(
            room.bob, "m.room.redaction", {"reason": str(i)}, prev, redacts=target.event_id
        )
        assert await room.send([redaction]) == {redaction.event_id: {}}
        prev = redaction
        assert await _content(alice, room_id, target.event_id) == {}

    # With the redact level, Bob may redact Alice's events.
    status, levels = await alice.call("GET", V3 + f"/rooms/{seg(room_id)}/state/m.room.power_levels")
    assert status == 200
    levels.setdefault("users", {})[room.bob] = 50
    status, answer = await alice.call("PUT", V3 + f"/rooms/{seg(room_id)}/state/m.room.power_levels", levels)
    assert status == 200, answer
    by_alice_2 = await _local_text(alice, room_id, "alice again", "a2")
    redaction = room.build(room.bob, "m.room.redaction", {}, await room.refresh(), redacts=by_alice_2)
    assert await room.send([redaction]) == {redaction.event_id: {}}
    assert await _content(alice, room_id, by_alice_2) == {}
    # The earlier refused one stays unapplied and unseen; the applied ones reach clients.
    assert await _content(room.dan, room_id, by_alice) == {"msgtype": "m.text", "body": "alice's words"}
    seen = await _timeline_ids(room.dan, room_id)
    assert unapplied not in seen and redaction.event_id in seen
    # The room still works both ways.
    await _local_text(room.dan, room_id, "still works", "d1")
    await room.remote_text(room.bob, "still works too", await room.refresh())


# -- defect 7: invites to servers that cannot be reached ------------------------------------------------


async def test_an_invite_to_an_unreachable_server_names_it(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    hs = await start_homeserver(tmp_path / "hs")
    try:
        await _invite_unreachable(hs, session)
    finally:
        await hs.stop()


async def _invite_unreachable(hs: Homeserver, session: aiohttp.ClientSession) -> None:
    alice = await register(session, hs, "alice")
    status, answer = await alice.call("POST", V3 + "/createRoom", {"preset": "private_chat"})
    assert status == 200, answer
    room_id = answer["room_id"]
    for server in ("does-not-exist.invalid", "127.0.0.1:1"):  # no such name; nothing listening
        target = f"@bob:{server}"
        status, answer = await alice.call("POST", V3 + f"/rooms/{seg(room_id)}/invite", {"user_id": target})
        # 404 M_NOT_FOUND naming the server (rooms.remote_join): a client request gets a 4xx, never a
        # 5xx. Synapse answers 500 here (synapse#2047).
        assert (status, answer.get("errcode")) == (404, "M_NOT_FOUND"), answer
        assert server in answer["error"]
        status, answer = await alice.call("POST", V3 + "/createRoom", {"invite": [target]})
        assert (status, answer.get("errcode")) == (404, "M_NOT_FOUND"), answer
        assert server in answer["error"]
    assert await hs.storage.state.get_membership(room_id, "@bob:does-not-exist.invalid") is None
    status, answer = await alice.call(
        "PUT", V3 + f"/rooms/{seg(room_id)}/send/m.room.message/t", {"body": "ok"}
    )
    assert status == 200, answer


async def test_a_redaction_arriving_before_its_target_waits_for_it(
    tmp_path: Path, session: aiohttp.ClientSession, rooms: list[RemoteRoom]
) -> None:
    room = await start_room(tmp_path, session, "12")
    rooms.append(room)
    base = await room.refresh()
    # Two siblings on base: Bob's message, and Carol's redaction of it (same server), sent first.
    text = {"msgtype": "m.text", "body": "soon gone"}
    message = room.build(room.bob, "m.room.message", text, base)
    redaction = room.build(room.carol, "m.room.redaction", {}, base, redacts=message.event_id)
    assert await room.send([redaction]) == {redaction.event_id: {}}
    # Held, but nothing to apply it to yet: clients do not see it ("Handling redactions").
    assert redaction.event_id not in await _timeline_ids(room.alice, room.room_id)
    assert await room.send([message]) == {message.event_id: {}}
    # The target arrives and is served redacted at once.
    assert await _content(room.alice, room.room_id, message.event_id) == {}
    await _local_text(room.alice, room.room_id, "still works", "a1")
