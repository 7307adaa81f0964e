"""The event stream's position when several processes write it (the multi-writer case).

Writers take stream orderings from a PostgreSQL sequence, so positions are unique but commit out of
order: writer A may commit 102 while writer B still holds 101 in an open transaction. A reader that
handed out a token at 102 would then skip 101 for good. The rule here (the minimum of Synapse's
MultiWriterIdGenerator that is still correct):

* every writer *declares* a position: "every ordering I allocated up to here is committed or abandoned".
  After a commit with nothing else in flight that is the highest position it has seen anywhere: whatever
  it allocates later comes from the sequence, above everything already handed out. A writer declares
  with each commit, on a heartbeat while idle (``declare_if_idle``), and at start (the sequence's last
  value: what a previous life of the process left in flight is dead);
* a reader's frontier (the position it hands out) is the largest P such that every position up to P is
  known committed or abandoned: either all known writers declared at least P (the floor), or the
  positions between the floor and P were each reported committed (contiguity).

A writer that dies with a transaction open holds the frontier below its lost position until it starts
again and declares; the other writers' events are stored meanwhile and appear when it does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from ..storage.sql.engine import Database, Txn
from ..storage.sql.stream import StreamPositions

logger = logging.getLogger(__name__)


class Liveness(Protocol):
    async def check(self) -> None: ...


EVENTS = "events"


class WriterFenced(RuntimeError):
    """This process lost its writer lock: another may be declaring past its positions."""


class ForeignRoomWrite(RuntimeError):
    """This process was about to persist events of a room another process persists (single-writer)."""


class Frontier:
    """A reader's view of one multi-writer stream: pure bookkeeping, no I/O."""

    def __init__(self, start: int, declared: dict[str, int] | None = None) -> None:
        self.position = start
        self.declared: dict[str, int] = dict(declared or {})
        self._done: set[int] = set()

    def committed(self, positions: Iterable[int]) -> bool:
        """Positions reported committed (or abandoned); True when the frontier moved."""
        self._done.update(p for p in positions if p > self.position)
        return self._advance()

    def declare(self, writer: str, position: int) -> bool:
        if position > self.declared.get(writer, -1):
            self.declared[writer] = position
        return self._advance()

    def pending(self) -> bool:
        """Positions beyond the frontier are known done: something before them is still missing."""
        return bool(self._done)

    def floor(self) -> int:
        return min(self.declared.values()) if self.declared else self.position

    def _advance(self) -> bool:
        before = self.position
        floor = self.floor()
        if floor > self.position:
            self.position = floor
            self._done = {p for p in self._done if p > floor}
        while self.position + 1 in self._done:
            self.position += 1
            self._done.discard(self.position)
        return self.position != before


@dataclass
class Announcement:
    """What a writer tells the others after a commit (or an abandoned transaction)."""

    writer: str
    committed: list[int]
    declared: int
    min_stream: int
    # The room of the batch and the events whose cached form the others must forget before they move on.
    room_id: str | None = None
    touched: list[str] = field(default_factory=list)
    # Whether the room's current state changed (only then do the others drop their cached copy).
    state_changed: bool = True

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "w": self.writer,
            "c": self.committed,
            "d": self.declared,
            "m": self.min_stream,
        }
        if self.room_id is not None:
            out["r"], out["t"], out["s"] = self.room_id, self.touched, self.state_changed
        return out

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Announcement:
        committed = data.get("c")
        writer, declared, min_stream = data.get("w"), data.get("d"), data.get("m")
        if (
            not isinstance(writer, str)
            or not isinstance(declared, int)
            or not isinstance(min_stream, int)
            or not isinstance(committed, list)
            or not all(isinstance(p, int) for p in committed)
        ):
            raise ValueError("malformed stream announcement")
        room_id, touched = data.get("r"), data.get("t", [])
        if room_id is not None and not isinstance(room_id, str):
            raise ValueError("malformed stream announcement")
        if not isinstance(touched, list) or not all(isinstance(e, str) for e in touched):
            raise ValueError("malformed stream announcement")
        state_changed = data.get("s", True)
        if not isinstance(state_changed, bool):
            raise ValueError("malformed stream announcement")
        return cls(writer, committed, declared, min_stream, room_id, touched, state_changed)


