"""Devices and their access tokens.

Tokens are stored as the hex SHA-256 of the token: a database dump does not hand out live sessions, and
because tokens are 32+ random bytes a fast unsalted hash is enough (there is nothing to brute-force).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ...clock import now_ms
from .aux_streams import write
from .e2ee_keys import delete_device_e2ee_txn
from .e2ee_streams import record_device_list_change
from .engine import Database

# Told (user id, device ids) after a deletion or renaming commits: the E2EE layer tells other servers.
DeletedListener = Callable[[str, list[str]], Awaitable[None]]


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Device:
    user_id: str
    device_id: str
    display_name: str | None
    last_seen_ts: int | None
    last_seen_ip: str | None


def _device(row: tuple[Any, ...]) -> Device:
    return Device(row[0], row[1], row[2], None if row[3] is None else int(row[3]), row[4])


_COLUMNS = "user_id, device_id, display_name, last_seen_ts, last_seen_ip"


class DeviceStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        self.deleted_listeners: list[DeletedListener] = []
        self.renamed_listeners: list[DeletedListener] = []

    async def _deleted(self, user_id: str, device_ids: list[str]) -> None:
        if device_ids:
            for listener in self.deleted_listeners:
                await listener(user_id, device_ids)

    async def create_device(self, user_id: str, device_id: str, display_name: str | None = None) -> bool:
        """Create the device if it does not exist (an existing device keeps its name). True if created."""
        created = await write(
            self._db,
            "INSERT INTO devices (user_id, device_id, display_name, created_ts) VALUES (?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING RETURNING device_id",
            (user_id, device_id, display_name, now_ms()),
        )
        return created is not None

    async def get_device(self, user_id: str, device_id: str) -> Device | None:
        row = await self._db.fetchone(
            f"SELECT {_COLUMNS} FROM devices WHERE user_id = ? AND device_id = ?", (user_id, device_id)
        )
        return _device(row) if row is not None else None

    async def list_devices(self, user_id: str) -> list[Device]:
        rows = await self._db.fetchall(
            f"SELECT {_COLUMNS} FROM devices WHERE user_id = ? ORDER BY device_id", (user_id,)
        )
        return [_device(r) for r in rows]

    async def rename_device(self, user_id: str, device_id: str, display_name: str | None) -> bool:
        """False if there is no such device. A new name is a device list change (others see device
        names in /keys/query), recorded with it and told to ``renamed_listeners`` after the commit."""
        async with self._db.transaction() as txn:
            old = await txn.fetchone(
                "SELECT display_name FROM devices WHERE user_id = ? AND device_id = ?", (user_id, device_id)
            )
            if old is None:
                return False
            if old[0] == display_name:
                return True
            await txn.execute(
                "UPDATE devices SET display_name = ? WHERE user_id = ? AND device_id = ?",
                (display_name, user_id, device_id),
            )
            await record_device_list_change(txn, [user_id])
        for listener in self.renamed_listeners:
            await listener(user_id, [device_id])
        return True

    async def touch_device(self, user_id: str, device_id: str, ts: int, ip: str | None) -> None:
        await write(
            self._db,
            "UPDATE devices SET last_seen_ts = ?, last_seen_ip = ? WHERE user_id = ? AND device_id = ?",
            (ts, ip, user_id, device_id),
        )

    async def delete_device(self, user_id: str, device_id: str) -> bool:
        """Delete the device, every access token issued to it, its E2EE keys and its to-device inbox.
        False if there was no such device."""
        async with self._db.transaction() as txn:
            for table in ("access_tokens", "refresh_tokens"):
                await txn.execute(
                    f"DELETE FROM {table} WHERE user_id = ? AND device_id = ?", (user_id, device_id)
                )
            deleted = await txn.fetchval(
                "DELETE FROM devices WHERE user_id = ? AND device_id = ? RETURNING device_id",
                (user_id, device_id),
            )
            if deleted is not None:
                await delete_device_e2ee_txn(txn, user_id, [device_id])
        if deleted is not None:
            await self._deleted(user_id, [device_id])
        return deleted is not None

    async def delete_all_devices(self, user_id: str, except_device: str | None = None) -> list[str]:
        """Delete the user's devices (but ``except_device``) and their tokens; returns the ids deleted."""
        keep = except_device if except_device is not None else ""
        async with self._db.transaction() as txn:
            rows = await txn.fetchall(
                "DELETE FROM devices WHERE user_id = ? AND device_id <> ? RETURNING device_id",
                (user_id, keep),
            )
            for table in ("access_tokens", "refresh_tokens"):
                await txn.execute(
                    f"DELETE FROM {table} WHERE user_id = ? AND device_id <> ?", (user_id, keep)
                )
            deleted = sorted(r[0] for r in rows)
            await delete_device_e2ee_txn(txn, user_id, deleted)
        await self._deleted(user_id, deleted)
        return deleted

    async def create_access_token(
        self, user_id: str, device_id: str, token: str, expires_ts: int | None = None
    ) -> None:
        """``expires_ts``: when the token stops working (tokens issued with a refresh token), else never."""
        await write(
            self._db,
            "INSERT INTO access_tokens (token_sha256, user_id, device_id, created_ts, expires_ts)"
            " VALUES (?, ?, ?, ?, ?)",
            (token_digest(token), user_id, device_id, now_ms(), expires_ts),
        )

    async def lookup_access_token(self, token: str) -> tuple[str, str, int | None] | None:
        """(user_id, device_id, expires_ts) for a known token, expired or not, else None."""
        row = await self._db.fetchone(
            "SELECT user_id, device_id, expires_ts FROM access_tokens WHERE token_sha256 = ?",
            (token_digest(token),),
        )
        if row is None:
            return None
        return row[0], row[1], None if row[2] is None else int(row[2])

    async def get_user_by_token(self, token: str) -> tuple[str, str] | None:
        """(user_id, device_id) for a live token, else None."""
        row = await self._db.fetchone(
            "SELECT user_id, device_id FROM access_tokens WHERE token_sha256 = ?", (token_digest(token),)
        )
        return (row[0], row[1]) if row is not None else None

    async def delete_access_token(self, token: str) -> bool:
        deleted = await write(
            self._db,
            "DELETE FROM access_tokens WHERE token_sha256 = ? RETURNING user_id",
            (token_digest(token),),
        )
        return deleted is not None

    async def delete_tokens_for_device(self, user_id: str, device_id: str) -> None:
        async with self._db.transaction() as txn:
            for table in ("access_tokens", "refresh_tokens"):
                await txn.execute(
                    f"DELETE FROM {table} WHERE user_id = ? AND device_id = ?", (user_id, device_id)
                )
