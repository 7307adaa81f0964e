"""Pushers: (user, app_id, pushkey) -> where and how that user's notifications are sent."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from .aux_streams import dump_json, load_json
from .engine import Database, chunks, in_list


@dataclass(frozen=True, slots=True)
class Pusher:
    user_id: str
    app_id: str
    pushkey: str
    kind: str
    app_display_name: str
    device_display_name: str
    profile_tag: str | None
    lang: str
    data: dict[str, Any]
    device_id: str | None
    last_stream_ordering: int

    def client_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "pushkey": self.pushkey,
            "kind": self.kind,
            "app_id": self.app_id,
            "app_display_name": self.app_display_name,
            "device_display_name": self.device_display_name,
            "lang": self.lang,
            "data": self.data,
        }
        if self.profile_tag is not None:
            out["profile_tag"] = self.profile_tag
        return out


_COLUMNS = (
    "user_id, app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, lang, data,"
    " device_id, last_stream_ordering"
)


def _pusher(row: Any) -> Pusher:
    return Pusher(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        row[6],
        row[7],
        load_json(row[8]),
        row[9],
        int(row[10]),
    )


class PusherStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def set_pusher(self, pusher: Pusher, append: bool) -> None:
        """Add or update the user's pusher; unless ``append``, other users' pushers with the same app id
        and pushkey go (CS "POST /pushers/set"). An update keeps the pusher's delivery position."""
        async with self._db.transaction() as txn:
            if not append:
                await txn.execute(
                    "DELETE FROM pushers WHERE app_id = ? AND pushkey = ? AND user_id != ?",
                    (pusher.app_id, pusher.pushkey, pusher.user_id),
                )
            await txn.execute(
                f"INSERT INTO pushers ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET kind = excluded.kind,"
                " app_display_name = excluded.app_display_name,"
                " device_display_name = excluded.device_display_name, profile_tag = excluded.profile_tag,"
                " lang = excluded.lang, data = excluded.data, device_id = excluded.device_id",
                (
                    pusher.user_id,
                    pusher.app_id,
                    pusher.pushkey,
                    pusher.kind,
                    pusher.app_display_name,
                    pusher.device_display_name,
                    pusher.profile_tag,
                    pusher.lang,
                    dump_json(pusher.data),
                    pusher.device_id,
                    pusher.last_stream_ordering,
                ),
            )

    async def delete_pusher(self, user_id: str, app_id: str, pushkey: str) -> bool:
        async with self._db.transaction() as txn:
            row = await txn.fetchone(
                "SELECT 1 FROM pushers WHERE user_id = ? AND app_id = ? AND pushkey = ?",
                (user_id, app_id, pushkey),
            )
            await txn.execute(
                "DELETE FROM pushers WHERE user_id = ? AND app_id = ? AND pushkey = ?",
                (user_id, app_id, pushkey),
            )
        return row is not None

    async def pushers_for_user(self, user_id: str) -> list[Pusher]:
        rows = await self._db.fetchall(
            f"SELECT {_COLUMNS} FROM pushers WHERE user_id = ? ORDER BY app_id, pushkey", (user_id,)
        )
        return [_pusher(r) for r in rows]

    async def pushers_for_users(self, user_ids: Collection[str]) -> list[Pusher]:
        """The pushers of every user of ``user_ids``: one query (delivery asks it after each batch for the
        users the batch notified)."""
        out: list[Pusher] = []
        for part in chunks(sorted(user_ids)):
            rows = await self._db.fetchall(
                f"SELECT {_COLUMNS} FROM pushers WHERE user_id IN ({in_list(len(part))})"
                " ORDER BY user_id, app_id, pushkey",
                tuple(part),
            )
            out += [_pusher(r) for r in rows]
        return out

    async def all_pushers(self) -> list[Pusher]:
        rows = await self._db.fetchall(f"SELECT {_COLUMNS} FROM pushers ORDER BY user_id, app_id, pushkey")
        return [_pusher(r) for r in rows]

    async def advance(self, user_id: str, app_id: str, pushkey: str, position: int) -> None:
        """Record that the pusher's deliveries have gone up to ``position`` (never moves back)."""
        await self._db.execute(
            "UPDATE pushers SET last_stream_ordering = ? WHERE user_id = ? AND app_id = ? AND pushkey = ?"
            " AND last_stream_ordering < ?",
            (position, user_id, app_id, pushkey, position),
        )