class MultiWriterPositions(StreamPositions):
    """``StreamPositions`` for a process among several writers of the event stream.

    ``max_committed`` is the frontier (see the module docstring); this process's own commits and the
    announcements of the others (``on_announcement``, from the bus) move it. Allocation goes through
    ``allocate`` (the persister's hook) and ``finished`` after the transaction."""

    def __init__(self, instance: str, db: Database, writers: Iterable[str]) -> None:
        super().__init__()
        self.instance = instance
        # Rows of instances no longer in the config are ignored (they would hold the floor down forever).
        self.writers = set(writers) | {instance}
        self._db = db
        self.frontier = Frontier(0)
        # Highest position seen anywhere (allocated here or announced by others).
        self.max_seen = 0
        self._in_flight: set[int] = set()
        self._allocating = 0
        self._declared = 0
        # The declaration last written to this writer's row (``store_declaration``).
        self._stored = 0
        # Set while this process does not hold its writer lock (liveness.py): it must not allocate.
        self.fenced = False
        # What the current persist transaction allocated (the persister's lock keeps one at a time).
        self._batch: tuple[list[int], list[int]] = ([], [])
        self._batch_room: str | None = None
        self._batch_touched: list[str] = []
        self._batch_state_changed = True
        # Set by the app: drop cached state and events of a room another process wrote (before the
        # position moves, so a woken reader cannot read them stale from the cache).
        self.forget: Callable[[str, list[str], bool], None] | None = None
        # Set by the app: sends an announcement to the other processes (the bus).
        self.announce: Callable[[Announcement], None] | None = None
        # Set by the runtime: whether this process persists a room (RolePlan.owns_room). A batch of another
        # room is counted (and logged once); with ``refuse_foreign`` its transaction is rolled back.
        self.owns: Callable[[str], bool] | None = None
        self.refuse_foreign = False
        self.foreign_writes: Counter[str] = Counter()
        # Transactions refused because another process had declared past their positions.
        self.fenced_commits = 0

    async def load(self, txn: Txn) -> None:
        await super().load(txn)  # min_committed; max_committed is replaced below
        # Writes, so in a transaction of their own (``txn`` is a read-only snapshot).
        async with self._db.transaction() as wtxn:
            # The sequences fall behind the table only after the database was written by one process.
            for seq, bound in (
                ("events_stream_seq", "SELECT COALESCE(MAX(stream_ordering), 0) FROM events"),
                ("events_backfill_seq", "SELECT COALESCE(-MIN(stream_ordering), 0) FROM events"),
            ):
                last = int(await wtxn.fetchval(f"SELECT last_value FROM {seq}"))
                high = int(await wtxn.fetchval(bound))
                if last < high:
                    await wtxn.fetchval(f"SELECT setval('{seq}', ?)", (high,))
            # A fresh start: whatever a previous life of this process left in flight is dead, so
            # everything up to the sequence's current value is done as far as this writer is concerned.
            start = int(await wtxn.fetchval("SELECT last_value FROM events_stream_seq"))
            await _upsert_declared(wtxn, self.instance, start)
        async with self._db.snapshot() as rtxn:
            rows = await rtxn.fetchall(
                "SELECT instance, position FROM stream_writer_positions WHERE stream = ?", (EVENTS,)
            )
            declared = {str(r[0]): int(r[1]) for r in rows if str(r[0]) in self.writers}
            floor = min(declared.values())
            # Between the slowest writer's declaration and now, what is committed is in the table.
            done = await rtxn.fetchall(
                "SELECT stream_ordering FROM events WHERE stream_ordering > ?", (floor,)
            )
        self.frontier = Frontier(floor, declared)
        self.frontier.committed(int(r[0]) for r in done)
        self.max_committed = self.frontier.position
        self.max_seen = max(start, self.max_committed)
        self._declared = self._stored = start

    async def reload(self, txn: Txn) -> None:
        """After messages were lost (the bus reconnected): the writers' rows and what was committed past
        the frontier, from the database."""
        rows = await txn.fetchall(
            "SELECT instance, position FROM stream_writer_positions WHERE stream = ?", (EVENTS,)
        )
        for instance, position in rows:
            if str(instance) in self.writers and str(instance) != self.instance:
                self.frontier.declare(str(instance), int(position))
        done = await txn.fetchall(
            "SELECT stream_ordering FROM events WHERE stream_ordering > ?", (self.frontier.position,)
        )
        committed = [int(r[0]) for r in done]
        self.max_seen = max([self.max_seen, *committed])
        self._moved(committed)

    # -- the writer side -----------------------------------------------------------------------------

    async def allocate(self, txn: Txn, forward: int, backward: int) -> tuple[list[int], list[int]]:
        """``forward`` new live positions and ``backward`` backfill (negative) ones, from the sequences."""
        if self.fenced:
            raise WriterFenced(f"{self.instance} does not hold its writer lock")
        self._allocating += 1
        try:
            fwd = await _nextvals(txn, "events_stream_seq", forward)
            back = [-p for p in await _nextvals(txn, "events_backfill_seq", backward)]
            self._in_flight.update(fwd)
            self._batch[0].extend(fwd)
            self._batch[1].extend(back)
            if fwd:
                self.max_seen = max(self.max_seen, *fwd)
                # Another process declares for this writer only once it took the writer's lock (it was
                # lost: liveness.py), and then up to the sequence's value, which may be past ``fwd``:
                # committing them now would put events below a position readers already passed. The row
                # is read under a row lock held to the commit, so a declaration either came first (seen
                # here: refuse) or waits for this transaction to end (our events are committed by then).
                # This writer's own row is always below what it allocates next (see _own_declaration).
                row = await txn.fetchval(
                    "SELECT position FROM stream_writer_positions WHERE stream = ? AND instance = ?"
                    " FOR UPDATE",
                    (EVENTS, self.instance),
                )
                if row is not None and int(row) >= min(fwd):
                    self.fenced_commits += 1
                    raise WriterFenced(
                        f"{self.instance}: another process declared position {row} for it, past {min(fwd)}"
                    )
                # A starting reader begins at the slowest writer's row: this one, after this commit, has
                # everything it allocated done.
                await _upsert_declared(txn, self.instance, max(fwd))
            return fwd, back
        finally:
            self._allocating -= 1

    @contextlib.asynccontextmanager
    async def settle(self) -> AsyncIterator[None]:
        """Around the persist transaction: report its positions committed, or abandoned if it failed."""
        self._batch = ([], [])
        self._batch_room, self._batch_touched, self._batch_state_changed = None, [], True
        ok = False
        try:
            yield
            ok = True
        finally:
            fwd, back = self._batch
            room_id, touched, state_changed = self._batch_room, self._batch_touched, self._batch_state_changed
            self._batch = ([], [])
            self._batch_room, self._batch_touched, self._batch_state_changed = None, [], True
            self.finished(
                fwd,
                back,
                committed=ok,
                room_id=room_id if ok else None,
                touched=touched,
                state_changed=state_changed,
            )

    def touched(self, room_id: str, event_ids: list[str], state_changed: bool = True) -> None:
        """Inside the persist transaction (before its commit): the batch's room and what changed."""
        if self.owns is not None and not self.owns(room_id):
            # Every room has one writer (its persister): reaching here is a path that was not handed over.
            self.foreign_writes[room_id] += 1
            if self.refuse_foreign:
                raise ForeignRoomWrite(f"{self.instance} does not persist {room_id}")
            if self.foreign_writes[room_id] == 1:
                logger.error("%s persisted events of %s, which another process owns", self.instance, room_id)
        self._batch_room, self._batch_touched = room_id, event_ids
        self._batch_state_changed = state_changed

    def finished(
        self,
        forward: list[int],
        backward: list[int],
        committed: bool,
        room_id: str | None = None,
        touched: list[str] | None = None,
        state_changed: bool = True,
    ) -> None:
        """The transaction that held these positions committed (or rolled back: they stay unused)."""
        self._in_flight.difference_update(forward)
        if committed and forward:
            self._stored = max(self._stored, *forward)  # the transaction wrote it to the row
        if committed and backward:
            self.min_committed = min(self.min_committed, *backward)
        self._declared = self._own_declaration()
        self.frontier.declare(self.instance, self._declared)
        self._moved(forward)
        if self.announce is not None:
            self.announce(
                Announcement(
                    self.instance,
                    forward,
                    self._declared,
                    self.min_committed,
                    room_id,
                    touched or [],
                    state_changed,
                )
            )

    def _own_declaration(self) -> int:
        if self._allocating:
            # A nextval under way may return less than a position announced since it was sent.
            return self._declared
        if self._in_flight:
            # Each was allocated above what was declared then.
            return min(self._in_flight) - 1
        # Nothing in flight: what is allocated next comes from the sequence, above all seen so far.
        return self.max_seen

    def declare_if_idle(self) -> Announcement | None:
        """The heartbeat: an idle writer behind what it has seen declares again, so a stretch that only
        contiguity could not cross (a gap left by an abandoned transaction) is crossed."""
        if self._in_flight or self._allocating or self.max_seen <= self._declared:
            return None
        self._declared = self.max_seen
        self.frontier.declare(self.instance, self._declared)
        self._moved([])
        return Announcement(self.instance, [], self._declared, self.min_committed)

    async def store_declaration(self) -> None:
        declared = self._declared
        if declared <= self._stored:
            return
        async with self._db.transaction() as txn:
            await _upsert_declared(txn, self.instance, declared)
        self._stored = max(self._stored, declared)

    def declare_for(self, ann: Announcement) -> None:
        """A declaration on behalf of a dead writer (liveness.py): applied here and told to the others."""
        self.frontier.declare(ann.writer, ann.declared)
        self._moved([])
        if self.announce is not None:
            self.announce(ann)

    # -- the reader side -----------------------------------------------------------------------------

    def on_announcement(self, ann: Announcement) -> None:
        if ann.writer == self.instance or ann.writer not in self.writers:
            return
        if ann.room_id is not None and self.forget is not None:
            self.forget(ann.room_id, ann.touched, ann.state_changed)
        if ann.committed:
            self.max_seen = max(self.max_seen, *ann.committed)
        self.max_seen = max(self.max_seen, ann.declared)
        self.min_committed = min(self.min_committed, ann.min_stream)
        self.frontier.declare(ann.writer, ann.declared)
        self._moved(ann.committed)

    def _moved(self, committed: Iterable[int]) -> None:
        self.frontier.committed(committed)
        self.publish(self.frontier.position, self.min_committed)

    def publish(self, max_stream: int, min_stream: int) -> None:
        # The persister's own call (with in-memory counters) is replaced by ``finished``; this only ever
        # receives the frontier.
        super().publish(min(max_stream, self.frontier.position), min_stream)


