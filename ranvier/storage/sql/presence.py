"""Presence states (migration 650): the latest state of each user, local or remote, with a position on the
``presence`` aux stream for /sync and the appservice feed."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from ...presence.state import OFFLINE, UserPresence
from .aux_streams import current_stream_pos, next_stream_pos
from .engine import Database, chunks, in_list

STREAM = "presence"
_COLUMNS = (
    "user_id, state, status_msg, last_active_ts, last_federation_update_ts, currently_active, stream_pos"
)
# The users sharing a joined room with ``?`` (itself included when it is joined anywhere).
_SHARING = (
    "SELECT b.user_id FROM room_memberships a JOIN room_memberships b ON a.room_id = b.room_id"
    " WHERE a.user_id = ? AND a.membership = 'join' AND b.membership = 'join'"
)


def _row(row: tuple[Any, ...]) -> tuple[int, UserPresence]:
    return int(row[6]), UserPresence(
        user_id=row[0],
        state=row[1],
        status_msg=row[2],
        last_active_ts=int(row[3]),
        last_federation_update_ts=int(row[4]),
        currently_active=bool(row[5]),
    )


class PresenceStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def put(self, states: Collection[UserPresence]) -> int:
        """Store the states (replacing earlier ones), each at a new stream position; returns the last."""
        if not states:
            return await self.max_position()
        async with self._db.transaction() as txn:
            last = await next_stream_pos(txn, STREAM, len(states))
            first = last - len(states) + 1
            await txn.executemany(
                f"INSERT INTO presence_state ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (user_id) DO UPDATE SET state = excluded.state,"
                " status_msg = excluded.status_msg, last_active_ts = excluded.last_active_ts,"
                " last_federation_update_ts = excluded.last_federation_update_ts,"
                " currently_active = excluded.currently_active, stream_pos = excluded.stream_pos",
                [
                    (
                        p.user_id,
                        p.state,
                        p.status_msg,
                        p.last_active_ts,
                        p.last_federation_update_ts,
                        p.currently_active,
                        first + i,
                    )
                    for i, p in enumerate(states)
                ],
            )
        return last

    async def touch_federation_update(self, user_ids: Collection[str], ts: int) -> None:
        """Record when local users' states were last sent to other servers (no new stream position:
        nothing changed for clients)."""
        if not user_ids:
            return
        async with self._db.transaction() as txn:
            await txn.executemany(
                "UPDATE presence_state SET last_federation_update_ts = ? WHERE user_id = ?",
                [(ts, u) for u in user_ids],
            )

    async def max_position(self) -> int:
        return await current_stream_pos(self._db, STREAM)

    async def get(self, user_ids: Collection[str]) -> dict[str, UserPresence]:
        out: dict[str, UserPresence] = {}
        for part in chunks(list(user_ids)):
            rows = await self._db.fetchall(
                f"SELECT {_COLUMNS} FROM presence_state WHERE user_id IN ({in_list(len(part))})", tuple(part)
            )
            out.update((p.user_id, p) for _, p in map(_row, rows))
        return out

    async def not_offline(self) -> list[UserPresence]:
        """Every state other than offline (loaded at start, for the timeouts)."""
        rows = await self._db.fetchall(f"SELECT {_COLUMNS} FROM presence_state WHERE state <> ?", (OFFLINE,))
        return [p for _, p in map(_row, rows)]

    async def for_user_between(
        self, user_id: str, since: int | None, upto: int
    ) -> list[tuple[int, UserPresence]]:
        """States of ``user_id`` and the users sharing a joined room with them, changed in (since, upto];
        with no ``since``, every state other than offline up to ``upto`` (an initial sync)."""
        where = "stream_pos > ?" if since is not None else "state <> ?"
        rows = await self._db.fetchall(
            f"SELECT {_COLUMNS} FROM presence_state WHERE {where} AND stream_pos <= ?"
            f" AND (user_id = ? OR user_id IN ({_SHARING})) ORDER BY stream_pos",
            (since if since is not None else OFFLINE, upto, user_id, user_id),
        )
        return [_row(r) for r in rows]

    async def between(self, since: int, upto: int, limit: int) -> list[tuple[int, UserPresence]]:
        """Every change in (since, upto], oldest first, at most ``limit`` (the appservice feed)."""
        rows = await self._db.fetchall(
            f"SELECT {_COLUMNS} FROM presence_state WHERE stream_pos > ? AND stream_pos <= ?"
            " ORDER BY stream_pos LIMIT ?",
            (since, upto, limit),
        )
        return [_row(r) for r in rows]

    async def joined_members(self, room_ids: Collection[str]) -> set[str]:
        """The users joined to any of these rooms."""
        out: set[str] = set()
        for part in chunks(sorted(room_ids)):
            rows = await self._db.fetchall(
                "SELECT DISTINCT user_id FROM room_memberships"
                f" WHERE membership = 'join' AND room_id IN ({in_list(len(part))})",
                tuple(part),
            )
            out.update(r[0] for r in rows)
        return out

    async def shares_a_room(self, user_id: str, other: str) -> bool:
        """Whether the two users are joined to a common room (CS "Presence": presence is published to
        users who share a room)."""
        value = await self._db.fetchval(
            "SELECT 1 FROM room_memberships a JOIN room_memberships b ON a.room_id = b.room_id"
            " WHERE a.user_id = ? AND b.user_id = ? AND a.membership = 'join' AND b.membership = 'join'"
            " LIMIT 1",
            (user_id, other),
        )
        return value is not None

    async def servers_sharing_a_room(self, user_id: str) -> set[str]:
        """The servers of users joined to a room ``user_id`` is joined to."""
        # The rooms' per-server counts (room_server_members): a row per room and server, none per member.
        rows = await self._db.fetchall(
            "SELECT DISTINCT b.server_name FROM room_memberships a JOIN room_server_members b"
            " ON a.room_id = b.room_id WHERE a.user_id = ? AND a.membership = 'join' AND b.joined > 0",
            (user_id,),
        )
        return {r[0] for r in rows}
