"""Push actions per (user, event) and the notification counts derived from them and the read receipts.

Rows are written inside the persist transaction (the push hook, ranvier/push/actions.py), so an event and
what it means for each user's counts commit together. A read receipt "clears" counts by moving the point
after which rows are counted: for a thread, the newest of the user's unthreaded ``m.read``/``m.read.private``
receipts and their receipts in that thread (CS "Receipts" > "Threaded read receipts").
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .aux_streams import dump_json, load_json
from .engine import Database, chunks, in_list

MAIN_THREAD = "main"
_READ_TYPES = "('m.read', 'm.read.private')"
# Where counting starts for a row: after the newest of its thread's and the unthreaded read receipts, and
# after the user's current membership event (a user with no receipt yet counts from their join, not from
# their invite: the invite notified while they were not in the room).
_READ_UPTO = (
    "COALESCE((SELECT MAX(x.pos) FROM ("
    " SELECT e.stream_ordering AS pos FROM receipts r JOIN events e ON e.event_id = r.event_id"
    f" WHERE r.room_id = a.room_id AND r.user_id = a.user_id AND r.receipt_type IN {_READ_TYPES}"
    " AND (r.thread_id = '' OR r.thread_id = a.thread_id)"
    " UNION ALL SELECT e.stream_ordering AS pos FROM room_memberships m"
    " JOIN events e ON e.event_id = m.event_id"
    " WHERE m.room_id = a.room_id AND m.user_id = a.user_id) x), 0)"
)


@dataclass(frozen=True, slots=True)
class PushActionRow:
    user_id: str
    room_id: str
    stream_ordering: int
    event_id: str
    thread_id: str
    notify: bool
    highlight: bool
    actions: Sequence[Any]  # often one object shared by many rows (a rule's actions): encoded once


@dataclass(frozen=True, slots=True)
class Counts:
    notification_count: int = 0
    highlight_count: int = 0


@dataclass
class RoomCounts:
    """One room's unread counts for a user: per thread ('main' for the main timeline)."""

    threads: dict[str, Counts]

    def total(self) -> Counts:
        return Counts(
            sum(c.notification_count for c in self.threads.values()),
            sum(c.highlight_count for c in self.threads.values()),
        )


@dataclass(frozen=True, slots=True)
class Notification:
    room_id: str
    event_id: str
    stream_ordering: int
    actions: list[Any]
    highlight: bool
    read: bool


class PushActionStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def insert_txn(self, txn: Any, rows: Iterable[PushActionRow]) -> None:
        rows = list(rows)  # keeps every actions object alive, so an id stays one object's
        encoded: dict[int, str] = {}  # id of an actions object -> its JSON

        def encode(actions: Sequence[Any]) -> str:
            text = encoded.get(id(actions))
            if text is None:
                text = encoded[id(actions)] = dump_json(actions)
            return text

        await txn.executemany(
            "INSERT INTO event_push_actions (user_id, room_id, stream_ordering, event_id, thread_id, notify,"
            " highlight, actions) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [
                (
                    r.user_id,
                    r.room_id,
                    r.stream_ordering,
                    r.event_id,
                    r.thread_id,
                    int(r.notify),
                    int(r.highlight),
                    encode(r.actions),
                )
                for r in rows
            ],
        )

    async def unread_counts(self, user_id: str, room_ids: Collection[str]) -> dict[str, RoomCounts]:
        """Per room (only rooms with something unread), per thread: the notifying and highlighting events
        after the receipts covering them.

        In two steps so that only unread rows are read, whatever history the user has: first where each
        room's unread part starts (its unthreaded read receipt or the user's membership event, whichever
        is newer) and each thread's receipt, then the rows after each room's start (a range of the
        primary key per room), which the thread receipts filter further."""
        out: dict[str, RoomCounts] = {}
        for part in chunks(sorted(room_ids), 200):
            marks = in_list(len(part))
            starts: dict[str, int] = {}
            for room_id, pos in await self._db.fetchall(
                "SELECT m.room_id, MAX(e.stream_ordering) FROM ("
                " SELECT room_id, event_id FROM receipts WHERE user_id = ?"
                f" AND receipt_type IN {_READ_TYPES} AND thread_id = '' AND room_id IN ({marks})"
                " UNION ALL SELECT room_id, event_id FROM room_memberships WHERE user_id = ?"
                f" AND room_id IN ({marks})"
                ") m JOIN events e ON e.event_id = m.event_id GROUP BY m.room_id",
                (user_id, *part, user_id, *part),
            ):
                starts[room_id] = int(pos)
            threads: dict[tuple[str, str], int] = {}
            for room_id, thread_id, pos in await self._db.fetchall(
                "SELECT r.room_id, r.thread_id, MAX(e.stream_ordering) FROM receipts r"
                " JOIN events e ON e.event_id = r.event_id WHERE r.user_id = ?"
                f" AND r.receipt_type IN {_READ_TYPES} AND r.thread_id != '' AND r.room_id IN ({marks})"
                " GROUP BY r.room_id, r.thread_id",
                (user_id, *part),
            ):
                threads[(room_id, thread_id)] = int(pos)
            ranges = " OR ".join(["(room_id = ? AND stream_ordering > ?)"] * len(part))
            params: list[Any] = [user_id]
            for room_id in part:
                params += [room_id, starts.get(room_id, 0)]
            for room_id, thread_id, ordering, notify, highlight in await self._db.fetchall(
                "SELECT room_id, thread_id, stream_ordering, notify, highlight FROM event_push_actions"
                f" WHERE user_id = ? AND ({ranges})",
                tuple(params),
            ):
                if ordering <= threads.get((room_id, thread_id), 0):
                    continue
                room = out.setdefault(room_id, RoomCounts({}))
                c = room.threads.get(thread_id, Counts())
                room.threads[thread_id] = Counts(
                    c.notification_count + int(notify), c.highlight_count + int(highlight)
                )
        return out

    async def notifications(
        self, user_id: str, before: int | None, limit: int, only_highlight: bool
    ) -> list[Notification]:
        """``GET /notifications``: the user's notifying events, newest first, before ``before``."""
        sql = (
            f"SELECT a.room_id, a.event_id, a.stream_ordering, a.actions, a.highlight,"
            f" CASE WHEN a.stream_ordering > {_READ_UPTO} THEN 0 ELSE 1 END"
            " FROM event_push_actions a WHERE a.user_id = ? AND a.notify = 1"
        )
        params: list[Any] = [user_id]
        if before is not None:
            sql += " AND a.stream_ordering < ?"
            params.append(before)
        if only_highlight:
            sql += " AND a.highlight = 1"
        sql += " ORDER BY a.stream_ordering DESC LIMIT ?"
        params.append(limit)
        rows = await self._db.fetchall(sql, tuple(params))
        return [Notification(r[0], r[1], int(r[2]), load_json(r[3]), bool(r[4]), bool(r[5])) for r in rows]

    async def pending_for_pusher(self, user_id: str, after: int, limit: int) -> list[Notification]:
        """The user's notifying events after ``after`` (a pusher's position), oldest first."""
        rows = await self._db.fetchall(
            "SELECT a.room_id, a.event_id, a.stream_ordering, a.actions, a.highlight, 0"
            " FROM event_push_actions a WHERE a.user_id = ? AND a.notify = 1 AND a.stream_ordering > ?"
            " ORDER BY a.stream_ordering LIMIT ?",
            (user_id, after, limit),
        )
        return [Notification(r[0], r[1], int(r[2]), load_json(r[3]), bool(r[4]), False) for r in rows]

    # -- what the push hook reads inside the persist transaction --------------------------------------

    @staticmethod
    async def member_counts_txn(
        txn: Any, room_id: str, server_name: str, data_types: Sequence[str]
    ) -> tuple[int, int, int]:
        """(joined members of the room, those of ``server_name``, the server's users with global account
        data of ``data_types`` counted up to one more than those members) as of this transaction, in one
        statement: the counts from the room's per-server rows (room_server_members, none per member), the
        last to choose the smaller side in ``members_account_data_txn``."""
        types = in_list(len(data_types))
        row = (
            await txn.fetchall(
                "SELECT (SELECT SUM(joined) FROM room_server_members WHERE room_id = ?),"
                " (SELECT SUM(joined) FROM room_server_members WHERE room_id = ? AND server_name = ?),"
                " (SELECT COUNT(*) FROM (SELECT 1 FROM account_data WHERE room_id = ''"
                f" AND data_type IN ({types}) LIMIT (SELECT COALESCE(SUM(joined), 0) + 1"
                " FROM room_server_members WHERE room_id = ? AND server_name = ?)) AS few)",
                (room_id, room_id, server_name, *data_types, room_id, server_name),
            )
        )[0]
        return int(row[0] or 0), int(row[1] or 0), int(row[2] or 0)

    @staticmethod
    async def local_members_txn(
        txn: Any, room_id: str, server_name: str, data_types: Sequence[str]
    ) -> tuple[list[str], dict[tuple[str, str], str]]:
        """The room's joined members of ``server_name`` (the only ones push rules are evaluated for), as
        of this transaction, with their global account data of ``data_types`` (as
        ``global_account_data_txn``), in one statement; no row per remote member."""
        types = in_list(len(data_types))
        rows = await txn.fetchall(
            "SELECT m.user_id, a.data_type, a.content FROM room_memberships m LEFT JOIN account_data a"
            f" ON a.user_id = m.user_id AND a.room_id = '' AND a.data_type IN ({types})"
            " WHERE m.room_id = ? AND m.membership = 'join' AND m.server_name = ?",
            (*data_types, room_id, server_name),
        )
        members: dict[str, None] = {}
        stored: dict[tuple[str, str], str] = {}
        for user_id, data_type, content in rows:
            members[str(user_id)] = None
            if data_type is not None:
                stored[(str(user_id), str(data_type))] = str(content)
        return list(members), stored

    @staticmethod
    async def global_account_data_txn(
        txn: Any, user_ids: Collection[str], data_types: Sequence[str]
    ) -> dict[tuple[str, str], str]:
        """The stored JSON text of each user's global account data of each of ``data_types`` (their push
        rules, their ignored users), by (user id, data type); what a user lacks is left out."""
        out: dict[tuple[str, str], str] = {}
        types = in_list(len(data_types))
        for part in chunks(sorted(user_ids)):
            rows = await txn.fetchall(
                "SELECT user_id, data_type, content FROM account_data"
                f" WHERE room_id = '' AND data_type IN ({types}) AND user_id IN ({in_list(len(part))})",
                (*data_types, *part),
            )
            for user_id, data_type, content in rows:
                out[(user_id, data_type)] = str(content)
        return out

    @staticmethod
    async def members_account_data_txn(
        txn: Any,
        room_id: str,
        server_name: str,
        data_types: Sequence[str],
        local_members: int,
        users_with_data: int,
    ) -> dict[tuple[str, str], str]:
        """``global_account_data_txn`` for the room's joined members of ``server_name`` (``local_members``
        of them), in one statement, from whichever side is smaller (``users_with_data``: the server's users
        with account data of these types, as ``member_counts_txn`` counts them): the room's local members,
        each looked up in the account data, or those users, each looked up in the room's members. So the
        work is that of min(members, users with their own rules), not of the room's size (a join into a
        room of 10,000 local members looked at every one of them)."""
        types = in_list(len(data_types))
        if users_with_data <= local_members:
            # CROSS JOIN: SQLite keeps this order (the account data outside); PostgreSQL plans it freely.
            sql = (
                "SELECT a.user_id, a.data_type, a.content FROM account_data a CROSS JOIN room_memberships m"
                f" WHERE a.room_id = '' AND a.data_type IN ({types}) AND m.room_id = ?"
                " AND m.user_id = a.user_id AND m.membership = 'join' AND m.server_name = ?"
            )
        else:
            sql = (
                "SELECT a.user_id, a.data_type, a.content FROM room_memberships m CROSS JOIN account_data a"
                f" WHERE a.user_id = m.user_id AND a.room_id = '' AND a.data_type IN ({types})"
                " AND m.room_id = ? AND m.membership = 'join' AND m.server_name = ?"
            )
        rows = await txn.fetchall(sql, (*data_types, room_id, server_name))
        return {(user_id, data_type): str(content) for user_id, data_type, content in rows}

    @staticmethod
    async def joined_among_txn(txn: Any, room_id: str, user_ids: Collection[str]) -> set[str]:
        """Which of ``user_ids`` are joined to the room, as of this transaction (one key lookup each)."""
        out: set[str] = set()
        for part in chunks(sorted(user_ids)):
            rows = await txn.fetchall(
                "SELECT user_id FROM room_memberships WHERE room_id = ? AND membership = 'join'"
                f" AND user_id IN ({in_list(len(part))})",
                (room_id, *part),
            )
            out.update(str(user) for (user,) in rows)
        return out

    @staticmethod
    async def state_events_txn(
        txn: Any, room_id: str, keys: Collection[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[str, str]]:
        """The current state events at ``keys`` the room has, as of this transaction: (event id, JSON)."""
        out: dict[tuple[str, str], tuple[str, str]] = {}
        for part in chunks(sorted(keys), 100):
            either = " OR ".join(["(c.type = ? AND c.state_key = ?)"] * len(part))
            rows = await txn.fetchall(
                "SELECT c.type, c.state_key, c.event_id, e.json FROM current_state c"
                f" JOIN events e ON e.event_id = c.event_id WHERE c.room_id = ? AND ({either})",
                (room_id, *(v for key in part for v in key)),
            )
            for event_type, state_key, event_id, text in rows:
                out[(event_type, state_key)] = (str(event_id), str(text))
        return out
