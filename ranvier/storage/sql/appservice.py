"""The durable per-appservice queue (events, ephemeral data) and the transactions built from it.

Events are queued by ``enqueue_events_txn`` inside the transaction that persists them (the persister's
in-transaction hook), so a committed event is always queued or delivered. ``create_txn`` turns the oldest
queued rows into one numbered transaction whose body is stored as sent; ``complete_txn`` drops it once the
appservice accepted it. After a restart, ``pending_txns`` gives back the unsent ones, same ids and bodies.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from .aux_streams import dump_json, load_json, next_stream_pos
from .engine import Database, Txn, chunks, in_list
from .receipts import _COLUMNS as _RECEIPT_COLUMNS
from .receipts import Receipt, _receipt

STREAM = "appservice"


@dataclass(frozen=True, slots=True)
class QueuedItem:
    seq: int
    value: str  # an event id, or the JSON of an ephemeral item
    queued_ts: int
    kind: str = "event"  # or 'ephemeral' (typing, receipts), 'to_device'


@dataclass(frozen=True, slots=True)
class FeedItem:
    """One ephemeral item for some appservices."""

    as_ids: list[str]
    kind: str
    content: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StoredTxn:
    txn_id: int
    body: dict[str, Any]
    event_count: int
    oldest_ts: int


@dataclass(frozen=True, slots=True)
class QueueStats:
    queued_events: int
    queued_ephemeral: int
    unsent_txns: int
    oldest_ts: int | None


class AppServiceStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    @property
    def db(self) -> Database:
        """For reads of room membership and aliases when deciding which appservices a room concerns."""
        return self._db

    async def receipts_between(self, since: int, upto: int, limit: int) -> list[Receipt]:
        """Every room's receipts with since < stream_pos <= upto, oldest first, at most ``limit``."""
        rows = await self._db.fetchall(
            f"SELECT {_RECEIPT_COLUMNS} FROM receipts WHERE stream_pos > ? AND stream_pos <= ?"
            " ORDER BY stream_pos LIMIT ?",
            (since, upto, limit),
        )
        return [_receipt(r) for r in rows]

    async def enqueue_events_txn(self, txn: Txn, rows: Iterable[tuple[str, str]], now_ms: int) -> None:
        """Queue (appservice id, event id) pairs in the given order, inside the caller's transaction.
        Queueing an event twice for one appservice is a no-op (a retried persist)."""
        items = list(rows)
        if not items:
            return
        last = await next_stream_pos(txn, STREAM, len(items))
        first = last - len(items) + 1
        await txn.executemany(
            "INSERT INTO appservice_queue (as_id, seq, event_id, queued_ts) VALUES (?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            [(as_id, first + i, event_id, now_ms) for i, (as_id, event_id) in enumerate(items)],
        )

    async def enqueue_ephemeral(self, as_ids: Iterable[str], edu: dict[str, Any], now_ms: int) -> None:
        await self.enqueue_feed([FeedItem(sorted(set(as_ids)), "ephemeral", edu)], now_ms)

    async def enqueue_feed(
        self, items: Iterable[FeedItem], now_ms: int, stream: str | None = None, pos: int | None = None
    ) -> None:
        """Queue ephemeral items in order and, in the same transaction, record how far the feed read
        ``stream`` (``pos``)."""
        rows = [
            (as_id, item.kind, dump_json(item.content))
            for item in items
            for as_id in sorted(set(item.as_ids))
        ]
        async with self._db.transaction() as txn:
            if rows:
                last = await next_stream_pos(txn, STREAM, len(rows))
                first = last - len(rows) + 1
                await txn.executemany(
                    "INSERT INTO appservice_ephemeral (as_id, seq, kind, content, queued_ts)"
                    " VALUES (?, ?, ?, ?, ?)",
                    [(as_id, first + i, kind, text, now_ms) for i, (as_id, kind, text) in enumerate(rows)],
                )
            if stream is not None and pos is not None:
                await txn.execute(
                    "INSERT INTO appservice_feed_positions (stream, pos) VALUES (?, ?)"
                    " ON CONFLICT (stream) DO UPDATE SET pos = excluded.pos",
                    (stream, pos),
                )

    async def feed_position(self, stream: str) -> int | None:
        value = await self._db.fetchval(
            "SELECT pos FROM appservice_feed_positions WHERE stream = ?", (stream,)
        )
        return None if value is None else int(value)

    async def stream_position(self, stream: str) -> int:
        """The current position of one of the server's aux streams ('receipts', 'to_device')."""
        value = await self._db.fetchval("SELECT pos FROM aux_stream_positions WHERE name = ?", (stream,))
        return int(value or 0)

    async def device_list_changes_between(self, since: int, upto: int, limit: int) -> list[tuple[int, str]]:
        """(position, user id) of device list changes in (since, upto], oldest first, at most ``limit``."""
        rows = await self._db.fetchall(
            "SELECT stream_pos, user_id FROM device_list_changes WHERE stream_pos > ? AND stream_pos <= ?"
            " ORDER BY stream_pos LIMIT ?",
            (since, upto, limit),
        )
        return [(int(r[0]), r[1]) for r in rows]

    async def events_position(self) -> int:
        """The event stream's current position (the newest stream ordering; backfill goes negative)."""
        value = await self._db.fetchval("SELECT MAX(stream_ordering) FROM events")
        return max(0, int(value or 0))

    async def departures_between(self, since: int, upto: int, limit: int) -> list[tuple[int, str, str]]:
        """(stream ordering, room id, user id) of accepted timeline leaves, kicks and bans in (since, upto],
        oldest first, at most ``limit``."""
        rows = await self._db.fetchall(
            "SELECT stream_ordering, room_id, state_key FROM events WHERE stream_ordering > ?"
            " AND stream_ordering <= ? AND type = 'm.room.member' AND membership IN ('leave', 'ban')"
            " AND NOT outlier AND rejected_reason IS NULL AND NOT soft_failed"
            " ORDER BY stream_ordering LIMIT ?",
            (since, upto, limit),
        )
        return [(int(r[0]), r[1], r[2]) for r in rows]

    async def users_sharing_a_room(self, user_id: str) -> list[str]:
        """Users joined to a room that ``user_id`` is joined to (``user_id`` included)."""
        rows = await self._db.fetchall(
            "SELECT DISTINCT b.user_id FROM room_memberships a"
            " JOIN room_memberships b ON a.room_id = b.room_id"
            " WHERE a.user_id = ? AND a.membership = 'join' AND b.membership = 'join'",
            (user_id,),
        )
        return [r[0] for r in rows]

    async def joined_rooms_of(self, user_ids: Collection[str]) -> dict[str, set[str]]:
        """The rooms each of ``user_ids`` is joined to (users joined nowhere are left out)."""
        rooms: dict[str, set[str]] = {}
        for part in chunks(sorted(set(user_ids))):
            rows = await self._db.fetchall(
                f"SELECT user_id, room_id FROM room_memberships WHERE membership = 'join'"
                f" AND user_id IN ({in_list(len(part))})",
                tuple(part),
            )
            for user_id, room_id in rows:
                rooms.setdefault(user_id, set()).add(room_id)
        return rooms

    async def joined_members_of(self, room_ids: Collection[str]) -> dict[str, list[str]]:
        """The joined members of each of ``room_ids`` (rooms with none are left out)."""
        members: dict[str, list[str]] = {}
        for part in chunks(sorted(set(room_ids))):
            rows = await self._db.fetchall(
                f"SELECT room_id, user_id FROM room_memberships WHERE membership = 'join'"
                f" AND room_id IN ({in_list(len(part))})",
                tuple(part),
            )
            for room_id, user_id in rows:
                members.setdefault(room_id, []).append(user_id)
        return members

    async def to_device_between(
        self, since: int, upto: int, limit: int
    ) -> list[tuple[int, str, str, dict[str, Any]]]:
        """(position, user id, device id, message) of local devices' to-device messages in (since, upto],
        oldest first, at most ``limit``."""
        rows = await self._db.fetchall(
            "SELECT stream_pos, user_id, device_id, message_json FROM to_device_inbox"
            " WHERE stream_pos > ? AND stream_pos <= ? ORDER BY stream_pos LIMIT ?",
            (since, upto, limit),
        )
        return [(int(r[0]), r[1], r[2], load_json(r[3])) for r in rows]

    async def peek(
        self, as_id: str, max_events: int, max_ephemeral: int
    ) -> tuple[list[QueuedItem], list[QueuedItem]]:
        """The oldest queued events and ephemeral EDUs of one appservice, in queue order."""
        async with self._db.snapshot() as txn:
            events = await txn.fetchall(
                "SELECT seq, event_id, queued_ts FROM appservice_queue WHERE as_id = ? ORDER BY seq LIMIT ?",
                (as_id, max_events),
            )
            ephemeral = await txn.fetchall(
                "SELECT seq, content, queued_ts, kind FROM appservice_ephemeral WHERE as_id = ?"
                " ORDER BY seq LIMIT ?",
                (as_id, max_ephemeral),
            )
        return (
            [QueuedItem(int(r[0]), r[1], int(r[2])) for r in events],
            [QueuedItem(int(r[0]), r[1], int(r[2]), r[3]) for r in ephemeral],
        )

    async def create_txn(
        self,
        as_id: str,
        event_seqs: Collection[int],
        ephemeral_seqs: Collection[int],
        body: dict[str, Any],
        oldest_ts: int,
    ) -> int:
        """Move the given queue rows into a new transaction with ``body``; returns its id (never reused)."""
        async with self._db.transaction() as txn:
            for table, seqs in (("appservice_queue", event_seqs), ("appservice_ephemeral", ephemeral_seqs)):
                for chunk in chunks(sorted(seqs)):
                    await txn.execute(
                        f"DELETE FROM {table} WHERE as_id = ? AND seq IN ({in_list(len(chunk))})",
                        (as_id, *chunk),
                    )
            txn_id = await txn.fetchval(
                "UPDATE appservice_txn_ids SET last_txn_id = last_txn_id + 1 WHERE as_id = ?"
                " RETURNING last_txn_id",
                (as_id,),
            )
            if txn_id is None:
                txn_id = 1
                await txn.execute(
                    "INSERT INTO appservice_txn_ids (as_id, last_txn_id) VALUES (?, ?)", (as_id, txn_id)
                )
            await txn.execute(
                "INSERT INTO appservice_txns (as_id, txn_id, body, event_count, oldest_ts)"
                " VALUES (?, ?, ?, ?, ?)",
                (as_id, int(txn_id), dump_json(body), len(body.get("events", ())), oldest_ts),
            )
        return int(txn_id)

    async def pending_txns(self, as_id: str, limit: int = 10) -> list[StoredTxn]:
        """Transactions built but not yet accepted, oldest first."""
        rows = await self._db.fetchall(
            "SELECT txn_id, body, event_count, oldest_ts FROM appservice_txns WHERE as_id = ?"
            " ORDER BY txn_id LIMIT ?",
            (as_id, limit),
        )
        return [StoredTxn(int(r[0]), load_json(r[1]), int(r[2]), int(r[3])) for r in rows]

    async def complete_txn(self, as_id: str, txn_id: int) -> None:
        async with self._db.transaction() as txn:
            await txn.execute("DELETE FROM appservice_txns WHERE as_id = ? AND txn_id = ?", (as_id, txn_id))

    async def set_room_listed(self, as_id: str, network_id: str, room_id: str, listed: bool) -> None:
        """Publish (or withdraw) a room in an appservice's directory for one network."""
        async with self._db.transaction() as txn:
            if listed:
                await txn.execute(
                    "INSERT INTO appservice_room_list (as_id, network_id, room_id) VALUES (?, ?, ?)"
                    " ON CONFLICT DO NOTHING",
                    (as_id, network_id, room_id),
                )
            else:
                await txn.execute(
                    "DELETE FROM appservice_room_list WHERE as_id = ? AND network_id = ? AND room_id = ?",
                    (as_id, network_id, room_id),
                )

    async def listed_rooms(self, as_id: str | None = None, network_id: str | None = None) -> list[str]:
        """Rooms published by one appservice for one network, or by every appservice (None, None)."""
        if as_id is None:
            rows = await self._db.fetchall("SELECT DISTINCT room_id FROM appservice_room_list ORDER BY 1")
        else:
            rows = await self._db.fetchall(
                "SELECT room_id FROM appservice_room_list WHERE as_id = ? AND network_id = ? ORDER BY 1",
                (as_id, network_id or ""),
            )
        return [r[0] for r in rows]

    async def appservices_with_queue(self) -> list[str]:
        """Ids of every appservice that has something queued or unsent."""
        rows = await self._db.fetchall(
            "SELECT as_id FROM appservice_queue UNION SELECT as_id FROM appservice_ephemeral"
            " UNION SELECT as_id FROM appservice_txns ORDER BY 1"
        )
        return [r[0] for r in rows]

    async def stats(self, as_id: str) -> QueueStats:
        async with self._db.snapshot() as txn:
            events = await txn.fetchone(
                "SELECT COUNT(*), MIN(queued_ts) FROM appservice_queue WHERE as_id = ?", (as_id,)
            )
            ephemeral = await txn.fetchone(
                "SELECT COUNT(*), MIN(queued_ts) FROM appservice_ephemeral WHERE as_id = ?", (as_id,)
            )
            txns = await txn.fetchone(
                "SELECT COUNT(*), COALESCE(SUM(event_count), 0), MIN(oldest_ts) FROM appservice_txns"
                " WHERE as_id = ?",
                (as_id,),
            )
        assert events is not None and ephemeral is not None and txns is not None
        oldest = [int(v) for v in (events[1], ephemeral[1], txns[2]) if v is not None]
        return QueueStats(
            queued_events=int(events[0]) + int(txns[1]),
            queued_ephemeral=int(ephemeral[0]),
            unsent_txns=int(txns[0]),
            oldest_ts=min(oldest) if oldest else None,
        )
