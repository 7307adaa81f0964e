"""Ingest under load: 5,000 chained PDUs in transactions of 50, sent back to back. Every acknowledged PDU
must be in the room's history in order, and nothing may be fetched back from the sender."""

from __future__ import annotations

import asyncio
import logging
import time

from .test_inbound_send import Room, bodies, room  # noqa: F401 - the fixture

logger = logging.getLogger(__name__)

TOTAL = 5000
PER_TXN = 50


async def test_flood_of_chained_pdus(room: Room) -> None:  # noqa: F811
    pdus = [room.message(f"m{i}") for i in range(TOTAL)]
    txns = [pdus[i : i + PER_TXN] for i in range(0, TOTAL, PER_TXN)]
    started = time.monotonic()
    acknowledged: list[str] = []
    for n, txn in enumerate(txns):
        # The next transaction goes out the moment the previous one is acknowledged.
        result = await room.send(txn, txn_id=f"flood{n}")
        assert result == {p.event_id: {} for p in txn}
        acknowledged += [p.event_id for p in txn]
    elapsed = time.monotonic() - started
    print(f"ingested {TOTAL} PDUs in {elapsed:.1f}s: {TOTAL / elapsed:.0f} PDUs/s")

    events = await room.alice.messages(room.room_id)
    assert bodies(events) == [f"m{i}" for i in range(TOTAL)]
    assert [e["event_id"] for e in events if e["type"] == "m.room.message"] == acknowledged
    assert room.driver.served["get_missing_events"] == 0
    assert room.driver.served["event"] == 0
    assert await room.hs.storage.events.get_forward_extremities(room.room_id) == [pdus[-1].event_id]


async def test_concurrent_transactions_all_land_in_order(room: Room) -> None:  # noqa: F811
    pdus = [room.message(f"c{i}") for i in range(400)]
    txns = [pdus[i : i + PER_TXN] for i in range(0, len(pdus), PER_TXN)]
    results = await asyncio.gather(*(room.send(t, txn_id=f"c{n}") for n, t in enumerate(txns)))
    for txn, result in zip(txns, results, strict=True):
        assert result == {p.event_id: {} for p in txn}
    assert bodies(await room.alice.messages(room.room_id)) == [f"c{i}" for i in range(len(pdus))]
    # A transaction whose predecessor is still being handled waits for it; one that overtakes its
    # predecessor on the wire (before it arrives at all) fetches the gap, which is correct too.
    print("served while concurrent:", dict(room.driver.served))
