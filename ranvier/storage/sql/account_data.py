"""Per-user account data, global and per room, with a stream position so /sync can send what changed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .aux_streams import current_stream_pos, dump_json, load_json, next_stream_pos
from .engine import Database

STREAM = "account_data"
_GLOBAL = ""  # the room_id column value for global account data


@dataclass(slots=True)
class AccountDataChanges:
    """What changed for a user since a position: the latest content per type, and the new position."""

    global_data: dict[str, dict[str, Any]] = field(default_factory=dict)
    room_data: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    position: int = 0


class AccountDataStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def _put(self, user_id: str, room_key: str, data_type: str, content: dict[str, Any]) -> int:
        async with self._db.transaction() as txn:
            pos = await next_stream_pos(txn, STREAM)
            await txn.execute(
                "INSERT INTO account_data (user_id, room_id, data_type, content, stream_pos)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_id, room_id, data_type)"
                " DO UPDATE SET content = excluded.content, stream_pos = excluded.stream_pos",
                (user_id, room_key, data_type, dump_json(content), pos),
            )
        return pos

    async def put_global(self, user_id: str, data_type: str, content: dict[str, Any]) -> int:
        """Set global account data; returns its stream position."""
        return await self._put(user_id, _GLOBAL, data_type, content)

    async def put_room(self, user_id: str, room_id: str, data_type: str, content: dict[str, Any]) -> int:
        if not room_id:
            raise ValueError("room_id must be non-empty")
        return await self._put(user_id, room_id, data_type, content)

    async def get_global(self, user_id: str, data_type: str) -> dict[str, Any] | None:
        return await self._get(user_id, _GLOBAL, data_type)

    async def get_room(self, user_id: str, room_id: str, data_type: str) -> dict[str, Any] | None:
        return await self._get(user_id, room_id, data_type)

    async def _get(self, user_id: str, room_key: str, data_type: str) -> dict[str, Any] | None:
        text = await self._db.fetchval(
            "SELECT content FROM account_data WHERE user_id = ? AND room_id = ? AND data_type = ?",
            (user_id, room_key, data_type),
        )
        return load_json(text) if text is not None else None

    async def get_all_global(self, user_id: str) -> dict[str, dict[str, Any]]:
        rows = await self._db.fetchall(
            "SELECT data_type, content FROM account_data WHERE user_id = ? AND room_id = ?",
            (user_id, _GLOBAL),
        )
        return {r[0]: load_json(r[1]) for r in rows}

    async def get_all_for_room(self, user_id: str, room_id: str) -> dict[str, dict[str, Any]]:
        rows = await self._db.fetchall(
            "SELECT data_type, content FROM account_data WHERE user_id = ? AND room_id = ?",
            (user_id, room_id),
        )
        return {r[0]: load_json(r[1]) for r in rows}

    async def changes_since(self, user_id: str, since: int) -> AccountDataChanges:
        """Everything of this user's account data written after ``since`` (0 = all of it).

        The position is read first and the rows are bounded by it, so a write committed between the two
        reads is delivered by the next call rather than skipped."""
        upto = await self.max_position()
        rows = await self._db.fetchall(
            "SELECT room_id, data_type, content FROM account_data"
            " WHERE user_id = ? AND stream_pos > ? AND stream_pos <= ?",
            (user_id, since, upto),
        )
        out = AccountDataChanges(position=upto)
        for room_key, data_type, content in rows:
            if room_key == _GLOBAL:
                out.global_data[data_type] = load_json(content)
            else:
                out.room_data.setdefault(room_key, {})[data_type] = load_json(content)
        return out

    async def max_position(self) -> int:
        return await current_stream_pos(self._db, STREAM)
