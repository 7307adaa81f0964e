"""A PDU that could not be judged because its sender could not serve what we needed at that moment (the
state at a gap: every fetch answered 500, as during a partition or a restart) is answered with a per-PDU
error and then tried again in the background (rooms.deferred_pdus RETRY_DELAYS): once the sender
serves again, the event joins the timeline without being sent again. Found by the chaos harness: a message
refused this way during a partition was never delivered."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from .fed_harness import HostileRoom, start_hostile_room

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def room(
    tmp_path_factory: pytest.TempPathFactory, fed_session: aiohttp.ClientSession
) -> AsyncIterator[HostileRoom]:
    room = await start_hostile_room(tmp_path_factory.mktemp("deferred"), fed_session)
    yield room
    await room.close()


async def test_an_event_refused_for_an_unreachable_gap_is_taken_once_the_sender_serves_again(
    room: HostileRoom,
) -> None:
    hidden = await room.message("sent while the link was down")
    event = await room.message("after it", prev=[hidden])
    for name in ("get_missing_events", "event", "state_ids", "state", "event_auth"):
        room.peer.overrides[name] = (500, {"errcode": "M_UNKNOWN", "error": "restarting"})
    try:
        reply = await room.send_txn([event])
    finally:
        room.peer.overrides.clear()
    assert reply.status == 200, reply
    assert reply.body["pdus"][event.event_id].get("error"), reply.body
    assert (await room.stored(event.event_id)) == (False, False)

    # The sender serves again (its own store answers), and never sends the event a second time.
    room.peer.driver.events[hidden.event_id] = hidden
    room.peer.driver.events[event.event_id] = event
    deadline = time.monotonic() + 30
    while not (await room.stored(event.event_id))[0]:
        assert time.monotonic() < deadline, "the refused event was never taken"
        await asyncio.sleep(0.2)
    held, rejected = await room.stored(event.event_id)
    assert held and not rejected
    assert await room.visible_to_alice(event.event_id)
    await room.assert_works()
