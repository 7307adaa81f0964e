"""Soft failure re-evaluated at the end of a partial-state resync (S2S "Soft failure", "Checks performed on
receipt of a PDU" step 6).

While B's state is partial it lacks most member events, so an event passes step 6 with the member event it
cites standing in for its sender's membership. Mallory (of C) joined and left before B joined; his message
forks from his own join, where he was a member: it passes against the state before it (step 5, with the
full state too), and against B's partial current state, so B accepts it and shows it. Against the full
current state (Mallory has left) it fails: after the resync it must be soft-failed, gone from the
timeline, no forward extremity, and not cited by B's next event."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from ranvier.app import Homeserver
from ranvier.protocol.events import build_event
from ranvier.protocol.room_versions import get_room_version
from ranvier.storage.interfaces import EventToPersist
from tests.scenarios.servers import Client, eventually, start_server

from .helpers import JOINER_ROOMS, Gate, fill_room, joined_count

MEMBERS = 60


async def test_event_soft_failed_against_the_full_state_after_the_resync(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a = await start_server(tmp_path / "a", rate_limits={"enabled": False})
    c = await start_server(tmp_path / "c", rate_limits={"enabled": False}, partial_state_joins=False)
    b = await start_server(tmp_path / "b", rate_limits={"enabled": False}, **JOINER_ROOMS)
    servers += [a, b, c]
    alice = await Client.register(session, a, "alice")
    carol = await Client.register(session, c, "carol")
    bob = await Client.register(session, b, "bob")
    room_id = await alice.create_room(name="Soft failure")
    await fill_room(a, room_id, MEMBERS)
    await carol.ok("POST", f"/join/{room_id}", {}, server_name=a.server_name)
    mallory = f"@mallory:{c.server_name}"
    mallory_join = await c.creator.send(
        room_id, mallory, "m.room.member", {"membership": "join"}, state_key=mallory
    )
    await c.creator.send(room_id, mallory, "m.room.member", {"membership": "leave"}, state_key=mallory)

    async def a_saw_the_leave() -> bool:
        found = await a.storage.state.get_membership(room_id, mallory)
        return found is not None and found[0] == "leave"

    await eventually(a_saw_the_leave)
    gate = Gate(b)
    await bob.ok("POST", f"/join/{room_id}", {}, server_name=a.server_name)
    assert await b.storage.partial_state.is_partial(room_id)
    assert await b.storage.state.get_membership(room_id, mallory) is None  # not in the partial state

    async def c_saw_b() -> bool:
        return b.server_name in await c.storage.state.get_joined_servers(room_id)

    await eventually(c_saw_b)
    await bob.send_text(room_id, "bob while partial")

    # Mallory's message after his join (before his leave), as C would send it.
    rv = get_room_version(mallory_join.room_version.identifier)
    create = await c.storage.state.get_current_state_event(room_id, "m.room.create", "")
    power = await c.storage.state.get_current_state_event(room_id, "m.room.power_levels", "")
    assert create is not None and power is not None
    auth = [power.event_id, mallory_join.event_id]
    if not rv.room_id_from_create_event:
        auth.insert(0, create.event_id)
    forked = build_event(
        room_version=rv,
        room_id=room_id,
        sender=mallory,
        event_type="m.room.message",
        content={"msgtype": "m.text", "body": "mallory on a fork"},
        prev_events=[mallory_join.event_id],
        auth_events=auth,
        depth=mallory_join.depth + 1,
        origin_server_ts=mallory_join.origin_server_ts + 1,
        server_name=c.server_name,
        signing_key=c.signing_key,
    )
    # C holds it so that B can ask C about it (its auth chain), as from a real sender.
    await c.storage.events.persist_events(room_id, [EventToPersist(pdu=forked, outlier=True)])
    results = await b.incoming_pdus.receive_pdus(c.server_name, [forked.json])
    assert results.get(forked.event_id, {}) == {}, results
    meta = await b.storage.events.get_event_meta(forked.event_id)
    assert meta is not None and not meta.outlier and not meta.soft_failed  # passed against partial state
    assert "mallory on a fork" in await bob.texts(room_id)
    assert forked.event_id in await b.storage.events.get_forward_extremities(room_id)

    gate.open()
    assert len((await bob.ok("GET", f"/rooms/{room_id}/joined_members"))["joined"]) == MEMBERS + 3
    record = await b.storage.partial_state.get(room_id)
    assert record is not None and record.complete
    assert await joined_count(b, room_id) == MEMBERS + 3

    # Soft-failed now, not rejected: it passes against the state before it.
    meta = await b.storage.events.get_event_meta(forked.event_id)
    assert meta is not None and meta.soft_failed
    verdicts = await b.storage.events.get_events_with_verdicts([forked.event_id])
    assert verdicts[forked.event_id][1] is None
    assert forked.event_id not in await b.storage.events.get_forward_extremities(room_id)
    texts = await bob.texts(room_id)
    assert "mallory on a fork" not in texts and "bob while partial" in texts
    membership = await b.storage.state.get_membership(room_id, mallory)
    assert membership is not None and membership[0] == "leave"
    # B's next event does not cite it.
    await bob.send_text(room_id, "after the resync")
    latest = await b.storage.state.get_current_state_event(room_id, "m.room.member", bob.user_id)
    assert latest is not None
    (tip,) = await b.storage.events.get_forward_extremities(room_id)
    sent = await b.storage.events.get_event(tip)
    assert sent is not None and sent.content.get("body") == "after the resync"
    assert forked.event_id not in sent.prev_event_ids
