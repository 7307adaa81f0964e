"""The admin API's own tables (migrations 660/661): shadow bans, rate-limit overrides, blocked rooms,
registration tokens and users' content reports; and the listing queries the admin API runs over users and
rooms (paging, filters and ordering as Synapse's admin API)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...clock import now_ms
from .aux_streams import dump_json, load_json, write
from .engine import Database


@dataclass(frozen=True, slots=True)
class RateLimitOverride:
    messages_per_second: int
    burst_count: int


@dataclass(frozen=True, slots=True)
class ContentReport:
    id: int
    kind: str
    received_ts: int
    room_id: str | None
    event_id: str | None
    target_user_id: str | None
    user_id: str
    reason: str | None
    content: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RegistrationToken:
    token: str
    uses_allowed: int | None
    pending: int
    completed: int
    expiry_time: int | None

    def usable(self, now: int) -> bool:
        if self.expiry_time is not None and self.expiry_time <= now:
            return False
        return self.uses_allowed is None or self.pending + self.completed < self.uses_allowed


_REPORT_COLUMNS = "id, kind, received_ts, room_id, event_id, target_user_id, user_id, reason, content"
_TOKEN_COLUMNS = "token, uses_allowed, pending, completed, expiry_time"


def _report(row: tuple[Any, ...]) -> ContentReport:
    return ContentReport(
        int(row[0]), row[1], int(row[2]), row[3], row[4], row[5], row[6], row[7], load_json(row[8])
    )


def _token(row: tuple[Any, ...]) -> RegistrationToken:
    return RegistrationToken(
        row[0],
        None if row[1] is None else int(row[1]),
        int(row[2]),
        int(row[3]),
        None if row[4] is None else int(row[4]),
    )


# Synapse's v2/users order_by values, mapped onto our columns (user_type, is_guest, approved, locked and
# last_seen_ts have no column here: Ranvier has no guests, user types, approval or locking).
USER_ORDERS = {
    "name": "user_id",
    "displayname": "displayname",
    "admin": "is_admin",
    "deactivated": "deactivated",
    "creation_ts": "created_ts",
    "avatar_url": "avatar_url",
    "shadow_banned": "shadow_banned",
}


def _like(text: str) -> str:
    """A case-insensitive substring pattern for LIKE ... ESCAPE '\\', the text's own wildcards literal."""
    return "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class AdminStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- users ------------------------------------------------------------------------------------

    async def list_users(
        self,
        *,
        start: int,
        limit: int,
        name: str | None,
        deactivated: bool,
        user_id: str | None = None,
        admins: bool | None,
        order_by: str,
        backwards: bool,
    ) -> tuple[list[tuple[Any, ...]], int]:
        """Rows (user_id, is_admin, deactivated, created_ts, displayname, avatar_url, shadow_banned,
        last_seen_ts) of one page, and the total matching. ``name`` is looked for in user ids and display
        names, ``user_id`` in user ids only (both case-insensitive substrings, wildcards literal)."""
        where: list[str] = ["1 = 1"]
        params: list[object] = []
        if name:
            pattern = _like(name)
            where.append(
                "(LOWER(u.user_id) LIKE ? ESCAPE '\\'"
                " OR LOWER(COALESCE(u.displayname, '')) LIKE ? ESCAPE '\\')"
            )
            params += [pattern, pattern]
        elif user_id:
            where.append("LOWER(u.user_id) LIKE ? ESCAPE '\\'")
            params.append(_like(user_id))
        if not deactivated:
            where.append("u.deactivated = 0")
        if admins is not None:
            where.append("u.is_admin = ?")
            params.append(1 if admins else 0)
        clause = " AND ".join(where)
        column = USER_ORDERS[order_by]
        direction = "DESC" if backwards else "ASC"
        rows = await self._db.fetchall(
            "SELECT * FROM (SELECT u.user_id, u.is_admin, u.deactivated, u.created_ts, u.displayname,"
            " u.avatar_url, CASE WHEN s.user_id IS NULL THEN 0 ELSE 1 END AS shadow_banned,"
            " (SELECT MAX(d.last_seen_ts) FROM devices d WHERE d.user_id = u.user_id) AS last_seen_ts,"
            " u.locked"
            " FROM users u LEFT JOIN shadow_banned_users s ON s.user_id = u.user_id"
            f" WHERE {clause}) AS listed"
            f" ORDER BY {column} {direction}, user_id {direction} LIMIT ? OFFSET ?",
            (*params, limit, start),
        )
        total = await self._db.fetchval(f"SELECT COUNT(*) FROM users u WHERE {clause}", tuple(params))
        return list(rows), int(total or 0)

    async def reactivate_user(self, user_id: str) -> None:
        await write(self._db, "UPDATE users SET deactivated = 0 WHERE user_id = ?", (user_id,))

    # -- shadow bans -------------------------------------------------------------------------------

    async def set_shadow_banned(self, user_id: str, banned: bool) -> None:
        if banned:
            await write(
                self._db,
                "INSERT INTO shadow_banned_users (user_id, banned_ts) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (user_id, now_ms()),
            )
        else:
            await write(self._db, "DELETE FROM shadow_banned_users WHERE user_id = ?", (user_id,))

    async def shadow_banned_users(self) -> set[str]:
        return {r[0] for r in await self._db.fetchall("SELECT user_id FROM shadow_banned_users")}

    # -- rate-limit overrides ----------------------------------------------------------------------

    async def set_override(self, user_id: str, override: RateLimitOverride) -> None:
        await write(
            self._db,
            "INSERT INTO ratelimit_overrides (user_id, messages_per_second, burst_count) VALUES (?, ?, ?)"
            " ON CONFLICT (user_id) DO UPDATE SET messages_per_second = excluded.messages_per_second,"
            " burst_count = excluded.burst_count",
            (user_id, override.messages_per_second, override.burst_count),
        )

    async def delete_override(self, user_id: str) -> None:
        await write(self._db, "DELETE FROM ratelimit_overrides WHERE user_id = ?", (user_id,))

    async def all_overrides(self) -> dict[str, RateLimitOverride]:
        rows = await self._db.fetchall(
            "SELECT user_id, messages_per_second, burst_count FROM ratelimit_overrides"
        )
        return {r[0]: RateLimitOverride(int(r[1]), int(r[2])) for r in rows}

    # -- blocked rooms -----------------------------------------------------------------------------

    async def set_room_blocked(self, room_id: str, by_user: str, blocked: bool) -> None:
        if blocked:
            await write(
                self._db,
                "INSERT INTO blocked_rooms (room_id, user_id, blocked_ts) VALUES (?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (room_id, by_user, now_ms()),
            )
        else:
            await write(self._db, "DELETE FROM blocked_rooms WHERE room_id = ?", (room_id,))

    async def room_blocked_by(self, room_id: str) -> str | None:
        value = await self._db.fetchval("SELECT user_id FROM blocked_rooms WHERE room_id = ?", (room_id,))
        return None if value is None else str(value)

    async def blocked_rooms(self) -> set[str]:
        return {r[0] for r in await self._db.fetchall("SELECT room_id FROM blocked_rooms")}

    # -- content reports ---------------------------------------------------------------------------

    async def add_report(
        self,
        kind: str,
        user_id: str,
        reason: str | None,
        content: dict[str, Any],
        *,
        room_id: str | None = None,
        event_id: str | None = None,
        target_user_id: str | None = None,
    ) -> int:
        report_id = await write(
            self._db,
            "INSERT INTO content_reports (kind, received_ts, room_id, event_id, target_user_id, user_id,"
            " reason, content) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (kind, now_ms(), room_id, event_id, target_user_id, user_id, reason, dump_json(content)),
        )
        return int(report_id)

    async def list_reports(
        self,
        kind: str,
        *,
        start: int,
        limit: int,
        backwards: bool,
        room_id: str | None = None,
        user_id: str | None = None,
    ) -> tuple[list[ContentReport], int]:
        where, params = ["kind = ?"], [kind]
        if room_id is not None:
            where.append("room_id LIKE ?")
            params.append(f"%{room_id}%")
        if user_id is not None:
            where.append("user_id LIKE ?")
            params.append(f"%{user_id}%")
        clause = " AND ".join(where)
        rows = await self._db.fetchall(
            f"SELECT {_REPORT_COLUMNS} FROM content_reports WHERE {clause}"
            f" ORDER BY received_ts {'DESC' if backwards else 'ASC'}, id {'DESC' if backwards else 'ASC'}"
            " LIMIT ? OFFSET ?",
            (*params, limit, start),
        )
        total = await self._db.fetchval(f"SELECT COUNT(*) FROM content_reports WHERE {clause}", tuple(params))
        return [_report(r) for r in rows], int(total or 0)

    async def get_report(self, report_id: int) -> ContentReport | None:
        row = await self._db.fetchone(
            f"SELECT {_REPORT_COLUMNS} FROM content_reports WHERE id = ?", (report_id,)
        )
        return None if row is None else _report(row)

    async def delete_report(self, report_id: int) -> bool:
        deleted = await write(self._db, "DELETE FROM content_reports WHERE id = ? RETURNING id", (report_id,))
        return deleted is not None

    # -- registration tokens -----------------------------------------------------------------------

    async def create_token(self, token: str, uses_allowed: int | None, expiry_time: int | None) -> bool:
        created = await write(
            self._db,
            f"INSERT INTO registration_tokens ({_TOKEN_COLUMNS}) VALUES (?, ?, 0, 0, ?)"
            " ON CONFLICT DO NOTHING RETURNING token",
            (token, uses_allowed, expiry_time),
        )
        return created is not None

    async def get_token(self, token: str) -> RegistrationToken | None:
        row = await self._db.fetchone(
            f"SELECT {_TOKEN_COLUMNS} FROM registration_tokens WHERE token = ?", (token,)
        )
        return None if row is None else _token(row)

    async def list_tokens(self) -> list[RegistrationToken]:
        rows = await self._db.fetchall(f"SELECT {_TOKEN_COLUMNS} FROM registration_tokens ORDER BY token")
        return [_token(r) for r in rows]

    async def update_token(self, token: str, changes: dict[str, int | None]) -> RegistrationToken | None:
        """``changes`` maps ``uses_allowed`` and/or ``expiry_time`` to their new values."""
        if changes:
            sets = ", ".join(f"{column} = ?" for column in changes)
            await write(
                self._db,
                f"UPDATE registration_tokens SET {sets} WHERE token = ?",
                (*changes.values(), token),
            )
        return await self.get_token(token)

    async def delete_token(self, token: str) -> bool:
        deleted = await write(
            self._db, "DELETE FROM registration_tokens WHERE token = ? RETURNING token", (token,)
        )
        return deleted is not None

    async def complete_token_use(self, token: str) -> bool:
        """Count one completed registration against ``token`` if it is still usable (atomically)."""
        now = now_ms()
        used = await write(
            self._db,
            "UPDATE registration_tokens SET completed = completed + 1 WHERE token = ?"
            " AND (expiry_time IS NULL OR expiry_time > ?)"
            " AND (uses_allowed IS NULL OR pending + completed < uses_allowed) RETURNING token",
            (token, now),
        )
        return used is not None

    # -- server notices ----------------------------------------------------------------------------

    async def server_notice_room(self, user_id: str) -> str | None:
        value = await self._db.fetchval(
            "SELECT room_id FROM server_notice_rooms WHERE user_id = ?", (user_id,)
        )
        return None if value is None else str(value)

    async def set_server_notice_room(self, user_id: str, room_id: str) -> None:
        await write(
            self._db,
            "INSERT INTO server_notice_rooms (user_id, room_id) VALUES (?, ?)"
            " ON CONFLICT (user_id) DO UPDATE SET room_id = excluded.room_id",
            (user_id, room_id),
        )

    # -- room summaries ------------------------------------------------------------------------------

    async def room_summary_rows(
        self, server_name: str, state_types: tuple[str, ...]
    ) -> tuple[
        list[tuple[str, str, str]],
        dict[str, tuple[int, int]],
        dict[str, int],
        dict[tuple[str, str], dict[str, Any]],
        set[tuple[str, str]],
    ]:
        """Everything the room list needs, for every room, in four queries: (room_id, version, creator) of
        each room; joined and joined-local member counts; state entry counts; and the content of the
        current state events of ``state_types`` (state key "") by (room_id, type), but for the redacted
        ones, whose (room_id, type) are returned apart."""
        rooms = [
            (str(r[0]), str(r[1]), str(r[2]))
            for r in await self._db.fetchall("SELECT room_id, room_version, creator FROM rooms")
        ]
        members = {
            str(r[0]): (int(r[1]), int(r[2] or 0))
            for r in await self._db.fetchall(
                "SELECT room_id, COUNT(*), SUM(CASE WHEN server_name = ? THEN 1 ELSE 0 END)"
                " FROM room_memberships WHERE membership = 'join' GROUP BY room_id",
                (server_name,),
            )
        }
        state_counts = {
            str(r[0]): int(r[1])
            for r in await self._db.fetchall("SELECT room_id, COUNT(*) FROM current_state GROUP BY room_id")
        }
        contents: dict[tuple[str, str], dict[str, Any]] = {}
        redacted: set[tuple[str, str]] = set()
        if state_types:
            marks = ", ".join("?" * len(state_types))
            rows = await self._db.fetchall(
                "SELECT cs.room_id, cs.type, e.json, e.redacted_by FROM current_state cs"
                " JOIN events e ON e.event_id = cs.event_id"
                f" WHERE cs.state_key = '' AND cs.type IN ({marks})",
                state_types,
            )
            for room_id, event_type, text, redacted_by in rows:
                if redacted_by is not None:
                    # Stored as received; the caller reads it through the event store, which redacts.
                    redacted.add((str(room_id), str(event_type)))
                    continue
                content = load_json(text).get("content")
                contents[(str(room_id), str(event_type))] = content if isinstance(content, dict) else {}
        return rooms, members, state_counts, contents, redacted