async def _nextvals(txn: Txn, seq: str, n: int) -> list[int]:
    if n <= 0:
        return []
    rows = await txn.fetchall(f"SELECT nextval('{seq}') FROM generate_series(1, ?)", (n,))
    return sorted(int(r[0]) for r in rows)


async def _upsert_declared(txn: Txn, instance: str, position: int) -> None:
    await txn.execute(
        "INSERT INTO stream_writer_positions (stream, instance, position) VALUES (?, ?, ?)"
        " ON CONFLICT (stream, instance) DO UPDATE SET position ="
        " GREATEST(stream_writer_positions.position, EXCLUDED.position)",
        (EVENTS, instance, position),
    )


async def heartbeat(
    positions: MultiWriterPositions, period: float = 1.0, liveness: Liveness | None = None
) -> None:
    """Run forever: declare when idle and behind, and keep this writer's row up with its declaration, so
    that a starting reader starts near the head (and past positions this writer abandoned)."""
    while True:
        await asyncio.sleep(period)
        ann = positions.declare_if_idle()
        if ann is not None and positions.announce is not None:
            positions.announce(ann)
        try:
            await positions.store_declaration()
            if liveness is not None:
                await liveness.check()
        except Exception:
            logger.warning(
                "could not record the event stream position of %s", positions.instance, exc_info=True
            )
