"""How long the event stream stands still after a writer dies with a position in flight (status of issue 22:
"tokens stall ~5 s after a kill"). The cause was the liveness defaults: a hole was tried only after 3 s stuck,
then 2 s were slept for a COMMIT the dead writer might have sent. The writer's row lock (taken with its
positions, held to its commit) already makes the declaration wait for such a COMMIT, so the defaults are now
1 s and no sleep: with the real heartbeat (``positions.heartbeat``, every second) the hole is crossed within
about 1 s of the death once the hole is older than the stall. The COMMIT-in-flight case stays covered by
tests/workers/test_single_writer_positions.py (a declaration waits for an open transaction of the writer).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from ranvier.storage.sql.engine import Database, PostgresDatabase
from ranvier.storage.sql.migrate import migrate
from ranvier.workers.liveness import WriterLiveness
from ranvier.workers.positions import Announcement, MultiWriterPositions, heartbeat

# One heartbeat period (1 s) after the stall has run out, + room for a busy machine.
BOUND_S = 2.5


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


async def test_a_killed_writers_hole_is_crossed_within_two_heartbeats_with_the_defaults(
    db: Database, pg_url: str
) -> None:
    a, b, reader = await _loaded(db, "a"), await _loaded(db, "b"), await _loaded(db, "reader")
    a_lock = WriterLiveness(pg_url, a)
    await a_lock.start()
    watcher = WriterLiveness(pg_url, reader)  # the runtime's defaults
    await watcher.start()
    heard: list[Announcement] = []
    b.announce = heard.append
    beating: asyncio.Task[None] | None = None
    try:
        # a takes a position and holds its transaction open; b commits the next one: the reader waits.
        holding = db.transaction()
        txn = await holding.__aenter__()
        (hole,), _ = await a.allocate(txn, 1, 0)
        async with b.settle(), db.transaction() as txn_b:
            (after,), _ = await b.allocate(txn_b, 1, 0)
        for ann in heard:
            reader.on_announcement(ann)
        beating = asyncio.create_task(heartbeat(reader, liveness=watcher))
        await asyncio.sleep(1.5)  # longer than the stall: a live writer's hole is still waited for
        assert reader.max_committed == hole - 1
        assert watcher.declared_for == []

        # a dies: its transaction rolls back and PostgreSQL releases its lock.
        await holding.__aexit__(RuntimeError, RuntimeError("killed"), None)
        await a_lock.stop()
        died = time.monotonic()
        while reader.max_committed < after:
            assert time.monotonic() - died < 10, "the hole was never crossed"
            await asyncio.sleep(0.02)
        stalled = time.monotonic() - died
        print(f"the stream stood still {stalled:.2f} s after the writer died")
        assert watcher.declared_for == [("a", after)]
        # Was 4-5 s here (the 3 s stall counted from the first heartbeat that saw the hole, + the 2 s sleep).
        assert stalled <= BOUND_S, stalled
    finally:
        if beating is not None:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating
        await watcher.stop()
        await a_lock.stop()
