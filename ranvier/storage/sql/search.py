"""The full-text index of room events (CS "Server Side Search", category ``room_events``) and its queries.

SQLite: an FTS5 table (Porter stemmer) whose rowid is the event's stream ordering. PostgreSQL: a table with
an 'english' tsvector under a GIN index, as Synapse does. Both are written by ``index_persisted``, which the
persister calls inside each batch's transaction (local, federated and backfilled events alike), and lose an
event's row when it is redacted. The schema and the backfill of existing events: migration 610.
Encrypted rooms: their messages are ``m.room.encrypted``, which has nothing searchable ("The search will
*not* include rooms that are end to end encrypted"); plain messages sent before a room turned encryption
on stay searchable, as in Synapse.

Queries return candidates in the order asked for, restricted by SQL to rooms where the user has a
membership, and in rooms they are no longer joined to, to events up to their membership change. What
history visibility then allows is decided per event by the caller (``ranvier.search.room_events``), so the
counts here are the spec's approximation ("Homeservers may give an estimate").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ranvier.protocol.events import Pdu
from ranvier.search.terms import SearchQuery

from .engine import Database, Dialect, Txn, chunks, in_list

# CS "room_events": the keys searched, and the event type each belongs to.
KEY_TYPES = {"content.body": "m.room.message", "content.name": "m.room.name", "content.topic": "m.room.topic"}
SEARCHED_TYPES = frozenset(KEY_TYPES.values())
# Filter lists longer than this are refused by the API before they reach SQL (one IN list each).
MAX_FILTER_LIST = 400
Order = Literal["rank", "recent"]


def searchable_text(event_type: str, content: dict[str, Any]) -> str | None:
    """The text of an event that the search covers, or None when it has none."""
    if event_type == "m.room.message":
        value = content.get("body")
    elif event_type == "m.room.name":
        value = content.get("name")
    elif event_type == "m.room.topic":
        # CS "room_events": content.topic "as well as the body of the text/plain representation in
        # content['m.topic']" (a representation without a mimetype is text/plain).
        parts = [content.get("topic")]
        topic = content.get("m.topic")
        reps = topic.get("m.text") if isinstance(topic, dict) else None
        for rep in reps if isinstance(reps, list) else []:
            if isinstance(rep, dict) and rep.get("mimetype", "text/plain") == "text/plain":
                parts.append(rep.get("body"))
                break
        texts = [p for p in parts if isinstance(p, str) and p]
        value = " ".join(dict.fromkeys(texts)) if texts else None
    else:
        return None
    if not isinstance(value, str) or not value:
        return None
    return value.replace("\x00", " ")  # PostgreSQL text cannot hold U+0000; it is no word anyway


async def index_persisted(
    txn: Txn, dialect: Dialect, events: Sequence[tuple[Pdu, int]], redacted: Sequence[str]
) -> None:
    """Index the live events of a persisted batch (event, stream ordering) and drop the rows of events the
    batch redacted. Runs inside the persister's transaction, so the index commits with the events."""
    gone = set(redacted)
    rows = [
        (pdu, stream, text)
        for pdu, stream in events
        if pdu.event_id not in gone and (text := searchable_text(pdu.type, pdu.content)) is not None
    ]
    if dialect == "sqlite":
        if rows:
            # OR REPLACE: a row left at this rowid (there should be none) must not fail the events' batch.
            await txn.executemany(
                "INSERT OR REPLACE INTO event_search (rowid, value) VALUES (?, ?)",
                [(s, t) for _, s, t in rows],
            )
        for part in chunks(list(gone)):
            await txn.execute(
                "DELETE FROM event_search WHERE rowid IN"
                f" (SELECT stream_ordering FROM events WHERE event_id IN ({in_list(len(part))}))",
                tuple(part),
            )
        return
    if rows:
        await txn.executemany(
            "INSERT INTO event_search (event_id, room_id, stream_ordering, value, vector)"
            " VALUES (?, ?, ?, ?, to_tsvector('english', ?)) ON CONFLICT (event_id) DO NOTHING",
            [(p.event_id, p.room_id, s, t, t) for p, s, t in rows],
        )
    for part in chunks(list(gone)):
        await txn.execute(f"DELETE FROM event_search WHERE event_id IN ({in_list(len(part))})", tuple(part))


@dataclass(frozen=True, slots=True)
class SearchScope:
    """What the SQL narrows candidates to: the filter's lists (None: no restriction) and a group's key."""

    rooms: Sequence[str] | None = None
    not_rooms: Sequence[str] = ()
    senders: Sequence[str] | None = None
    not_senders: Sequence[str] = ()
    types: Sequence[str] = tuple(sorted(SEARCHED_TYPES))
    room_id: str | None = None  # a room_id group's value
    sender: str | None = None  # a sender group's value


