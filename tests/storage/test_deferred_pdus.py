"""The deferred-PDU table (rooms.deferred_pdus): bounded, one row per event, due in order, on both engines."""

from __future__ import annotations

from ranvier.storage.sql.deferred_pdus import DeferredPduStore
from ranvier.storage.sql.engine import Database


async def test_bounded_due_in_order_rescheduled_and_deleted(db: Database) -> None:
    store = DeferredPduStore(db)
    pdu = {"type": "m.room.message", "content": {"body": "x"}}
    assert await store.add("$b", "!r:x", "o.example", pdu, 200, max_rows=2)
    assert await store.add("$a", "!r:x", "o.example", pdu, 100, max_rows=2)
    assert not await store.add("$a", "!r:x", "o.example", pdu, 50, max_rows=5)  # waiting already: kept as is
    assert not await store.add("$c", "!r:x", "o.example", pdu, 10, max_rows=2)  # full
    assert await store.count() == 2
    assert await store.next_try_ts() == 100
    assert [p.event_id for p in await store.due(150)] == ["$a"]
    due = await store.due(1000)
    assert [(p.event_id, p.tries, p.next_try_ts) for p in due] == [("$a", 0, 100), ("$b", 0, 200)]
    assert due[0].pdu == pdu and due[0].origin == "o.example" and due[0].room_id == "!r:x"
    await store.reschedule("$a", 1, 500)
    assert [(p.event_id, p.tries) for p in await store.due(1000)] == [("$b", 0), ("$a", 1)]
    await store.delete("$b")
    await store.delete("$a")
    assert await store.count() == 0 and await store.next_try_ts() is None
