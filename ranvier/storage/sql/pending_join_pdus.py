"""PDUs that arrived for a room while our join to it was in progress, kept durably in arrival order.

Once the join completes, the room layer replays them through the normal intake and deletes them, so
events sent to us during a (possibly long) join are not lost even across a restart.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from ...clock import now_ms
from .aux_streams import dump_json, load_json, next_stream_pos
from .engine import Database, chunks, in_list

STREAM = "pending_join_pdus"


@dataclass(frozen=True, slots=True)
class PendingPdu:
    seq: int
    room_id: str
    origin: str
    pdu: dict[str, Any]
    received_ts: int


class PendingJoinPduStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def append(self, room_id: str, origin: str, pdu: dict[str, Any]) -> int:
        """Store a PDU (as received, JSON object) and return its arrival sequence number."""
        async with self._db.transaction() as txn:
            seq = await next_stream_pos(txn, STREAM)
            await txn.execute(
                "INSERT INTO pending_join_pdus (seq, room_id, origin, pdu_json, received_ts)"
                " VALUES (?, ?, ?, ?, ?)",
                (seq, room_id, origin, dump_json(pdu), now_ms()),
            )
        return seq

    async def list_for_room(self, room_id: str, limit: int | None = None) -> list[PendingPdu]:
        """The room's pending PDUs, oldest first."""
        sql = (
            "SELECT seq, room_id, origin, pdu_json, received_ts FROM pending_join_pdus WHERE room_id = ?"
            " ORDER BY seq"
        )
        params: tuple[Any, ...] = (room_id,)
        if limit is not None:
            sql += " LIMIT ?"
            params = (room_id, limit)
        rows = await self._db.fetchall(sql, params)
        return [PendingPdu(int(r[0]), r[1], r[2], load_json(r[3]), int(r[4])) for r in rows]

    async def delete(self, room_id: str, seqs: Collection[int]) -> None:
        async with self._db.transaction() as txn:
            for chunk in chunks(sorted(seqs)):
                await txn.execute(
                    f"DELETE FROM pending_join_pdus WHERE room_id = ? AND seq IN ({in_list(len(chunk))})",
                    (room_id, *chunk),
                )

    async def delete_room(self, room_id: str) -> None:
        async with self._db.transaction() as txn:
            await txn.execute("DELETE FROM pending_join_pdus WHERE room_id = ?", (room_id,))

    async def count_for_room(self, room_id: str) -> int:
        """For capping what one room may buffer while a join is in progress."""
        return int(
            await self._db.fetchval("SELECT COUNT(*) FROM pending_join_pdus WHERE room_id = ?", (room_id,))
        )

    async def rooms_with_pending(self) -> list[str]:
        rows = await self._db.fetchall("SELECT DISTINCT room_id FROM pending_join_pdus ORDER BY room_id")
        return [r[0] for r in rows]
