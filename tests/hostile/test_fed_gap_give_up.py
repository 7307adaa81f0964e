"""A hole in the timeline that nobody can fill (the only server holding the missing events refuses to hand
them over) costs a bounded number of background tries (rooms.gap_filler: ``max_failures`` fruitless
``/backfill`` rounds), is then left alone and shown to the operator (a warning in the log and the
``ranvier_timeline_gaps_given_up`` metric), and the room keeps working for its members."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from prometheus_client import generate_latest

from ranvier.rooms.gap_filler import MAX_FAILURES

from .fed_harness import HostileRoom, start_hostile_room

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def room(
    tmp_path_factory: pytest.TempPathFactory, fed_session: aiohttp.ClientSession
) -> AsyncIterator[HostileRoom]:
    room = await start_hostile_room(tmp_path_factory.mktemp("gap_give_up"), fed_session)
    yield room
    await room.close()


def _given_up(room: HostileRoom) -> float:
    return room.hs.metrics.gaps_given_up._value.get()  # type: ignore[no-any-return]


async def test_an_unfillable_hole_is_tried_a_bounded_number_of_times_then_reported(
    room: HostileRoom, caplog: pytest.LogCaptureFixture
) -> None:
    gap_filler = room.hs.gap_filler
    assert gap_filler is not None
    gap_filler._first_retry_delay = 0.05  # the pauses between fruitless rounds (2 s doubling by default)
    # Three events the peer never hands over (/event, /get_missing_events and /backfill find nothing);
    # it answers /state_ids before the newest, so the event citing it is taken, leaving a hole.
    hidden = [await room.message("hidden 0")]
    for i in (1, 2):
        hidden.append(await room.message(f"hidden {i}", prev=[hidden[-1]]))
    room.peer.driver.state_before[hidden[-1].event_id] = sorted(room.expected_state.values())
    event = await room.message("after the hole", prev=[hidden[-1]])
    backfills_before = room.peer.driver.served["backfill"]
    caplog.set_level(logging.WARNING, logger="ranvier.rooms.gap_filler")

    reply = await room.send_txn([event])
    assert reply.status == 200 and reply.body["pdus"] == {event.event_id: {}}, reply
    assert (await room.stored(event.event_id)) == (True, False)
    gaps = await room.hs.storage.events.get_timeline_gaps(room.room_id)
    assert hidden[-1].event_id in gaps

    deadline = time.monotonic() + 30
    while _given_up(room) < 1 or not gap_filler.is_idle(room.room_id):
        assert time.monotonic() < deadline, "the gap filler never gave up"
        await asyncio.sleep(0.05)
    tries = room.peer.driver.served["backfill"] - backfills_before
    assert tries == MAX_FAILURES
    assert any("could not fill" in r.getMessage() for r in caplog.records), caplog.records
    exposed = generate_latest(room.hs.metrics.registry).decode()
    assert "ranvier_timeline_gaps_given_up_total 1.0" in exposed

    # Noticed again (as a later gapped event would make it), the given-up hole is not asked for again.
    gap_filler.notice(room.room_id)
    await asyncio.sleep(0)
    while not gap_filler.is_idle(room.room_id):
        await asyncio.sleep(0.05)
    assert room.peer.driver.served["backfill"] - backfills_before == tries

    # The hole is still there (nothing pretended to fill it) and the room works for everyone.
    assert hidden[-1].event_id in await room.hs.storage.events.get_timeline_gaps(room.room_id)
    assert await room.visible_to_alice(event.event_id)
    await room.assert_works()
