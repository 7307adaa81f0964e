"""A client's transaction id commits with its event (issue 13, item 2), and the timeline-gap queries the
gap filler, /messages and /sync rely on, on both databases."""

from __future__ import annotations

from typing import Any

import pytest

from ranvier.storage.interfaces import EventToPersist, TopoToken
from ranvier.storage.sql import RoomStorage
from ranvier.storage.sql.client_txns import ClientTxnStore
from ranvier.storage.sql.engine import Database

from .conftest import ALICE, Dag

CREATE = ("m.room.create", "")
TXN = (ALICE, "DEVICE", "send/!room/m.room.message/", "txn1")


async def new_room(storage: RoomStorage) -> tuple[Dag, dict[tuple[str, str], str]]:
    dag = Dag()
    await storage.rooms.store_room(dag.room_id, "11", ALICE)
    create = dag.add("create", etype="m.room.create", state_key="", content={"room_version": "11"})
    await storage.events.persist_events(dag.room_id, [EventToPersist(create, state_before={})])
    return dag, {CREATE: create.event_id}


class Crash(Exception):
    """Stands for the process dying after the writes of the transaction, before its commit."""


async def test_a_failure_after_both_writes_rolls_back_the_event_and_its_txn_id(
    storage: RoomStorage, db: Database
) -> None:
    txns = ClientTxnStore(db)
    dag, state = await new_room(storage)
    message = dag.add("hello", ["create"])

    async def record_then_crash(txn: Any, written: list[tuple[EventToPersist, int]]) -> None:
        (item, _), *_ = written
        assert await txns.store_event_id_txn(txn, *TXN, item.pdu.event_id) == item.pdu.event_id
        raise Crash

    with pytest.raises(Crash):
        await storage.events.persist_events(
            dag.room_id, [EventToPersist(message, state_before=state)], on_txn=record_then_crash
        )
    assert await storage.events.have_events([message.event_id]) == set()
    assert await txns.get_event_id(*TXN) is None

    async def record(txn: Any, written: list[tuple[EventToPersist, int]]) -> None:
        for item, _ in written:
            await txns.store_event_id_txn(txn, *TXN, item.pdu.event_id)

    await storage.events.persist_events(
        dag.room_id, [EventToPersist(message, state_before=state)], on_txn=record
    )
    assert await storage.events.have_events([message.event_id]) == {message.event_id}
    assert await txns.get_event_id(*TXN) == message.event_id


async def test_a_second_event_for_a_recorded_txn_id_learns_the_first(db: Database) -> None:
    txns = ClientTxnStore(db)
    assert await txns.store_event_id(*TXN, "$first") == "$first"
    async with db.transaction() as txn:
        assert await txns.store_event_id_txn(txn, *TXN, "$second") == "$first"
    assert await txns.get_event_id(*TXN) == "$first"


async def test_timeline_gaps_are_the_backward_extremities_in_the_middle(storage: RoomStorage) -> None:
    dag, state = await new_room(storage)
    # create <- A <- B <- [C <- D, not held] <- E <- F: D, cited by E, is a hole in the middle.
    dag.add("A", ["create"])
    dag.add("B", ["A"])
    dag.add("C", ["B"])
    dag.add("D", ["C"])
    dag.add("E", ["D"])
    dag.add("F", ["E"])
    await storage.events.persist_events(
        dag.room_id, [EventToPersist(dag.by_name[n], state_before=state) for n in ("A", "B")]
    )
    await storage.events.persist_events(
        dag.room_id, [EventToPersist(dag.by_name[n], state_before=state) for n in ("E", "F")]
    )
    gaps = await storage.events.get_timeline_gaps(dag.room_id)
    e_meta = await storage.events.get_event_meta(dag.id("E"))
    assert e_meta is not None
    assert gaps == {dag.id("D"): TopoToken(e_meta.topo_depth, e_meta.topo_order)}
    assert await storage.events.get_rooms_with_backward_extremities() == [dag.room_id]
    # E follows the hole; F and B do not.
    breaks = await storage.events.get_timeline_breaks(dag.room_id, [dag.id(n) for n in ("B", "E", "F")])
    assert breaks == {dag.id("E")}

    # Backfilling C and D closes the hole; E still follows events /sync never showed.
    await storage.events.persist_events(
        dag.room_id,
        [EventToPersist(dag.by_name[n], state_before=state, backfilled=True) for n in ("C", "D")],
    )
    assert await storage.events.get_timeline_gaps(dag.room_id) == {}
    breaks = await storage.events.get_timeline_breaks(dag.room_id, [dag.id(n) for n in ("E", "F")])
    assert breaks == {dag.id("E")}


async def test_the_start_of_a_joined_room_is_not_a_gap(storage: RoomStorage) -> None:
    dag = Dag()
    await storage.rooms.store_room(dag.room_id, "11", ALICE)
    # We hold the room from J on: its prev event P (history before our join) is a backward extremity at the
    # start, not a hole, and neither is a second event citing P from the same depth.
    dag.add("P", [], depth=5)
    dag.add("J", ["P"])
    dag.add("K", ["P"])
    dag.add("L", ["J", "K"])
    await storage.events.persist_events(
        dag.room_id, [EventToPersist(dag.by_name[n], state_before={}) for n in ("J", "K", "L")]
    )
    assert await storage.events.get_backward_extremities(dag.room_id) == [dag.id("P")]
    assert await storage.events.get_timeline_gaps(dag.room_id) == {}
    ids = [dag.id(n) for n in ("J", "K", "L")]
    assert await storage.events.get_timeline_breaks(dag.room_id, ids) == set()
