"""PDUs waiting to be tried again through the intake (``rooms.deferred_pdus``): one row per event id."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .aux_streams import dump_json, load_json
from .engine import Database


@dataclass(frozen=True, slots=True)
class DeferredPdu:
    event_id: str
    room_id: str
    origin: str
    pdu: dict[str, Any]
    tries: int  # tries made since it was refused
    next_try_ts: int  # ms since the epoch


class DeferredPduStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(
        self, event_id: str, room_id: str, origin: str, pdu: dict[str, Any], next_try_ts: int, max_rows: int
    ) -> bool:
        """Keep a PDU (as received) to try at ``next_try_ts``. False when ``max_rows`` are waiting already
        or the event is waiting already (its schedule is left as it is)."""
        async with self._db.transaction() as txn:
            waiting = int(await txn.fetchval("SELECT COUNT(*) FROM deferred_pdus"))
            if waiting >= max_rows:
                return False
            held = await txn.fetchval("SELECT 1 FROM deferred_pdus WHERE event_id = ?", (event_id,))
            if held is not None:
                return False
            await txn.execute(
                "INSERT INTO deferred_pdus (event_id, room_id, origin, pdu_json, tries, next_try_ts)"
                " VALUES (?, ?, ?, ?, 0, ?) ON CONFLICT (event_id) DO NOTHING",
                (event_id, room_id, origin, dump_json(pdu), next_try_ts),
            )
        return True

    async def due(self, now_ts: int, limit: int = 100) -> list[DeferredPdu]:
        """Those whose time has come, earliest first."""
        rows = await self._db.fetchall(
            "SELECT event_id, room_id, origin, pdu_json, tries, next_try_ts FROM deferred_pdus"
            " WHERE next_try_ts <= ? ORDER BY next_try_ts, event_id LIMIT ?",
            (now_ts, limit),
        )
        return [DeferredPdu(r[0], r[1], r[2], load_json(r[3]), int(r[4]), int(r[5])) for r in rows]

    async def next_try_ts(self) -> int | None:
        """When the earliest waiting PDU is due (None: nothing waits)."""
        value = await self._db.fetchval("SELECT MIN(next_try_ts) FROM deferred_pdus")
        return None if value is None else int(value)

    async def reschedule(self, event_id: str, tries: int, next_try_ts: int) -> None:
        async with self._db.transaction() as txn:
            await txn.execute(
                "UPDATE deferred_pdus SET tries = ?, next_try_ts = ? WHERE event_id = ?",
                (tries, next_try_ts, event_id),
            )

    async def delete(self, event_id: str) -> None:
        async with self._db.transaction() as txn:
            await txn.execute("DELETE FROM deferred_pdus WHERE event_id = ?", (event_id,))

    async def count(self) -> int:
        return int(await self._db.fetchval("SELECT COUNT(*) FROM deferred_pdus"))
