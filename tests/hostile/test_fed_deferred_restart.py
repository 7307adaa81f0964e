"""A PDU that could not be judged (the state at its gap could not be fetched from its sender) is kept in
the database before the ``/send`` transaction is answered (rooms.deferred_pdus), so its tries survive a
restart: here the server is stopped before its first try and started again over the same database, and
once the sender serves again the event joins the timeline without being sent a second time. A SIGKILL
after the answer leaves the same committed row (asserted below by reading it from another connection)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from ranvier.app import Homeserver
from ranvier.storage.sql.deferred_pdus import DeferredPduStore
from ranvier.storage.sql.engine import SqliteDatabase

from .fed_harness import HostileRoom, start_hostile_room

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def room(
    tmp_path_factory: pytest.TempPathFactory, fed_session: aiohttp.ClientSession
) -> AsyncIterator[HostileRoom]:
    room = await start_hostile_room(tmp_path_factory.mktemp("deferred_restart"), fed_session)
    yield room
    await room.close()


async def _waiting(db_path: str) -> list[str]:
    """The deferred PDUs' event ids, read through a connection of our own (what a crash would leave)."""
    db = await SqliteDatabase.open(db_path, readers=0)
    try:
        return [p.event_id for p in await DeferredPduStore(db).due(2**62)]
    finally:
        await db.close()


async def test_a_deferred_event_is_tried_again_after_a_restart(room: HostileRoom) -> None:
    db_path = room.hs.config.database.url[len("sqlite:///") :]
    hidden = await room.message("sent while the link was down")
    event = await room.message("after it", prev=[hidden])
    for name in ("get_missing_events", "event", "state_ids", "state", "event_auth"):
        room.peer.overrides[name] = (500, {"errcode": "M_UNKNOWN", "error": "restarting"})
    try:
        reply = await room.send_txn([event])
    finally:
        room.peer.overrides.clear()
    assert reply.status == 200 and reply.body["pdus"][event.event_id].get("error"), reply
    assert await _waiting(db_path) == [event.event_id]  # committed before the answer

    # Stopped before its first try (2 s later), started again over the same database and name.
    await room.hs.stop()
    assert await _waiting(db_path) == [event.event_id]
    room.hs = Homeserver(room.hs.config)
    await room.hs.start()
    base = f"http://127.0.0.1:{room.hs.ports['client']}"
    room.alice.base = room.carol.base = base
    assert (await room.stored(event.event_id)) == (False, False)

    # The sender serves again (its own store answers) and never sends the event a second time.
    room.peer.driver.events[hidden.event_id] = hidden
    room.peer.driver.events[event.event_id] = event
    deadline = time.monotonic() + 30
    while not (await room.stored(event.event_id))[0]:
        assert time.monotonic() < deadline, "the deferred event was not tried again after the restart"
        await asyncio.sleep(0.2)
    assert (await room.stored(event.event_id)) == (True, False)
    assert (await room.stored(hidden.event_id)) == (True, False)
    while await DeferredPduStore(room.hs.storage.db).count():
        assert time.monotonic() < deadline, "the judged event's row was never removed"
        await asyncio.sleep(0.1)
    assert await room.visible_to_alice(event.event_id)
    await room.assert_works()
