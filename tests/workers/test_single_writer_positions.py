"""A writer cut from its lock while a transaction is open never commits below a position declared for it.

When a writer's lock is taken by another process (liveness.py: the writer looks dead), that process
declares the sequence's value on its behalf and the readers pass it. A writer that was only stalled (its
lock connection dropped, a transaction still open past the grace) must then not commit what it allocated
below that declaration: readers would never hand it out (stored, missing from ``/sync``). Its transaction
reads its declaration row under a row lock (``MultiWriterPositions.allocate``): a declaration made first
is seen and the transaction rolls back; one made later waits for the transaction to end.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from ranvier.storage.sql.engine import Database, PostgresDatabase
from ranvier.storage.sql.migrate import migrate
from ranvier.workers.liveness import WriterLiveness
from ranvier.workers.positions import Announcement, MultiWriterPositions, WriterFenced


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


async def _waiting_on_a_lock(conn: asyncpg.Connection) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND datname = current_database())"
        )
    )


async def test_a_declaration_made_while_the_writer_stalls_is_seen_and_its_transaction_rolls_back(
    db: Database, pg_url: str
) -> None:
    a, reader = await _loaded(db, "a"), await _loaded(db, "reader")
    heard: list[Announcement] = []
    a.announce = heard.append
    declarer = await asyncpg.connect(pg_url)
    try:
        # Another process declares for a (as liveness.py does once it holds a's lock): its statement takes
        # a's row; a's transaction, which has its position already, stalls behind it.
        tx = declarer.transaction()
        await tx.start()
        await declarer.execute(
            "SELECT position FROM stream_writer_positions WHERE stream = 'events' AND instance = 'a'"
            " FOR UPDATE"
        )

        async def write() -> None:
            async with a.settle(), db.transaction() as txn:
                await a.allocate(txn, 1, 0)

        writing = asyncio.create_task(write())
        for _ in range(100):
            if await _waiting_on_a_lock(declarer):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the writer never waited for its row")
        declared = int(await declarer.fetchval("SELECT last_value FROM events_stream_seq"))
        await declarer.execute(
            "UPDATE stream_writer_positions SET position = GREATEST(position, $1)"
            " WHERE stream = 'events' AND instance = 'a'",
            declared,
        )
        await tx.commit()
        reader.on_announcement(Announcement("a", [], declared, 0))
        # The writer sees the declaration past what it allocated: nothing of it commits.
        with pytest.raises(WriterFenced):
            await asyncio.wait_for(writing, 10)
        assert a.fenced_commits == 1
        # What it took from the sequence is at or below the declaration, and abandoned.
        assert 0 < a.max_seen <= declared
        assert not a._in_flight
        reader.declare_if_idle()
        assert reader.max_committed == declared  # readers pass it, and nothing of a lands below
        async with db.snapshot() as txn:
            row = await txn.fetchval(
                "SELECT position FROM stream_writer_positions WHERE stream = 'events' AND instance = 'a'"
            )
        assert row == declared
    finally:
        await declarer.close()


async def test_a_declaration_waits_for_a_transaction_still_open_and_never_passes_it_uncommitted(
    db: Database, pg_url: str
) -> None:
    a, reader = await _loaded(db, "a"), await _loaded(db, "reader")
    # a holds no lock (cut from it): the watcher may declare for it, after a short grace.
    watcher = WriterLiveness(pg_url, reader, stall=0.0, grace=0.05)
    watcher.row_wait = 0.3
    await watcher.start()
    try:
        holding = db.transaction()
        txn = await holding.__aenter__()
        (position,), _ = await a.allocate(txn, 1, 0)
        # a's transaction is open and holds its row: the declaration gives up for now, the heartbeat goes on.
        await asyncio.wait_for(watcher._declare_if_dead("a"), 5)
        assert watcher.declared_for == []
        assert reader.max_committed < position
        await holding.__aexit__(None, None, None)
        a.finished([position], [], committed=True)
        await watcher._declare_if_dead("a")
        # Declared once the transaction ended (committed first: a reader passing it finds its rows).
        assert watcher.declared_for == [("a", position)]
        assert reader.frontier.declared["a"] == position
    finally:
        await watcher.stop()
