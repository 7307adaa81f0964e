"""Partial-state joins in storage (SQLite and PostgreSQL): the resync's durable progress, the
servers_in_room, and rewriting the state of events persisted while the room was partial."""

from __future__ import annotations

from ranvier.storage.interfaces import EventToPersist
from ranvier.storage.sql import RoomStorage
from ranvier.storage.sql.engine import Database
from ranvier.storage.sql.partial_state import PartialStateStore, StateRewrite

from .conftest import ALICE, SERVER, Dag

BOB = "@bob:joiner.test"
CAROL = "@carol:other.test"
DAVE = "@dave:other.test"


async def test_partial_state_progress_and_rewrite(storage: RoomStorage, db: Database) -> None:
    store = PartialStateStore(db)
    dag = Dag()
    create = dag.add("create", etype="m.room.create", state_key="", content={"room_version": "11"})
    alice = dag.member("alice", ALICE, "join", ["create"], auth=["create"])
    carol = dag.member("carol", CAROL, "join", ["alice"], auth=["create", "alice"], sender=CAROL)
    dave = dag.member("dave", DAVE, "join", ["carol"], auth=["create", "alice"], sender=DAVE)
    join = dag.member("join", BOB, "join", ["dave"], auth=["create", "alice"], sender=BOB)
    msg = dag.add("msg", ["join"], auth=["create", "alice"])
    forged = dag.add("forged", ["msg"], auth=["create", "dave"], sender=DAVE)
    await storage.rooms.store_room(dag.room_id, "11", ALICE)

    # The join, on partial state (the create event and alice, the members carol and dave omitted).
    await storage.events.persist_events(
        dag.room_id, [EventToPersist(p, outlier=True) for p in (create, alice)]
    )
    partial = {("m.room.create", ""): create.event_id, ("m.room.member", ALICE): alice.event_id}
    after_join = {**partial, ("m.room.member", BOB): join.event_id}

    async def start(txn: object, written: object) -> None:
        await store.start_txn(
            txn, dag.room_id, join.event_id, SERVER, [SERVER, "other.test", "gone.test", SERVER]
        )

    await storage.events.persist_events(
        dag.room_id,
        [EventToPersist(join, state_before=partial)],
        new_current_state=after_join,
        on_txn=lambda txn, written: start(txn, written),
    )
    store.published_start(dag.room_id)
    await storage.events.persist_events(
        dag.room_id,
        [
            EventToPersist(msg, state_before_is_after_prev=True),
            EventToPersist(forged, state_before_is_after_prev=True),
        ],
    )
    assert await store.is_partial(dag.room_id) and await storage.rooms.is_partial_state(dag.room_id)
    assert await store.servers(dag.room_id) == sorted([SERVER, "gone.test", "other.test"])
    async with db.transaction() as txn:
        assert await store.servers_txn(txn, dag.room_id) == {SERVER, "other.test", "gone.test"}
    # While partial, the joined servers include servers_in_room (where our events go).
    assert await storage.state.get_joined_servers(dag.room_id) == {
        SERVER,
        "other.test",
        "gone.test",
        "joiner.test",
    }
    record = await store.get(dag.room_id)
    assert record is not None and record.join_event_id == join.event_id and not record.has_state_ids
    assert [e for e, *_ in await store.events_since_join(dag.room_id, join.event_id)] == [
        join.event_id,
        msg.event_id,
        forged.event_id,
    ]

    # Progress survives: the state ids, a failure.
    await store.save_state_ids(dag.room_id, [create.event_id, alice.event_id], [create.event_id])
    await store.record_failure(dag.room_id, "other.test: timed out", 123)
    fresh = PartialStateStore(db)
    assert await fresh.get_state_ids(dag.room_id) == ([create.event_id, alice.event_id], [create.event_id])
    record = await fresh.get(dag.room_id)
    assert record is not None and record.attempts == 1 and record.last_error == "other.test: timed out"
    assert record.next_attempt_ts == 123 and record.has_state_ids

    # The full state arrives: the members as outliers, every event's state rewritten, the forged event
    # (dave's, citing his join; dave's membership is 'leave' in the full state) rejected.
    leave = dag.member("leave", DAVE, "leave", ["dave"], auth=["create", "dave"], sender=DAVE)
    await storage.events.persist_events(
        dag.room_id, [EventToPersist(p, outlier=True) for p in (carol, dave, leave)]
    )
    full = {**partial, ("m.room.member", CAROL): carol.event_id, ("m.room.member", DAVE): leave.event_id}
    full_after = {**full, ("m.room.member", BOB): join.event_id}
    rewrites = [
        StateRewrite(join.event_id, full),
        StateRewrite(msg.event_id, full_after),
        StateRewrite(forged.event_id, full_after, "dave is not joined"),
    ]
    before_position = storage.stream.current_position()

    async def complete(txn: object, position: int) -> None:
        await store.complete_txn(txn, dag.room_id, position)

    position = await storage.events.rewrite_states(dag.room_id, rewrites, full_after, complete)
    store.published_complete(dag.room_id)
    assert position == before_position + 1 == storage.stream.current_position()
    assert await storage.state.get_state_ids_before(join.event_id) == full
    assert await storage.state.get_state_ids_after(msg.event_id) == full_after
    assert await storage.state.get_current_state_ids(dag.room_id) == full_after
    assert await storage.state.get_joined_users(dag.room_id) == {ALICE, CAROL, BOB}
    verdicts = await storage.events.get_events_with_verdicts([forged.event_id, msg.event_id])
    assert verdicts[forged.event_id][1] == "dave is not joined" and verdicts[msg.event_id][1] is None
    assert await storage.events.get_forward_extremities(dag.room_id) == [msg.event_id]
    assert not await store.is_partial(dag.room_id) and not await storage.rooms.is_partial_state(dag.room_id)
    assert await store.completed_between([dag.room_id], before_position, position) == {dag.room_id}
    assert await store.completed_between([dag.room_id], position, position + 5) == set()
    assert [r.room_id for r in await store.list_rooms()] == []
    assert [r.room_id for r in await store.list_rooms(include_completed=True)] == [dag.room_id]
    async with db.transaction() as txn:
        assert await store.servers_txn(txn, dag.room_id) == set()  # no longer partial: joined servers only
    # Complete: the members' servers only (gone.test, listed at the join, has no member in the full state).
    assert await storage.state.get_joined_servers(dag.room_id) == {SERVER, "other.test", "joiner.test"}

    # A restart never hands out the completion's position again (no event holds it).
    reopened = await RoomStorage.open(db)
    assert reopened.stream.current_position() == position
