"""Read receipts: (room, receipt type, user, thread) -> event id, with a stream position for /sync."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from .aux_streams import current_stream_pos, dump_json, load_json, next_stream_pos
from .engine import Database, chunks, in_list

STREAM = "receipts"
_UNTHREADED = ""


@dataclass(frozen=True, slots=True)
class Receipt:
    room_id: str
    receipt_type: str
    user_id: str
    event_id: str
    data: dict[str, Any]  # e.g. {"ts": ...}; thread_id is put back in here when set
    thread_id: str | None
    stream_pos: int


def _receipt(row: tuple[Any, ...]) -> Receipt:
    thread = row[4] or None
    return Receipt(row[0], row[1], row[2], row[3], load_json(row[5]), thread, int(row[6]))


_COLUMNS = "room_id, receipt_type, user_id, event_id, thread_id, data, stream_pos"


class ReceiptStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def put_receipt(
        self,
        room_id: str,
        receipt_type: str,
        user_id: str,
        event_id: str,
        data: dict[str, Any],
        thread_id: str | None = None,
    ) -> int:
        """Store (replacing the previous receipt of this kind); returns its stream position.

        The caller decides whether a receipt that points at an older event than the current one should
        be ignored (that needs stream orderings of events, which live in the event store)."""
        async with self._db.transaction() as txn:
            pos = await next_stream_pos(txn, STREAM)
            await txn.execute(
                "INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id, data, stream_pos)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (room_id, receipt_type, user_id, thread_id)"
                " DO UPDATE SET event_id = excluded.event_id, data = excluded.data,"
                " stream_pos = excluded.stream_pos",
                (room_id, receipt_type, user_id, thread_id or _UNTHREADED, event_id, dump_json(data), pos),
            )
        return pos

    async def get_receipt(
        self, room_id: str, receipt_type: str, user_id: str, thread_id: str | None = None
    ) -> Receipt | None:
        row = await self._db.fetchone(
            f"SELECT {_COLUMNS} FROM receipts"
            " WHERE room_id = ? AND receipt_type = ? AND user_id = ? AND thread_id = ?",
            (room_id, receipt_type, user_id, thread_id or _UNTHREADED),
        )
        return _receipt(row) if row is not None else None

    async def receipts_for_room(self, room_id: str) -> list[Receipt]:
        rows = await self._db.fetchall(
            f"SELECT {_COLUMNS} FROM receipts WHERE room_id = ? ORDER BY stream_pos", (room_id,)
        )
        return [_receipt(r) for r in rows]

    async def receipts_since(self, room_ids: Collection[str], since: int, upto: int) -> list[Receipt]:
        """Receipts in these rooms with since < stream_pos <= upto, oldest first."""
        if not room_ids:
            return []
        out: list[Receipt] = []
        for chunk in chunks(sorted(room_ids)):
            rows = await self._db.fetchall(
                f"SELECT {_COLUMNS} FROM receipts WHERE room_id IN ({in_list(len(chunk))})"
                " AND stream_pos > ? AND stream_pos <= ?",
                (*chunk, since, upto),
            )
            out.extend(_receipt(r) for r in rows)
        out.sort(key=lambda r: r.stream_pos)
        return out

    async def max_position(self) -> int:
        return await current_stream_pos(self._db, STREAM)


def client_receipt_contents(receipts: Collection[Receipt]) -> dict[str, dict[str, Any]]:
    """Per room, the content of the client-side ``m.receipt`` event: event id -> type -> user -> data."""
    out: dict[str, dict[str, Any]] = {}
    for r in receipts:
        data = dict(r.data)
        if r.thread_id is not None:
            data["thread_id"] = r.thread_id
        out.setdefault(r.room_id, {}).setdefault(r.event_id, {}).setdefault(r.receipt_type, {})[r.user_id] = (
            data
        )
    return out
