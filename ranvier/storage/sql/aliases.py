"""Room aliases (``#alias:server`` -> room id) owned by this server."""

from __future__ import annotations

from dataclasses import dataclass

from ...clock import now_ms
from .aux_streams import write
from .engine import Database


@dataclass(frozen=True, slots=True)
class AliasRecord:
    alias: str
    room_id: str
    creator: str


class AliasStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_alias(self, alias: str, room_id: str, creator: str) -> bool:
        """False if the alias already exists (the C-S API answers that with 409)."""
        inserted = await write(
            self._db,
            "INSERT INTO room_aliases (alias, room_id, creator, created_ts) VALUES (?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING RETURNING alias",
            (alias, room_id, creator, now_ms()),
        )
        return inserted is not None

    async def get_alias(self, alias: str) -> AliasRecord | None:
        row = await self._db.fetchone(
            "SELECT alias, room_id, creator FROM room_aliases WHERE alias = ?", (alias,)
        )
        return AliasRecord(row[0], row[1], row[2]) if row is not None else None

    async def aliases_for_room(self, room_id: str) -> list[str]:
        rows = await self._db.fetchall(
            "SELECT alias FROM room_aliases WHERE room_id = ? ORDER BY created_ts, alias", (room_id,)
        )
        return [r[0] for r in rows]

    async def delete_alias(self, alias: str) -> bool:
        deleted = await write(self._db, "DELETE FROM room_aliases WHERE alias = ? RETURNING alias", (alias,))
        return deleted is not None
