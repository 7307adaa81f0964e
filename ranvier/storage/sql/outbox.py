"""The durable per-destination federation queue (PDUs and EDUs) and per-destination retry state.

A PDU is enqueued in the same transaction that persists it (``enqueue_pdus_txn``), so an event that is
committed is always either queued or already delivered: a crash can delay a send but never lose one.
Rows are deleted only by ``ack`` after the destination accepted the transaction carrying them.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from .aux_streams import dump_json, load_json, next_stream_pos
from .engine import Database, Txn, chunks, in_list

STREAM = "outbox"


@dataclass(frozen=True, slots=True)
class QueuedPdu:
    seq: int
    event_id: str
    room_id: str
    stream_ordering: int | None


@dataclass(frozen=True, slots=True)
class QueuedEdu:
    seq: int
    edu_type: str
    content: dict[str, Any]


@dataclass(frozen=True, slots=True)
class OutboxBatch:
    """The oldest queued items for one destination; send them as one transaction, then ``ack`` it."""

    destination: str
    pdus: list[QueuedPdu] = field(default_factory=list)
    edus: list[QueuedEdu] = field(default_factory=list)

    @property
    def pdu_ids(self) -> list[int]:
        return [p.seq for p in self.pdus]

    @property
    def event_ids(self) -> list[str]:
        return [p.event_id for p in self.pdus]

    @property
    def edu_ids(self) -> list[int]:
        return [e.seq for e in self.edus]

    def is_empty(self) -> bool:
        return not self.pdus and not self.edus


@dataclass(frozen=True, slots=True)
class RetryState:
    retry_last_ts: int
    retry_interval: int
    failure_count: int
    # When the failure streak began (stored on its first failure; what a writer passes here is ignored).
    failure_ts: int | None = None


class OutboxStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def enqueue_pdus_txn(
        self,
        txn: Txn,
        destinations: Iterable[str],
        event_id: str,
        room_id: str,
        stream_ordering: int | None = None,
    ) -> None:
        """Queue ``event_id`` for each destination, inside the caller's transaction (the event persister's).

        Queueing the same event twice for a destination is a no-op, so retried persists are harmless."""
        dests = sorted(set(destinations))
        if not dests:
            return
        # One block of positions for all rows keeps every destination's queue in commit order.
        last = await next_stream_pos(txn, STREAM, len(dests))
        first = last - len(dests) + 1
        rows = [(dest, first + i, event_id, room_id, stream_ordering) for i, dest in enumerate(dests)]
        await txn.executemany(
            "INSERT INTO outbox_pdus (destination, seq, event_id, room_id, stream_ordering)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            rows,
        )

    async def enqueue_pdus(
        self, destinations: Iterable[str], event_id: str, room_id: str, stream_ordering: int | None = None
    ) -> None:
        async with self._db.transaction() as txn:
            await self.enqueue_pdus_txn(txn, destinations, event_id, room_id, stream_ordering)

    async def enqueue_edu_txn(
        self,
        txn: Txn,
        destinations: Iterable[str],
        edu_type: str,
        content: dict[str, Any],
        coalesce_key: str | None = None,
    ) -> None:
        """Queue an EDU. With ``coalesce_key``, a still-queued EDU of the same type and key is replaced
        (e.g. typing state of one user in one room: only the latest matters)."""
        text = dump_json(content)
        for dest in sorted(set(destinations)):
            if coalesce_key is not None:
                await txn.execute(
                    "DELETE FROM outbox_edus WHERE destination = ? AND edu_type = ? AND coalesce_key = ?",
                    (dest, edu_type, coalesce_key),
                )
            await txn.execute(
                "INSERT INTO outbox_edus (destination, seq, edu_type, content, coalesce_key)"
                " VALUES (?, ?, ?, ?, ?)",
                (dest, await next_stream_pos(txn, STREAM), edu_type, text, coalesce_key),
            )

    async def enqueue_edu(
        self,
        destinations: Iterable[str],
        edu_type: str,
        content: dict[str, Any],
        coalesce_key: str | None = None,
    ) -> None:
        async with self._db.transaction() as txn:
            await self.enqueue_edu_txn(txn, destinations, edu_type, content, coalesce_key)

    async def next_batch(self, destination: str, max_pdus: int = 50, max_edus: int = 100) -> OutboxBatch:
        """The oldest queued PDUs and EDUs (limits as in the S2S transaction: 50 PDUs, 100 EDUs)."""
        async with self._db.snapshot() as txn:
            pdu_rows = await txn.fetchall(
                "SELECT seq, event_id, room_id, stream_ordering FROM outbox_pdus WHERE destination = ?"
                " ORDER BY seq LIMIT ?",
                (destination, max_pdus),
            )
            edu_rows = await txn.fetchall(
                "SELECT seq, edu_type, content FROM outbox_edus WHERE destination = ? ORDER BY seq LIMIT ?",
                (destination, max_edus),
            )
        return OutboxBatch(
            destination,
            [QueuedPdu(int(r[0]), r[1], r[2], None if r[3] is None else int(r[3])) for r in pdu_rows],
            [QueuedEdu(int(r[0]), r[1], load_json(r[2])) for r in edu_rows],
        )

    async def ack(self, destination: str, pdu_ids: Collection[int], edu_ids: Collection[int] = ()) -> None:
        """Forget items the destination has accepted (``batch.pdu_ids``, ``batch.edu_ids``)."""
        async with self._db.transaction() as txn:
            for table, ids in (("outbox_pdus", pdu_ids), ("outbox_edus", edu_ids)):
                for chunk in chunks(sorted(ids)):
                    await txn.execute(
                        f"DELETE FROM {table} WHERE destination = ? AND seq IN ({in_list(len(chunk))})",
                        (destination, *chunk),
                    )

    async def ack_batch(self, batch: OutboxBatch) -> None:
        """Forget what the destination accepted, and remember the newest of its PDUs (by stream ordering)
        as the destination's last successful position, in one transaction."""
        newest = max((p.stream_ordering for p in batch.pdus if p.stream_ordering is not None), default=None)
        async with self._db.transaction() as txn:
            for table, ids in (("outbox_pdus", batch.pdu_ids), ("outbox_edus", batch.edu_ids)):
                for chunk in chunks(sorted(ids)):
                    await txn.execute(
                        f"DELETE FROM {table} WHERE destination = ? AND seq IN ({in_list(len(chunk))})",
                        (batch.destination, *chunk),
                    )
            if newest is None:
                return
            per_room: dict[str, int] = {}
            for p in batch.pdus:
                if p.stream_ordering is not None:
                    per_room[p.room_id] = max(p.stream_ordering, per_room.get(p.room_id, p.stream_ordering))
            for room_id, stream in sorted(per_room.items()):
                await txn.execute(
                    "INSERT INTO destination_room_progress (destination, room_id, stream_ordering)"
                    " VALUES (?, ?, ?) ON CONFLICT (destination, room_id) DO UPDATE SET"
                    " stream_ordering = excluded.stream_ordering"
                    " WHERE excluded.stream_ordering > destination_room_progress.stream_ordering",
                    (batch.destination, room_id, stream),
                )
            known = await txn.fetchval(
                "SELECT last_successful_stream_ordering FROM destination_progress WHERE destination = ?",
                (batch.destination,),
            )
            if known is not None and int(known) >= newest:
                return
            await txn.execute(
                "INSERT INTO destination_progress"
                " (destination, last_successful_stream_ordering, last_success_ts)"
                " VALUES (?, ?, ?) ON CONFLICT (destination) DO UPDATE SET"
                " last_successful_stream_ordering = excluded.last_successful_stream_ordering,"
                " last_success_ts = excluded.last_success_ts",
                (batch.destination, newest, int(time.time() * 1000)),
            )

    async def room_progress(self, destination: str) -> dict[str, int]:
        """Room id -> the stream ordering of the newest of our events in it the destination acknowledged."""
        rows = await self._db.fetchall(
            "SELECT room_id, stream_ordering FROM destination_room_progress WHERE destination = ?",
            (destination,),
        )
        return {r[0]: int(r[1]) for r in rows}

    async def last_successful(self) -> dict[str, int]:
        """Destination -> the stream ordering of the newest PDU it acknowledged."""
        rows = await self._db.fetchall(
            "SELECT destination, last_successful_stream_ordering FROM destination_progress"
        )
        return {r[0]: int(r[1]) for r in rows}

    async def drop_destination(self, destination: str) -> None:
        """Discard everything queued for a destination (e.g. it left all our rooms)."""
        async with self._db.transaction() as txn:
            await txn.execute("DELETE FROM outbox_pdus WHERE destination = ?", (destination,))
            await txn.execute("DELETE FROM outbox_edus WHERE destination = ?", (destination,))

    async def pending_count(self, destination: str) -> int:
        async with self._db.snapshot() as txn:
            p = await txn.fetchval("SELECT COUNT(*) FROM outbox_pdus WHERE destination = ?", (destination,))
            e = await txn.fetchval("SELECT COUNT(*) FROM outbox_edus WHERE destination = ?", (destination,))
        return int(p or 0) + int(e or 0)

    async def room_backlogs(self, destination: str) -> dict[str, int]:
        """How many PDUs are queued for ``destination``, per room."""
        rows = await self._db.fetchall(
            "SELECT room_id, COUNT(*) FROM outbox_pdus WHERE destination = ? GROUP BY room_id", (destination,)
        )
        return {r[0]: int(r[1]) for r in rows}

    async def pending_counts(self) -> dict[str, tuple[int, int]]:
        """(queued PDUs, queued EDUs) of every destination that has something queued."""
        out: dict[str, tuple[int, int]] = {}
        async with self._db.snapshot() as txn:
            for r in await txn.fetchall("SELECT destination, COUNT(*) FROM outbox_pdus GROUP BY destination"):
                out[r[0]] = (int(r[1]), 0)
            for r in await txn.fetchall("SELECT destination, COUNT(*) FROM outbox_edus GROUP BY destination"):
                out[r[0]] = (out.get(r[0], (0, 0))[0], int(r[1]))
        return out

    async def destinations_with_pending(self) -> list[str]:
        rows = await self._db.fetchall(
            "SELECT destination FROM outbox_pdus UNION SELECT destination FROM outbox_edus ORDER BY 1"
        )
        return [r[0] for r in rows]

    # -- retry state ---------------------------------------------------------------------------------------

    async def get_retry(self, destination: str) -> RetryState | None:
        """None when the destination is healthy (no failure since the last success)."""
        row = await self._db.fetchone(
            "SELECT retry_last_ts, retry_interval, failure_count, failure_ts FROM destination_retry"
            " WHERE destination = ?",
            (destination,),
        )
        return _retry_state(row[0:]) if row is not None else None

    async def get_all_retries(self) -> dict[str, RetryState]:
        rows = await self._db.fetchall(
            "SELECT destination, retry_last_ts, retry_interval, failure_count, failure_ts"
            " FROM destination_retry"
        )
        return {r[0]: _retry_state(r[1:]) for r in rows}

    async def set_retry(self, destination: str, state: RetryState) -> None:
        async with self._db.transaction() as txn:
            await txn.execute(
                "INSERT INTO destination_retry"
                " (destination, retry_last_ts, retry_interval, failure_count, failure_ts)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (destination) DO UPDATE SET"
                " retry_last_ts = excluded.retry_last_ts, retry_interval = excluded.retry_interval,"
                " failure_count = excluded.failure_count,"
                " failure_ts = COALESCE(destination_retry.failure_ts, excluded.failure_ts)",
                (
                    destination,
                    state.retry_last_ts,
                    state.retry_interval,
                    state.failure_count,
                    state.retry_last_ts,
                ),
            )

    async def reset_retry(self, destination: str) -> None:
        async with self._db.transaction() as txn:
            await txn.execute("DELETE FROM destination_retry WHERE destination = ?", (destination,))


def _retry_state(row: Any) -> RetryState:
    return RetryState(int(row[0]), int(row[1]), int(row[2]), None if row[3] is None else int(row[3]))
