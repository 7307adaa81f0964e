"""Simplified sliding sync connection positions on disk (migration 640), so that a client's ``pos``
survives a restart. ranvier/sync/connections.py keeps them in memory too and reads here on a miss."""

from __future__ import annotations

from .engine import Database


class SlidingPositionStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def load(
        self, user_id: str, device_id: str, conn_id: str, position_id: int, now_ms: int
    ) -> tuple[str, str] | None:
        """(token, rooms JSON) of the position, marked used now; None when it is not held."""
        key = (user_id, device_id, conn_id, position_id)
        row = await self._db.fetchone(
            "SELECT token, rooms FROM sliding_sync_positions"
            " WHERE user_id = ? AND device_id = ? AND conn_id = ? AND position_id = ?",
            key,
        )
        if row is None:
            return None
        await self._db.execute(
            "UPDATE sliding_sync_positions SET last_used_ts = ?"
            " WHERE user_id = ? AND device_id = ? AND conn_id = ? AND position_id = ?",
            (now_ms, *key),
        )
        return str(row[0]), str(row[1])

    async def save(
        self,
        user_id: str,
        device_id: str,
        conn_id: str,
        keep: int | None,
        position_id: int,
        token: str,
        rooms: str,
        now_ms: int,
    ) -> None:
        """Store a new position and forget the connection's others but ``keep``."""
        conn = (user_id, device_id, conn_id)
        async with self._db.transaction() as txn:
            await txn.execute(
                "DELETE FROM sliding_sync_positions WHERE user_id = ? AND device_id = ? AND conn_id = ?"
                " AND position_id != ?",
                (*conn, -1 if keep is None else keep),
            )
            await txn.execute(
                "INSERT INTO sliding_sync_positions"
                " (user_id, device_id, conn_id, position_id, token, rooms, last_used_ts)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (*conn, position_id, token, rooms, now_ms),
            )

    async def expire(self, cutoff_ms: int) -> None:
        await self._db.execute("DELETE FROM sliding_sync_positions WHERE last_used_ts < ?", (cutoff_ms,))
