"""The join gap under partial state, Ranvier joining Ranvier (issue 19): a message the resident sends between
make_join and send_join reaches the joiner while its room is still partial (its resync held by a gate),
through the resident's dummy event alone (the joiner's detection off), or through the joiner's own
detection alone (the resident's dummy event off); once the resync may go on the room completes with the
message once and every member. Rooms of ROOM_SIZE members (200, 5,000 with RANVIER_LONG=1).

The gap message continues the join's prev events, whose state after is the partial state the join was
made on: it is authorised against that, like any event received while partial, with no /state_ids (nor
/state) asked at it (the full state's size: 18.5 s at 5,000 members against Synapse when it was), and
re-checked against the full state when the resync completes."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ranvier.app import Homeserver
from ranvier.protocol.events import build_event
from ranvier.storage.interfaces import EventToPersist
from tests.scenarios.servers import Client, eventually, start_server

from .helpers import JOINER_ROOMS, ROOM_SIZE, Gate, fill_room, joined_count, lazy_sync

TIMEOUT = 300.0 if os.environ.get("RANVIER_LONG") == "1" else 30.0
GAP = "said during the handshake"


@pytest.mark.parametrize("fix", ["resident_dummy_event", "joiner_detection"])
async def test_gap_message_reaches_the_partial_joiner(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession, fix: str
) -> None:
    dummy = fix == "resident_dummy_event"
    a = await start_server(tmp_path / "a", rate_limits={"enabled": False}, join_gap_dummy_event=dummy)
    b = await start_server(tmp_path / "b", rate_limits={"enabled": False}, **JOINER_ROOMS)
    servers += [a, b]
    b.remote_membership.gap_check = not dummy  # one fix at a time
    asked = _count_state_requests(a)
    alice = await Client.register(session, a, "alice")
    room_id = await alice.create_room(name="Gap")
    await fill_room(a, room_id, ROOM_SIZE)
    await alice.send_text(room_id, "old news")

    async def message_in_the_gap(_room: str) -> None:
        await alice.send_text(room_id, GAP)

    b.remote_membership.before_send_join = message_in_the_gap
    gate = Gate(b)
    bob = await Client.register(session, b, "bob")
    await bob.ok("POST", f"/join/{room_id}", {}, server_name=a.server_name)
    assert await b.storage.rooms.is_partial_state(room_id)

    async def seen() -> bool:  # in a lazy-loading /sync's timeline (which backfills nothing)
        joined = (await lazy_sync(bob))["rooms"]["join"]
        timeline = joined[room_id]["timeline"]["events"] if room_id in joined else []
        return GAP in [e["content"].get("body") for e in timeline]

    took = await eventually(seen, timeout=TIMEOUT)
    print(f"\n[partial gap] {fix}, {ROOM_SIZE} members: the gap message seen after {took * 1000:.0f} ms")
    await eventually(_reached(gate), timeout=TIMEOUT)
    assert await b.storage.rooms.is_partial_state(room_id), "seen only after the resync"
    # The resync is held: nothing asked the resident for a state yet (the gap event was authorised
    # against the partial state at the join's prev events, not against a full state fetched at it).
    # (/messages below may backfill the history before the join, and ask the state there.)
    assert asked == [], asked
    assert (await bob.texts(room_id)).count(GAP) == 1
    # Which fix closed it: the resident's dummy event ties the join and the message (one extremity);
    # without it, the resident keeps both and the joiner found the message alone.
    assert len(await a.storage.events.get_forward_extremities(room_id)) == (1 if dummy else 2)

    gate.open()

    async def complete() -> bool:
        return not await b.storage.rooms.is_partial_state(room_id)

    await eventually(complete, timeout=TIMEOUT, interval=0.1)
    assert (await bob.texts(room_id)).count(GAP) == 1
    members = await bob.ok("GET", f"/rooms/{room_id}/members", membership="join")
    assert len(members["chunk"]) == ROOM_SIZE + 2  # alice, the members, bob
    assert await joined_count(b, room_id) == ROOM_SIZE + 2
    await bob.send_text(room_id, "bob after the gap")

    async def alice_has_it() -> bool:
        return "bob after the gap" in await alice.texts(room_id)

    await eventually(alice_has_it, timeout=TIMEOUT)


async def test_gap_event_is_rechecked_against_the_full_state(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    """An event continuing the join's prev events, from a member who left before the join but cites his
    old join: the partial state does not know he left, so it is accepted while partial (without a state
    asked at it); against the full state at the resync it is rejected and leaves the timeline."""
    a = await start_server(tmp_path / "a", rate_limits={"enabled": False})
    b = await start_server(tmp_path / "b", rate_limits={"enabled": False}, **JOINER_ROOMS)
    servers += [a, b]
    alice = await Client.register(session, a, "alice")
    room_id = await alice.create_room(name="Gap re-check")
    members = await fill_room(a, room_id, 30)
    leaver = members[7]
    left_join = await a.storage.state.get_current_state_event(room_id, "m.room.member", leaver)
    assert left_join is not None
    await a.creator.send(room_id, leaver, "m.room.member", {"membership": "leave"}, state_key=leaver)
    await alice.send_text(room_id, "old news")
    asked = _count_state_requests(a)
    gate = Gate(b)
    bob = await Client.register(session, b, "bob")
    await bob.ok("POST", f"/join/{room_id}", {}, server_name=a.server_name)
    record = await b.storage.partial_state.get(room_id)
    assert record is not None and not record.complete
    join = await b.storage.events.get_event(record.join_event_id)
    assert join is not None
    assert await b.storage.state.get_membership(room_id, leaver) is None  # not in the partial state

    # What a resident could have sent in the gap: a message continuing the join's prev events, from the
    # member who left, citing his join (as a server that missed his leave would).
    create = await a.storage.state.get_current_state_event(room_id, "m.room.create", "")
    power = await a.storage.state.get_current_state_event(room_id, "m.room.power_levels", "")
    assert create is not None and power is not None
    rv = join.room_version
    auth = [power.event_id, left_join.event_id]
    if not rv.room_id_from_create_event:
        auth.insert(0, create.event_id)
    forged = build_event(
        room_version=rv,
        room_id=room_id,
        sender=leaver,
        event_type="m.room.message",
        content={"msgtype": "m.text", "body": "from the member who left"},
        prev_events=list(join.prev_event_ids),
        auth_events=auth,
        depth=join.depth,
        origin_server_ts=join.origin_server_ts,
        server_name=a.server_name,
        signing_key=a.signing_key,
    )
    # A holds it so that B can ask A about it (its auth chain), as from a real sender.
    await a.storage.events.persist_events(room_id, [EventToPersist(pdu=forged, outlier=True)])
    results = await b.incoming_pdus.receive_pdus(a.server_name, [forged.json])
    assert results.get(forged.event_id, {}) == {}, results
    meta = await b.storage.events.get_event_meta(forged.event_id)
    assert meta is not None and not meta.outlier and not meta.soft_failed  # accepted against partial state
    await eventually(_reached(gate))
    assert asked == [], asked  # no state asked at the join's prev events (the resync is held)
    assert "from the member who left" in await bob.texts(room_id)

    gate.open()

    async def complete() -> bool:
        return not await b.storage.rooms.is_partial_state(room_id)

    await eventually(complete, timeout=TIMEOUT, interval=0.1)
    assert asked and {e for _, e in asked} == {record.join_event_id}, asked
    verdicts = await b.storage.events.get_events_with_verdicts([forged.event_id])
    assert verdicts[forged.event_id][1] is not None  # rejected against the full state before it
    assert "from the member who left" not in await bob.texts(room_id)
    assert forged.event_id not in await b.storage.events.get_forward_extremities(room_id)


def _count_state_requests(hs: Homeserver) -> list[tuple[str, str]]:
    """Every /state_ids and /state ``hs`` answers from now on, as (endpoint, event id), in order (its
    /state handler reads the ids through state_ids: recorded once, as /state)."""
    asked: list[tuple[str, str]] = []
    reads = hs.federation_reads
    state_ids, state_text = reads.state_ids, reads.state_text
    inside_state: ContextVar[bool] = ContextVar("inside_state", default=False)  # per request (task)

    async def counted_state_ids(origin: str, room: str, event_id: str) -> dict[str, Any]:
        if not inside_state.get():
            asked.append(("state_ids", event_id))
        return await state_ids(origin, room, event_id)

    async def counted_state_text(origin: str, room: str, event_id: str) -> str:
        asked.append(("state", event_id))
        token = inside_state.set(True)
        try:
            return await state_text(origin, room, event_id)
        finally:
            inside_state.reset(token)

    reads.state_ids = counted_state_ids  # type: ignore[method-assign]
    reads.state_text = counted_state_text  # type: ignore[method-assign]
    return asked


def _reached(gate: Gate) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return gate.reached.is_set()

    return check
