"""Stream positions with several writers: a reader never hands out a position past one still in flight.

The ``Frontier`` cases are pure; the ``MultiWriterPositions`` ones run two writers and a reader over one
PostgreSQL database, passing announcements by hand (the bus is tested in test_bus.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ranvier.storage.sql.engine import Database, PostgresDatabase
from ranvier.storage.sql.migrate import migrate
from ranvier.workers.liveness import WriterLiveness
from ranvier.workers.positions import Announcement, Frontier, MultiWriterPositions


def test_out_of_order_commit_waits_for_the_gap() -> None:
    f = Frontier(0)
    assert not f.committed([2, 3])  # 1 still in flight somewhere
    assert f.position == 0
    assert f.committed([1])
    assert f.position == 3


def test_declarations_cross_an_abandoned_position() -> None:
    # Writer a abandoned 1 (its transaction failed); b committed 2. Only when both declared past 1 does
    # the frontier pass it.
    f = Frontier(0, {"a": 0, "b": 0})
    f.committed([2])
    assert f.position == 0
    f.declare("b", 2)
    assert f.position == 0  # a has not said that 1 is done
    f.declare("a", 2)
    assert f.position == 2


def test_floor_is_the_slowest_writer() -> None:
    f = Frontier(5, {"a": 5, "b": 9})
    assert f.position == 5
    f.declare("a", 7)
    assert f.position == 7
    f.committed([8, 9, 11])
    assert f.position == 9  # 10 unknown


def test_announcement_round_trip_and_malformed() -> None:
    ann = Announcement("p1", [4, 5], 5, -2, "!r:x", ["$a", "$b"], state_changed=False)
    assert Announcement.from_json(ann.to_json()) == ann
    with pytest.raises(ValueError):
        Announcement.from_json({**ann.to_json(), "s": "no"})
    with pytest.raises(ValueError):
        Announcement.from_json({"w": "p1", "c": ["x"], "d": 1, "m": 0})
    with pytest.raises(ValueError):
        Announcement.from_json({"w": 3, "c": [], "d": 1, "m": 0})


@pytest.fixture
async def db(pg_url: str) -> AsyncIterator[Database]:
    database = await PostgresDatabase.open(pg_url)
    await migrate(database)
    try:
        yield database
    finally:
        await database.close()


async def _loaded(db: Database, name: str) -> MultiWriterPositions:
    positions = MultiWriterPositions(name, db, ["a", "b", "reader"])
    async with db.snapshot() as txn:
        await positions.load(txn)
    return positions


async def test_reader_does_not_pass_a_writer_in_flight(db: Database) -> None:
    a, b, reader = await _loaded(db, "a"), await _loaded(db, "b"), await _loaded(db, "reader")
    heard: list[Announcement] = []
    for p in (a, b):
        p.announce = heard.append

    # a takes position 1 and holds its transaction open; b takes 2 and commits.
    async with a.settle(), db.transaction() as txn_a:
        (first,), _ = await a.allocate(txn_a, 1, 0)
        async with b.settle(), db.transaction() as txn_b:
            (second,), _ = await b.allocate(txn_b, 1, 0)
        assert second > first
        for ann in heard:
            reader.on_announcement(ann)
            a.on_announcement(ann)
        heard.clear()
        # b's commit is known, but a's position below it is not committed: nobody hands out `second`.
        assert reader.max_committed < first
        assert a.max_committed < first
    for ann in heard:
        reader.on_announcement(ann)
        b.on_announcement(ann)
    assert reader.max_committed == second
    assert b.max_committed == second


async def test_failed_transaction_is_crossed_and_a_fresh_reader_starts_there(db: Database) -> None:
    a, b, reader = await _loaded(db, "a"), await _loaded(db, "b"), await _loaded(db, "reader")
    heard: list[Announcement] = []
    a.announce = b.announce = heard.append

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with a.settle(), db.transaction() as txn:
            await a.allocate(txn, 1, 0)
            raise Boom
    async with b.settle(), db.transaction() as txn:
        (pos,), _ = await b.allocate(txn, 1, 0)
    for ann in heard:
        reader.on_announcement(ann)
        a.on_announcement(ann)
    assert reader.max_committed == pos  # a declared past its abandoned position when it rolled back

    # A reader starting now reads the writers' rows: once a's heartbeat has stored what it declared
    # since (it heard b's commit), the new reader starts at the same place.
    assert a.declare_if_idle() is not None
    await a.store_declaration()
    late = await _loaded(db, "reader")
    assert late.max_committed == pos


async def test_idle_writer_heartbeat_moves_the_floor(db: Database) -> None:
    a, b = await _loaded(db, "a"), await _loaded(db, "b")
    async with b.settle(), db.transaction() as txn:
        (pos,), _ = await b.allocate(txn, 1, 0)
    assert a.declare_if_idle() is None  # a has seen nothing new
    a.on_announcement(Announcement("b", [pos], pos, 0))
    beat = a.declare_if_idle()
    assert beat is not None and beat.declared == pos


async def test_the_others_forget_what_a_commit_changed_before_their_position_moves(db: Database) -> None:
    a, reader = await _loaded(db, "a"), await _loaded(db, "reader")
    forgotten: list[tuple[str, list[str], bool, int]] = []
    reader.forget = lambda room, ids, state: forgotten.append((room, ids, state, reader.max_committed))
    heard: list[Announcement] = []
    a.announce = heard.append
    async with a.settle(), db.transaction() as txn:
        (pos,), _ = await a.allocate(txn, 1, 0)
        a.touched("!room:x", ["$message"], state_changed=False)
    for ann in heard:
        reader.on_announcement(ann)
    # Forgotten while the reader still stood before the new position; the room's state kept (unchanged).
    assert forgotten == [("!room:x", ["$message"], False, pos - 1)]
    assert reader.max_committed == pos


async def test_a_dead_writers_hole_is_declared_for_and_a_live_ones_is_not(db: Database, pg_url: str) -> None:
    a, b, reader = await _loaded(db, "a"), await _loaded(db, "b"), await _loaded(db, "reader")
    a_lock = WriterLiveness(pg_url, a)
    await a_lock.start()
    watcher = WriterLiveness(pg_url, reader, stall=0.0, grace=0.05)
    await watcher.start()
    heard: list[Announcement] = []
    b.announce = reader.announce = heard.append
    try:
        # a takes a position and holds its transaction open; b commits the next one.
        holding = db.transaction()
        txn = await holding.__aenter__()
        (hole,), _ = await a.allocate(txn, 1, 0)
        async with b.settle(), db.transaction() as txn_b:
            (after,), _ = await b.allocate(txn_b, 1, 0)
        for ann in heard:
            reader.on_announcement(ann)

        async def heartbeat() -> None:  # what positions.heartbeat does each second
            reader.declare_if_idle()
            await watcher.check()

        for _ in range(3):
            await heartbeat()
        # a is alive (it holds its lock): its hole is waited for.
        assert reader.max_committed == hole - 1
        assert watcher.declared_for == []

        # a dies: its transaction rolls back and PostgreSQL releases its lock.
        await holding.__aexit__(RuntimeError, RuntimeError("killed"), None)
        await a_lock.stop()
        await heartbeat()
        assert watcher.declared_for == [("a", after)]
        assert reader.max_committed == after
        # The others hear the declaration; a restarted a starts above it.
        assert any(ann.writer == "a" and ann.declared == after for ann in heard)
        restarted = await _loaded(db, "a")
        async with restarted.settle(), db.transaction() as txn_r:
            (again,), _ = await restarted.allocate(txn_r, 1, 0)
        assert again > after
    finally:
        await watcher.stop()
        await a_lock.stop()
