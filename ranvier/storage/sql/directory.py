"""Which rooms are published in this server's public room directory."""

from __future__ import annotations

from typing import Literal

from .aux_streams import write
from .engine import Database

Visibility = Literal["public", "private"]


class DirectoryStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def set_visibility(self, room_id: str, visibility: Visibility) -> None:
        if visibility not in ("public", "private"):
            raise ValueError(f"visibility must be 'public' or 'private', not {visibility!r}")
        if visibility == "private":
            # Private is the default, so it is stored as the absence of a row.
            await write(self._db, "DELETE FROM room_directory WHERE room_id = ?", (room_id,))
            return
        await write(
            self._db,
            "INSERT INTO room_directory (room_id, visibility) VALUES (?, ?)"
            " ON CONFLICT (room_id) DO UPDATE SET visibility = excluded.visibility",
            (room_id, visibility),
        )

    async def get_visibility(self, room_id: str) -> Visibility:
        value = await self._db.fetchval("SELECT visibility FROM room_directory WHERE room_id = ?", (room_id,))
        return "public" if value == "public" else "private"

    async def public_room_ids(self) -> list[str]:
        rows = await self._db.fetchall(
            "SELECT room_id FROM room_directory WHERE visibility = 'public' ORDER BY room_id"
        )
        return [r[0] for r in rows]
