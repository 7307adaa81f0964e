"""Telling a dead writer from a slow one, so a process killed mid-transaction does not stall the stream.

A writer that dies with a position in flight leaves a hole the others may not pass (positions.py) until it
starts again and declares. The supervisor restarts it, but until then every ``/sync`` of the deployment
waits. This module lets the others declare on the dead writer's behalf, safely:

* every process holds a PostgreSQL advisory lock named after its instance for as long as it lives, on a
  connection of its own, taken before it allocates any position; PostgreSQL releases it when the process is
  gone;
* when the frontier has been stuck on a hole for ``stall`` seconds, a process tries the lock of each writer
  that has not declared past the hole. Getting it means that writer is dead, or cut from its lock: it
  cannot allocate again before it takes its lock back. So everything it allocated is at or below the
  sequence's current value, and the process declares that for it, then releases the lock. A transaction of
  the writer that is still open (a COMMIT a dying writer sent, or a live writer whose lock connection
  dropped) cannot land below the declaration: it holds the writer's row from its allocation to its commit,
  so the declaration waits for it, and one that allocated before the declaration but reaches its row after
  finds it overtaken and rolls back (``positions.allocate``). That row lock is what makes waiting for an
  in-flight COMMIT safe, so no fixed ``grace`` is slept by default (it was 2 s, on top of a 3 s ``stall``:
  the ~5 s during which every ``/sync`` token of the deployment stood still after a writer was killed
  mid-transaction); trying the lock of a live writer is one cheap query, so ``stall`` is 1 s.

A writer whose lock connection drops while it lives stops allocating (persists fail) until it holds its lock
again: otherwise another process could declare past a position it still writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from typing import Any

from .positions import EVENTS, Announcement, MultiWriterPositions

logger = logging.getLogger(__name__)


def lock_key(instance: str) -> int:
    """A stable 64-bit advisory lock key per instance name."""
    return int.from_bytes(
        hashlib.sha256(f"ranvier-writer:{instance}".encode()).digest()[:8], "big", signed=True
    )


class WriterLiveness:
    def __init__(
        self, dsn: str, positions: MultiWriterPositions, stall: float = 1.0, grace: float = 0.0
    ) -> None:
        self._dsn = dsn
        self._positions = positions
        self.stall = stall
        self.grace = grace
        self.row_wait = 5.0
        self._conn: Any = None
        self._reconnect: asyncio.Task[None] | None = None
        self._stopping = False
        self._stuck_at: int | None = None
        self._stuck_since = 0.0
        self.declared_for: list[tuple[str, int]] = []  # what this process declared for dead writers

    async def start(self) -> None:
        """Take this process's lock (waiting while another process is declaring for it)."""
        await self._acquire()

    async def _acquire(self) -> None:
        import asyncpg  # only PostgreSQL deployments get here (a single process never imports it)

        conn = await asyncpg.connect(self._dsn)
        key = lock_key(self._positions.instance)
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
            # Another process is declaring for us (a second or two), or runs under the same name.
            logger.warning("waiting for the writer lock of %s", self._positions.instance)
            await conn.execute("SELECT pg_advisory_lock($1)", key)
        conn.add_termination_listener(self._lost)
        self._conn = conn
        self._positions.fenced = False

    def _lost(self, _conn: Any) -> None:
        if self._stopping:
            return
        logger.error(
            "lost the writer lock of %s: persisting stops until it is held again", self._positions.instance
        )
        self._positions.fenced = True
        self._conn = None
        if self._reconnect is None or self._reconnect.done():
            self._reconnect = asyncio.create_task(self._reacquire(), name="writer lock")

    async def _reacquire(self) -> None:
        import asyncpg

        while not self._stopping:
            try:
                await self._acquire()
                logger.warning("holding the writer lock of %s again", self._positions.instance)
                return
            except (OSError, asyncpg.PostgresError) as e:
                logger.warning("could not take the writer lock back (%s), retrying", e)
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        self._stopping = True
        if self._reconnect is not None:
            self._reconnect.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnect
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None

    async def check(self) -> None:
        """Called every heartbeat: if the frontier has been stuck on a hole for ``stall`` seconds, declare
        for the writers holding it back that turn out to be dead."""
        frontier = self._positions.frontier
        now = time.monotonic()
        if not frontier.pending():
            self._stuck_at = None
            return
        if self._stuck_at != frontier.position:
            self._stuck_at, self._stuck_since = frontier.position, now
            return
        if now - self._stuck_since < self.stall or self._conn is None:
            return
        needed = frontier.position + 1
        behind = [w for w, d in frontier.declared.items() if d < needed and w != self._positions.instance]
        for writer in behind:
            await self._declare_if_dead(writer)

    async def _declare_if_dead(self, writer: str) -> None:
        import asyncpg

        conn, key = self._conn, lock_key(writer)
        if conn is None or not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
            return  # alive (or being declared for by another process)
        try:
            if self.grace > 0:
                await asyncio.sleep(self.grace)  # optional: the row lock below already waits for a COMMIT
            position = int(await conn.fetchval("SELECT last_value FROM events_stream_seq"))
            try:
                async with conn.transaction():
                    # A transaction of the writer still open holds its row (positions.allocate): the
                    # declaration waits for it to end, and a stalled one is tried again at the next check
                    # rather than holding this process's heartbeat.
                    await conn.execute(f"SET LOCAL lock_timeout = '{int(self.row_wait * 1000)}ms'")
                    await conn.execute(
                        "INSERT INTO stream_writer_positions (stream, instance, position) VALUES ($1, $2, $3)"
                        " ON CONFLICT (stream, instance) DO UPDATE SET position ="
                        " GREATEST(stream_writer_positions.position, EXCLUDED.position)",
                        EVENTS,
                        writer,
                        position,
                    )
            except asyncpg.LockNotAvailableError:
                logger.warning("%s has a transaction still open: not declaring for it yet", writer)
                return
            logger.warning("%s is gone: declared its event stream position %d for it", writer, position)
            self.declared_for.append((writer, position))
            ann = Announcement(writer, [], position, self._positions.min_committed)
            self._positions.declare_for(ann)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", key)
