"""Server-side key backups (migration 201): backup versions with their etag, and the backed-up room keys.

The replacement rule for a key already stored (CS "Server-side key backups", ``RoomKey.beats``) is applied
inside the write transaction: a verified key beats an unverified one, then a lower
``first_message_index``, then a lower ``forwarded_count``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .aux_streams import dump_json, load_json
from .engine import Database, Txn


@dataclass(frozen=True, slots=True)
class BackupVersion:
    version: int
    algorithm: str
    auth_data: dict[str, Any]
    etag: int
    count: int


@dataclass(frozen=True, slots=True)
class RoomKey:
    room_id: str
    session_id: str
    first_message_index: int
    forwarded_count: int
    is_verified: bool
    session_data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "first_message_index": self.first_message_index,
            "forwarded_count": self.forwarded_count,
            "is_verified": self.is_verified,
            "session_data": self.session_data,
        }

    def beats(self, other: RoomKey) -> bool:
        """Whether this key should replace ``other`` (the spec's order of preference)."""
        if self.is_verified != other.is_verified:
            return self.is_verified
        if self.first_message_index != other.first_message_index:
            return self.first_message_index < other.first_message_index
        return self.forwarded_count < other.forwarded_count


def _key(row: tuple[Any, ...]) -> RoomKey:
    return RoomKey(row[0], row[1], int(row[2]), int(row[3]), bool(row[4]), load_json(row[5]))


_KEY_COLUMNS = "room_id, session_id, first_message_index, forwarded_count, is_verified, session_data"


class KeyBackupStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_version(self, user_id: str, algorithm: str, auth_data: dict[str, Any]) -> int:
        async with self._db.transaction() as txn:
            last = await txn.fetchval(
                "SELECT MAX(version) FROM e2e_room_key_versions WHERE user_id = ?", (user_id,)
            )
            version = int(last or 0) + 1
            await txn.execute(
                "INSERT INTO e2e_room_key_versions (user_id, version, algorithm, auth_data, etag, deleted)"
                " VALUES (?, ?, ?, ?, 0, 0)",
                (user_id, version, algorithm, dump_json(auth_data)),
            )
        return version

    async def get_version(self, user_id: str, version: int | None = None) -> BackupVersion | None:
        """A live version (None: the current one, the highest not deleted)."""
        async with self._db.snapshot() as txn:
            if version is None:
                row = await txn.fetchone(
                    "SELECT version, algorithm, auth_data, etag FROM e2e_room_key_versions"
                    " WHERE user_id = ? AND deleted = 0 ORDER BY version DESC LIMIT 1",
                    (user_id,),
                )
            else:
                row = await txn.fetchone(
                    "SELECT version, algorithm, auth_data, etag FROM e2e_room_key_versions"
                    " WHERE user_id = ? AND version = ? AND deleted = 0",
                    (user_id, version),
                )
            if row is None:
                return None
            count = await self._count(txn, user_id, int(row[0]))
        return BackupVersion(int(row[0]), row[1], load_json(row[2]), int(row[3]), count)

    async def update_version(self, user_id: str, version: int, auth_data: dict[str, Any]) -> None:
        async with self._db.transaction() as txn:
            await txn.execute(
                "UPDATE e2e_room_key_versions SET auth_data = ? WHERE user_id = ? AND version = ?",
                (dump_json(auth_data), user_id, version),
            )

    async def delete_version(self, user_id: str, version: int) -> bool:
        """Delete a version and its keys; False if it never existed (deleting twice is fine)."""
        async with self._db.transaction() as txn:
            exists = await txn.fetchval(
                "SELECT version FROM e2e_room_key_versions WHERE user_id = ? AND version = ?",
                (user_id, version),
            )
            if exists is None:
                return False
            await txn.execute(
                "UPDATE e2e_room_key_versions SET deleted = 1 WHERE user_id = ? AND version = ?",
                (user_id, version),
            )
            await txn.execute(
                "DELETE FROM e2e_room_keys WHERE user_id = ? AND version = ?", (user_id, version)
            )
        return True

    async def put_keys(self, user_id: str, version: int, keys: Sequence[RoomKey]) -> tuple[int, int]:
        """Store keys where they beat what is stored; (etag, count) afterwards. The etag moves when
        anything changed."""
        async with self._db.transaction() as txn:
            changed = False
            for key in keys:
                row = await txn.fetchone(
                    f"SELECT {_KEY_COLUMNS} FROM e2e_room_keys"
                    " WHERE user_id = ? AND version = ? AND room_id = ? AND session_id = ?",
                    (user_id, version, key.room_id, key.session_id),
                )
                if row is not None and not key.beats(_key(row)):
                    continue
                changed = True
                await txn.execute(
                    "INSERT INTO e2e_room_keys (user_id, version, room_id, session_id, first_message_index,"
                    " forwarded_count, is_verified, session_data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET"
                    " first_message_index = excluded.first_message_index,"
                    " forwarded_count = excluded.forwarded_count, is_verified = excluded.is_verified,"
                    " session_data = excluded.session_data",
                    (
                        user_id,
                        version,
                        key.room_id,
                        key.session_id,
                        key.first_message_index,
                        key.forwarded_count,
                        1 if key.is_verified else 0,
                        dump_json(key.session_data),
                    ),
                )
            return await self._after_change(txn, user_id, version, changed)

    async def get_keys(
        self, user_id: str, version: int, room_id: str | None = None, session_id: str | None = None
    ) -> list[RoomKey]:
        sql = f"SELECT {_KEY_COLUMNS} FROM e2e_room_keys WHERE user_id = ? AND version = ?"
        params: list[Any] = [user_id, version]
        if room_id is not None:
            sql += " AND room_id = ?"
            params.append(room_id)
        if session_id is not None:
            sql += " AND session_id = ?"
            params.append(session_id)
        rows = await self._db.fetchall(sql + " ORDER BY room_id, session_id", params)
        return [_key(r) for r in rows]

    async def delete_keys(
        self, user_id: str, version: int, room_id: str | None = None, session_id: str | None = None
    ) -> tuple[int, int]:
        sql = "DELETE FROM e2e_room_keys WHERE user_id = ? AND version = ?"
        params: list[Any] = [user_id, version]
        if room_id is not None:
            sql += " AND room_id = ?"
            params.append(room_id)
        if session_id is not None:
            sql += " AND session_id = ?"
            params.append(session_id)
        async with self._db.transaction() as txn:
            deleted = await txn.fetchall(sql + " RETURNING session_id", params)
            return await self._after_change(txn, user_id, version, bool(deleted))

    async def _after_change(self, txn: Txn, user_id: str, version: int, changed: bool) -> tuple[int, int]:
        if changed:
            await txn.execute(
                "UPDATE e2e_room_key_versions SET etag = etag + 1 WHERE user_id = ? AND version = ?",
                (user_id, version),
            )
        etag = await txn.fetchval(
            "SELECT etag FROM e2e_room_key_versions WHERE user_id = ? AND version = ?", (user_id, version)
        )
        return int(etag or 0), await self._count(txn, user_id, version)

    @staticmethod
    async def _count(txn: Txn, user_id: str, version: int) -> int:
        value = await txn.fetchval(
            "SELECT COUNT(*) FROM e2e_room_keys WHERE user_id = ? AND version = ?", (user_id, version)
        )
        return int(value or 0)
