"""The intake asks the sender for missing prev events (``/get_missing_events``) before it takes the room's
lock (rooms.incoming ``_prefetch``): a sender whose answer hangs (a connection a partition broke) holds up
its own transaction only, not the room. Found by the chaos harness: one hung fetch under the lock held
every other server's PDUs for the room (and local sends) for the 15 s fetch timeout."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from .fed_harness import HostileRoom, path_segment, start_hostile_room

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def room(
    tmp_path_factory: pytest.TempPathFactory, fed_session: aiohttp.ClientSession
) -> AsyncIterator[HostileRoom]:
    room = await start_hostile_room(tmp_path_factory.mktemp("fetch_outside_lock"), fed_session)
    yield room
    await room.close()


async def test_a_hung_fetch_of_missing_events_does_not_hold_the_room(room: HostileRoom) -> None:
    hidden = await room.message("the peer has it, we do not")
    event = await room.message("after it", prev=[hidden])
    room.peer.driver.events[hidden.event_id] = hidden
    room.peer.driver.events[event.event_id] = event
    released = asyncio.Event()
    room.peer.stalls["get_missing_events"] = released
    before = room.peer.driver.served["get_missing_events"]
    try:
        peer_txn = asyncio.create_task(room.send_txn([event]))
        while room.peer.driver.served["get_missing_events"] == before:
            await asyncio.sleep(0.02)  # the intake is now waiting for the peer's answer

        # Meanwhile the room is free: a local member's message is persisted (it takes the room's lock).
        status, body = await room.alice.call(
            "PUT",
            f"/_matrix/client/v3/rooms/{path_segment(room.room_id)}/send/m.room.message/{secrets.token_hex(4)}",
            {"msgtype": "m.text", "body": "not held up"},
        )
        assert status == 200, body
        assert not peer_txn.done()  # the peer's transaction is still waiting for its own fetch
    finally:
        released.set()
        del room.peer.stalls["get_missing_events"]
    # Answered only now, after the local send: had that send waited for the room's lock, the fetch would
    # have been held under it until it timed out and the event refused ("could not get the state...").
    reply = await peer_txn
    assert reply.status == 200 and reply.body["pdus"] == {event.event_id: {}}, reply
    assert (await room.stored(hidden.event_id)) == (True, False)  # fetched, not a hole
    assert await room.visible_to_alice(event.event_id)
    await room.assert_works()


async def test_a_fetch_never_answered_is_asked_again_on_another_connection(room: HostileRoom) -> None:
    """The first /get_missing_events is never answered (its connection is dead) while the peer answers a
    probe: the fetch is repeated on another connection (federation.hedge) and the event is taken with its
    prev event, instead of waiting out the 15 s fetch timeout and refusing it."""
    hidden = await room.message("the peer has it, we do not (2)")
    event = await room.message("after it (2)", prev=[hidden])
    room.peer.driver.events[hidden.event_id] = hidden
    room.peer.driver.events[event.event_id] = event
    before = room.peer.driver.served["get_missing_events"]
    room.peer.swallow["get_missing_events"] = 1
    try:
        reply = await room.send_txn([event])
    finally:
        room.peer.swallow.clear()
        room.peer.unswallow.set()  # the first request's handler ends (its client has long given up)
    assert reply.status == 200 and reply.body["pdus"] == {event.event_id: {}}, reply
    assert room.peer.driver.served["get_missing_events"] - before >= 2  # asked again
    assert (await room.stored(hidden.event_id)) == (True, False)
    await room.assert_works()
