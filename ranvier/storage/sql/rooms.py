"""The rooms table: which rooms we hold, their version, and per-room flags."""

from __future__ import annotations

from typing import Any

from ranvier.protocol.room_versions import RoomVersion, get_room_version

from ..interfaces import RoomRecord
from .engine import Database

_COLUMNS = "room_id, room_version, creator, is_public, partial_state"


def _record(row: tuple[Any, ...]) -> RoomRecord:
    return RoomRecord(row[0], get_room_version(row[1]), row[2], bool(row[3]), bool(row[4]))


class SqlRoomStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        # Room versions never change: cache them, they are asked for on every incoming PDU.
        self._versions: dict[str, RoomVersion] = {}

    async def store_room(
        self, room_id: str, room_version_id: str, creator: str, is_public: bool = False
    ) -> bool:
        get_room_version(room_version_id)  # refuse unknown versions before writing anything
        async with self._db.transaction() as txn:
            created = await txn.fetchval(
                "INSERT INTO rooms (room_id, room_version, creator, is_public) VALUES (?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING RETURNING room_id",
                (room_id, room_version_id, creator, is_public),
            )
        return created is not None

    async def get_room(self, room_id: str) -> RoomRecord | None:
        row = await self._db.fetchone(f"SELECT {_COLUMNS} FROM rooms WHERE room_id = ?", (room_id,))
        return None if row is None else _record(row)

    async def get_room_version(self, room_id: str) -> RoomVersion | None:
        version = self._versions.get(room_id)
        if version is None:
            value = await self._db.fetchval("SELECT room_version FROM rooms WHERE room_id = ?", (room_id,))
            if value is None:
                return None
            version = self._versions[room_id] = get_room_version(value)
        return version

    async def get_all_rooms(self) -> list[RoomRecord]:
        return [_record(r) for r in await self._db.fetchall(f"SELECT {_COLUMNS} FROM rooms ORDER BY room_id")]

    async def set_public(self, room_id: str, is_public: bool) -> None:
        await self._db.execute("UPDATE rooms SET is_public = ? WHERE room_id = ?", (is_public, room_id))

    async def set_partial_state(self, room_id: str, partial: bool) -> None:
        await self._db.execute("UPDATE rooms SET partial_state = ? WHERE room_id = ?", (partial, room_id))

    async def is_partial_state(self, room_id: str) -> bool:
        value = await self._db.fetchval("SELECT partial_state FROM rooms WHERE room_id = ?", (room_id,))
        return bool(value)