@dataclass(frozen=True, slots=True)
class SearchHit:
    event_id: str
    room_id: str
    sender: str
    stream_ordering: int
    rank: float
    text: str


class SearchStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def _from_where(self, user_id: str, query: SearchQuery, scope: SearchScope) -> tuple[str, list[Any]]:
        if self._db.dialect == "sqlite":
            # CROSS JOIN fixes SQLite's join order: the full-text matches first, then their events. Left to
            # itself the planner may start from the user's rooms and probe the index once per event of
            # them (for a COUNT: 250 ms instead of 1 ms over 1,000 messages).
            sql = (
                " FROM event_search s CROSS JOIN events e ON e.stream_ordering = s.rowid"
                " CROSS JOIN room_memberships m ON m.room_id = e.room_id AND m.user_id = ?"
                " WHERE event_search MATCH ?"
            )
            params: list[Any] = [user_id, query.fts5()]
        else:
            sql = (
                " FROM event_search s CROSS JOIN to_tsquery('english', ?) q"
                " JOIN events e ON e.event_id = s.event_id"
                " JOIN room_memberships m ON m.room_id = e.room_id AND m.user_id = ?"
                " WHERE s.vector @@ q"
            )
            params = [query.tsquery(), user_id]
        # CS "Server Side Search": "it won't include events in rooms that happened after you left".
        # The membership event is looked up only for rooms the user is not joined to (a 20% faster COUNT).
        sql += (
            " AND (m.membership = 'join' OR e.stream_ordering <="
            " (SELECT me.stream_ordering FROM events me WHERE me.event_id = m.event_id))"
        )
        conditions: list[tuple[str, Sequence[str] | None, bool]] = [
            ("e.room_id", scope.rooms, True),
            ("e.room_id", scope.not_rooms, False),
            ("e.sender", scope.senders, True),
            ("e.sender", scope.not_senders, False),
            ("e.type", scope.types, True),
            ("e.room_id", None if scope.room_id is None else [scope.room_id], True),
            ("e.sender", None if scope.sender is None else [scope.sender], True),
        ]
        for column, values, include in conditions:
            if values is None or (not include and not values):
                continue
            if not values:
                sql += " AND 1 = 0"
                continue
            sql += f" AND {column} {'IN' if include else 'NOT IN'} ({in_list(len(values))})"
            params += list(values)
        return sql, params

    async def search(
        self,
        user_id: str,
        query: SearchQuery,
        scope: SearchScope,
        order: Order,
        limit: int,
        *,
        offset: int = 0,
        before_stream: int | None = None,
    ) -> list[SearchHit]:
        """Up to ``limit`` candidates, best first (``rank``, from ``offset``) or newest first (``recent``,
        older than ``before_stream``)."""
        if query.empty:
            return []
        sql, params = self._from_where(user_id, query, scope)
        if self._db.dialect == "sqlite":
            rank = "-bm25(event_search)"  # bm25 is lower for better matches
            text = "s.value"
        else:
            rank = "ts_rank_cd(s.vector, q)"
            text = "s.value"
        if order == "recent":
            # On SQLite the rowid is the stream ordering: FTS5 then reads its matches newest first and stops
            # at the limit, instead of sorting all of them.
            stream = "s.rowid" if self._db.dialect == "sqlite" else "e.stream_ordering"
            if before_stream is not None:
                sql += f" AND {stream} < ?"
                params.append(before_stream)
            sql += f" ORDER BY {stream} DESC LIMIT ?"
            params.append(limit)
        else:
            sql += " ORDER BY rank DESC, e.stream_ordering DESC LIMIT ? OFFSET ?"
            params += [limit, offset]
        rows = await self._db.fetchall(
            f"SELECT e.event_id, e.room_id, e.sender, e.stream_ordering, {rank} AS rank, {text}{sql}",
            tuple(params),
        )
        return [SearchHit(r[0], r[1], r[2], int(r[3]), float(r[4]), str(r[5])) for r in rows]

    async def count(self, user_id: str, query: SearchQuery, scope: SearchScope) -> int:
        """How many candidates there are (before history visibility is applied to each)."""
        if query.empty:
            return 0
        sql, params = self._from_where(user_id, query, scope)
        return int(await self._db.fetchval(f"SELECT COUNT(*){sql}", tuple(params)))
