"""Rejected and soft-failed events at the rooms layer: state resolution never lets them into the state.

A real Ranvier and a driver server (``inbound_driver``). The pure resolver has its own tests
(``tests/protocol/state_res``); here the events go through intake, storage and the state service:

- an event we rejected, which the remote server counts as state (its ``/state_ids`` names it), stays out
  of the state at the gap, the state after later events and the room's current state;
- a state event soft-failed against the current state (the sender was demoted concurrently) changes no
  current state, and when the sender's server builds on it, the resolution of the two branches keeps the
  demotion and drops the soft-failed change, while the later message itself is accepted.
"""

from __future__ import annotations

from ranvier.protocol.events import Pdu

from .inbound_driver import auth_events_for, current_state_events
from .test_inbound_send import Room, bodies, room  # noqa: F401 - the fixture

TOPIC = ("m.room.topic", "")
PL = ("m.room.power_levels", "")


def _state_event(r: Room, sender: str, event_type: str, content: dict[str, object], prev: Pdu) -> Pdu:
    auth = auth_events_for(r.rv, r.state, event_type, sender, content, "")
    return r.driver.build(r.rv, r.room_id, sender, event_type, content, [prev], auth, "")


async def _set_power(r: Room, levels: dict[str, int]) -> Pdu:
    """Alice (local) changes the power levels through the client API; returns the new event."""
    status, body = await r.alice.call(
        "GET", f"/_matrix/client/v3/rooms/{r.room_id}/state/m.room.power_levels"
    )
    assert status == 200, body
    body["users"] = {**body.get("users", {}), **levels}
    status, answer = await r.alice.call(
        "PUT", f"/_matrix/client/v3/rooms/{r.room_id}/state/m.room.power_levels", body
    )
    assert status == 200, answer
    event = await r.hs.storage.events.get_event(answer["event_id"])
    assert isinstance(event, Pdu)
    return event


async def test_an_event_rejected_here_stays_out_of_state_the_remote_says_it_is_in(room: Room) -> None:  # noqa: F811
    # Bob has level 0; the topic needs 50: rejected here.
    bad = _state_event(room, room.bob, "m.room.topic", {"topic": "bob's"}, room.last)
    result = await room.send([bad])
    assert "rejected" in result[bad.event_id]["error"]
    meta = await room.hs.storage.events.get_event_meta(bad.event_id)
    assert meta is not None and meta.rejected_reason is not None
    # Bob's server counts its topic as state and builds a long branch on it, longer than the
    # /get_missing_events rounds reach (incoming.PREFETCH_ROUNDS of 20, then one under the room lock): the
    # state at the gap comes from its /state_ids, which names the topic.
    room.state[TOPIC] = bad
    room.last = bad
    chain = [room.message(f"g{i}") for i in range(66)]
    tip = room.message("tip")
    assert room.driver.state_before[chain[5].event_id].count(bad.event_id) == 1
    assert await room.send([tip]) == {tip.event_id: {}}
    assert room.driver.served["state_ids"] >= 1
    # The branch's messages are accepted, but the rejected topic is in no state we hold.
    assert bodies(await room.alice.messages(room.room_id))[-1] == "tip"
    after_tip = await room.hs.storage.state.get_state_ids_after(tip.event_id)
    assert bad.event_id not in after_tip.values()
    current = await room.hs.storage.state.get_current_state_ids(room.room_id)
    assert bad.event_id not in current.values()
    assert TOPIC not in current  # the public_chat room has no topic; the rejected one did not become it
    status, body = await room.alice.call("GET", f"/_matrix/client/v3/rooms/{room.room_id}/state/m.room.topic")
    assert status == 404, body


async def test_a_soft_failed_state_change_loses_the_resolution_that_follows(room: Room) -> None:  # noqa: F811
    # Alice promotes Bob to 50; Bob's server sees that.
    promoted = await _set_power(room, {room.bob: 50})
    room.state[PL] = promoted
    room.last = promoted
    # Alice demotes Bob; Bob's server has not seen it and sets a topic on top of the promotion.
    demoted = await _set_power(room, {room.bob: 0})
    topic = _state_event(room, room.bob, "m.room.topic", {"topic": "from bob"}, promoted)
    assert await room.send([topic]) == {topic.event_id: {}}  # passes at the state before it
    meta = await room.hs.storage.events.get_event_meta(topic.event_id)
    assert meta is not None and meta.soft_failed and meta.rejected_reason is None
    current = await current_state_events(room.hs, room.room_id)
    assert TOPIC not in current and current[PL].event_id == demoted.event_id

    # Bob's server goes on from its topic: a message whose state before it holds the soft-failed topic and
    # the promotion. The current state is now resolved over both branches: the demotion (a power event,
    # later in the power levels' own chain) wins, and Bob's topic then fails against it.
    room.state[TOPIC] = topic
    room.last = topic
    after = room.message("after the topic")
    assert await room.send([after]) == {after.event_id: {}}
    meta = await room.hs.storage.events.get_event_meta(after.event_id)
    assert meta is not None and not meta.soft_failed and meta.rejected_reason is None
    before_after = await room.hs.storage.state.get_state_ids_after(after.event_id)
    assert before_after[TOPIC] == topic.event_id  # the branch's own state keeps its topic
    current_ids = await room.hs.storage.state.get_current_state_ids(room.room_id)
    assert current_ids[PL] == demoted.event_id
    assert TOPIC not in current_ids
    assert "after the topic" in bodies(await room.alice.messages(room.room_id))
