"""Our own join rejected against the full state: the resident lied in its partial send_join answer (or the
state had changed): in the full state it gives at the resync, the joining user is banned.

The resync must not fail forever (the join was the only live event): the room completes with our
membership as the full state says (banned), the events we sent meanwhile are rejected, the operator is
told why (the room's last error), and the user learns it through /sync: the room moves to ``leave``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from ranvier.app import Homeserver
from ranvier.protocol.events import build_event
from ranvier.protocol.room_versions import get_room_version
from ranvier.storage.interfaces import EventToPersist
from ranvier.sync.changes import SyncToken
from tests.scenarios.servers import Client, eventually, start_server

from .helpers import JOINER_ROOMS, Gate, fill_room, lazy_sync, plain_sync


async def test_own_join_rejected_against_the_full_state_leaves_the_room(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a = await start_server(tmp_path / "a", rate_limits={"enabled": False})
    b = await start_server(tmp_path / "b", rate_limits={"enabled": False}, **JOINER_ROOMS)
    servers += [a, b]
    alice = await Client.register(session, a, "alice")
    bob = await Client.register(session, b, "bob")
    room_id = await alice.create_room(name="Liar")
    await fill_room(a, room_id, 30)

    # A ban of bob, held by A (as an outlier) but in no state of A's: A lets bob join, then answers the
    # state before his join with the ban in it.
    rv = get_room_version((await a.storage.rooms.get_room_version(room_id)).identifier)
    create = await a.storage.state.get_current_state_event(room_id, "m.room.create", "")
    power = await a.storage.state.get_current_state_event(room_id, "m.room.power_levels", "")
    alice_join = await a.storage.state.get_current_state_event(room_id, "m.room.member", alice.user_id)
    assert create is not None and power is not None and alice_join is not None
    tips = await a.storage.events.get_forward_extremities(room_id)
    auth = [power.event_id, alice_join.event_id]
    if not rv.room_id_from_create_event:
        auth.insert(0, create.event_id)
    ban = build_event(
        room_version=rv,
        room_id=room_id,
        sender=alice.user_id,
        event_type="m.room.member",
        content={"membership": "ban", "reason": "banned before joining"},
        prev_events=tips,
        auth_events=auth,
        depth=await a.storage.events.get_max_depth_of(tips) + 1,
        origin_server_ts=alice_join.origin_server_ts + 1,
        server_name=a.server_name,
        signing_key=a.signing_key,
        state_key=bob.user_id,
    )
    await a.storage.events.persist_events(room_id, [EventToPersist(pdu=ban, outlier=True)])
    reads = a.federation_reads
    honest_state_ids = reads.state_ids

    async def lying_state_ids(origin: str, room: str, event_id: str) -> dict[str, Any]:
        answer = await honest_state_ids(origin, room, event_id)
        pdu = await a.storage.events.get_event(event_id)
        if pdu is not None and pdu.sender == bob.user_id and pdu.type == "m.room.member":
            answer["pdu_ids"] = sorted({*answer["pdu_ids"], ban.event_id})
        return answer

    reads.state_ids = lying_state_ids  # type: ignore[method-assign]

    gate = Gate(b)
    await bob.ok("POST", f"/join/{room_id}", {}, server_name=a.server_name)
    assert await b.storage.partial_state.is_partial(room_id)
    await bob.send_text(room_id, "bob while partial")
    lazy = await lazy_sync(bob)
    plain = await plain_sync(bob)
    assert room_id in lazy["rooms"]["join"]

    # A token taken after the resync fetched the ban (an outlier, at a stream position of its own) but
    # before the room completes: the ban's position is behind it, the leave is news all the same.
    resync = b.partial_resync
    fold_in = resync._fold_in
    mid: dict[str, Any] = {}

    async def fold_in_after_a_sync(*args: Any) -> None:
        mid["lazy"] = await lazy_sync(bob)
        await fold_in(*args)

    resync._fold_in = fold_in_after_a_sync  # type: ignore[method-assign]
    gate.open()

    async def completed() -> bool:
        record = await b.storage.partial_state.get(room_id)
        return record is not None and record.complete

    await eventually(completed, timeout=30)
    record = await b.storage.partial_state.get(room_id)
    assert record is not None and record.attempts == 0
    assert record.last_error is not None and "rejected against the full state" in record.last_error
    membership = await b.storage.state.get_membership(room_id, bob.user_id)
    assert membership == ("ban", ban.event_id)
    assert not await b.storage.partial_state.is_partial(room_id)
    # The join, and bob's message that it authorised, are rejected.
    verdicts = await b.storage.events.get_events_with_verdicts([record.join_event_id])
    assert verdicts[record.join_event_id][1] is not None

    # Bob's clients are told: the room is in the leave section (lazy and not), with the ban.
    assert room_id in mid["lazy"]["rooms"]["join"]
    meta = await b.storage.events.get_event_meta(ban.event_id)
    assert meta is not None and meta.stream_ordering <= SyncToken.parse(mid["lazy"]["next_batch"]).events
    checks = [
        (lazy["next_batch"], lazy_sync),
        (mid["lazy"]["next_batch"], lazy_sync),
        (plain["next_batch"], plain_sync),
    ]
    for since, sync in checks:
        answer = await sync(bob, since)
        assert room_id not in answer["rooms"]["join"]
        left = answer["rooms"]["leave"][room_id]
        assert [e["event_id"] for e in left["timeline"]["events"]] == [ban.event_id]
    assert room_id not in (await bob.ok("GET", "/joined_rooms"))["joined_rooms"]
    status, _ = await bob.call(
        "PUT", f"/rooms/{room_id}/send/m.room.message/after", {"msgtype": "m.text", "body": "no"}
    )
    assert status == 403
