"""Event relationships (migration 600): written when events are persisted, read by /relations, /threads,
the bundled aggregations and thread-aware receipts.

Every read keeps only live children (non-outlier, not rejected, not soft-failed) that are not redacted: a
redaction removes the relationship (CS "Aggregations of child events"), and the row stays so that the
stored history need not change. A child counts only in its own room (CS "Forming relationships between
events": relationships across rooms are ignored).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ranvier.protocol.events import Pdu
from ranvier.protocol.relations import AGGREGATED, REFERENCE, REPLACE, THREAD, relation_of

from ..interfaces import TopoToken
from .engine import Database, Reader, chunks, in_list
from .events import live

_CHILD = f"{live('e')} AND e.redacted_by IS NULL"
# CS "Relationships API": "Homeservers SHOULD traverse at least 3 levels of relationships".
RECURSION_DEPTH = 3
# Spec "Threaded read receipts": "a maximum of 3 hops is recommended".
THREAD_HOPS = 3


@dataclass(frozen=True, slots=True)
class ThreadSummary:
    count: int
    latest_event_id: str
    user_participated: bool  # the user sent one of the thread's events (the root is checked by the caller)


@dataclass(frozen=True, slots=True)
class ChildRow:
    """An ``m.replace`` or ``m.reference`` child, enough to pick the latest edit without loading it."""

    parent_id: str
    rel_type: str
    event_id: str
    sender: str
    type: str
    origin_server_ts: int


@dataclass(frozen=True, slots=True)
class ThreadRoot:
    event_id: str
    latest: TopoToken  # the position of the thread's latest event


# The relation's room, compared so that no index on it is used: the lookups go through the parent's index
# (relates_to_id); planners otherwise liked (room_id, rel_type) and read every relation of the room. The child
# event's own room_id equals the row's (both come from the persisted batch's room), so events is not asked.
_IN_ROOM = "r.room_id || '' = ?"


def _within(
    position: tuple[int, int], start: TopoToken | None, end: TopoToken | None, direction: str
) -> bool:
    """Whether ``position`` is in a page from ``start`` towards ``end`` (the SQL bounds of ``children``)."""
    if direction == "b":
        return (start is None or position <= (start.depth, start.stream)) and (
            end is None or position > (end.depth, end.stream)
        )
    return (start is None or position > (start.depth, start.stream)) and (
        end is None or position <= (end.depth, end.stream)
    )


def _not_ignored(ignored: Collection[str]) -> tuple[str, list[str]]:
    if not ignored:
        return "", []
    users = sorted(ignored)
    return f" AND e.sender NOT IN ({in_list(len(users))})", users


async def thread_root_of(reader: Reader, event_id: str) -> str | None:
    """The thread root an event is in (CS "Threaded read receipts": an ``m.thread`` child, or an event whose
    parents lead to one within ``THREAD_HOPS`` relationships), or None for the main timeline. ``reader``
    may be the persist transaction, which already holds the batch's relations."""
    current = event_id
    for _ in range(THREAD_HOPS):
        row = await reader.fetchone(
            "SELECT relates_to_id, rel_type FROM event_relations WHERE event_id = ?", (current,)
        )
        if row is None:
            return None
        if row[1] == THREAD:
            return str(row[0])
        current = str(row[0])
    return None


class RelationStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    @staticmethod
    async def insert_txn(txn: Any, room_id: str, pdus: Iterable[Pdu]) -> None:
        """Record the relationship of each event that declares one (called by the persister)."""
        rows = []
        for pdu in pdus:
            relation = relation_of(pdu.content)
            if relation is not None:
                rows.append((pdu.event_id, room_id, relation.parent_id, relation.rel_type, relation.key))
        if rows:
            await txn.executemany(
                "INSERT INTO event_relations (event_id, room_id, relates_to_id, rel_type, aggregation_key)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                rows,
            )

    async def children(
        self,
        room_id: str,
        parent_id: str,
        *,
        rel_type: str | None,
        event_type: str | None,
        from_token: TopoToken | None,
        to_token: TopoToken | None,
        direction: str,
        limit: int,
        depth: int,
        ignored: Collection[str] = (),
    ) -> tuple[list[str], TopoToken | None]:
        """A page of the children of ``parent_id`` (up to ``depth`` relationships away, through children
        that match the filters themselves), in topological order (newest first for ``b``), and the token
        after the page, or None when nothing follows it."""
        filters = ""
        filter_params: list[Any] = []
        if rel_type is not None:
            filters += " AND r.rel_type = ?"
            filter_params.append(rel_type)
        if event_type is not None:
            filters += " AND e.type = ?"
            filter_params.append(event_type)
        skip, skip_params = _not_ignored(ignored)
        filters += skip
        filter_params += skip_params
        bounds = ""
        bound_params: list[Any] = []
        if from_token is not None:
            bounds += f" AND (e.topo_depth, e.topo_order) {'<=' if direction == 'b' else '>'} (?, ?)"
            bound_params += [from_token.depth, from_token.stream]
        if to_token is not None:
            bounds += f" AND (e.topo_depth, e.topo_order) {'>' if direction == 'b' else '<='} (?, ?)"
            bound_params += [to_token.depth, to_token.stream]
        order = "DESC" if direction == "b" else "ASC"
        select = (
            "SELECT r.event_id, e.topo_depth, e.topo_order FROM event_relations r"
            f" JOIN events e ON e.event_id = r.event_id WHERE {_IN_ROOM} AND {_CHILD}{filters}"
        )
        if depth <= 1:
            rows = await self._db.fetchall(
                f"{select} AND r.relates_to_id = ?{bounds}"
                f" ORDER BY e.topo_depth {order}, e.topo_order {order} LIMIT ?",
                (room_id, *filter_params, parent_id, *bound_params, limit + 1),
            )
            found = [(str(r[0]), int(r[1]), int(r[2])) for r in rows]
        else:
            # Level by level (a recursive CTE joining events at each step planned badly on SQLite), every
            # level through the children that pass the filters; the page is cut from all of them.
            seen: dict[str, tuple[int, int]] = {}
            level = [parent_id]
            for _ in range(depth):
                nxt: list[str] = []
                for part in chunks(level):
                    for event_id, d, o in await self._db.fetchall(
                        f"{select} AND r.relates_to_id IN ({in_list(len(part))})",
                        (room_id, *filter_params, *part),
                    ):
                        if event_id not in seen and event_id != parent_id:
                            seen[event_id] = (int(d), int(o))
                            nxt.append(event_id)
                if not nxt:
                    break
                level = nxt
            found = sorted(((e, d, o) for e, (d, o) in seen.items()), key=lambda r: (r[1], r[2]))
            if direction == "b":
                found.reverse()
            found = [r for r in found if _within((r[1], r[2]), from_token, to_token, direction)][: limit + 1]
        more = len(found) > limit
        found = found[:limit]
        if not found or not more:
            return [r[0] for r in found], None
        _, last_depth, last_order = found[-1]
        token = TopoToken(last_depth, last_order - 1 if direction == "b" else last_order)
        return [r[0] for r in found], token

    async def thread_summaries(
        self, room_id: str, root_ids: Sequence[str], user_id: str, ignored: Collection[str] = ()
    ) -> dict[str, ThreadSummary]:
        """For each root with live ``m.thread`` children: their count, the topologically latest one and
        whether ``user_id`` sent one of them (CS "Server-side aggregation of m.thread relationships");
        children of ignored users do not count."""
        out: dict[str, ThreadSummary] = {}
        skip, skip_params = _not_ignored(ignored)
        for part in chunks(list(dict.fromkeys(root_ids))):
            rows = await self._db.fetchall(
                "SELECT root, event_id, n, total, mine FROM ("
                " SELECT r.relates_to_id AS root, r.event_id,"
                " ROW_NUMBER() OVER (PARTITION BY r.relates_to_id"
                " ORDER BY e.topo_depth DESC, e.topo_order DESC) AS n,"
                " COUNT(*) OVER (PARTITION BY r.relates_to_id) AS total,"
                " MAX(CASE WHEN e.sender = ? THEN 1 ELSE 0 END) OVER (PARTITION BY r.relates_to_id) AS mine"
                " FROM event_relations r JOIN events e ON e.event_id = r.event_id"
                f" WHERE r.relates_to_id IN ({in_list(len(part))}) AND r.rel_type = ? AND {_IN_ROOM}"
                f" AND {_CHILD}{skip}"
                ") x WHERE n = 1",
                (user_id, *part, THREAD, room_id, *skip_params),
            )
            for root, event_id, _, total, mine in rows:
                out[root] = ThreadSummary(int(total), event_id, bool(mine))
        return out

    async def edits_and_references(
        self, room_id: str, parent_ids: Sequence[str], ignored: Collection[str] = ()
    ) -> list[ChildRow]:
        """The live ``m.replace`` and ``m.reference`` children of these events."""
        out: list[ChildRow] = []
        skip, skip_params = _not_ignored(ignored)
        for part in chunks(list(dict.fromkeys(parent_ids))):
            rows = await self._db.fetchall(
                "SELECT r.relates_to_id, r.rel_type, e.event_id, e.sender, e.type, e.origin_server_ts"
                " FROM event_relations r JOIN events e ON e.event_id = r.event_id"
                f" WHERE r.relates_to_id IN ({in_list(len(part))}) AND r.rel_type IN (?, ?)"
                f" AND {_IN_ROOM} AND {_CHILD}{skip}"
                " ORDER BY e.topo_depth, e.topo_order",
                (*part, REPLACE, REFERENCE, room_id, *skip_params),
            )
            out += [ChildRow(r[0], r[1], r[2], r[3], r[4], int(r[5])) for r in rows]
        return out

    async def has_aggregated_children(self, room_id: str, parent_ids: Sequence[str]) -> set[str]:
        """Which of these events have any relation row of an aggregated type (a cheap first look, before
        the full aggregation queries, for the common page where no event has children)."""
        out: set[str] = set()
        for part in chunks(list(dict.fromkeys(parent_ids))):
            rows = await self._db.fetchall(
                "SELECT DISTINCT relates_to_id FROM event_relations"
                f" WHERE relates_to_id IN ({in_list(len(part))}) AND rel_type IN ({in_list(len(AGGREGATED))})"
                " AND room_id || '' = ?",
                (*part, *AGGREGATED, room_id),
            )
            out.update(r[0] for r in rows)
        return out

    async def thread_roots(
        self,
        room_id: str,
        *,
        participant: str | None,
        from_token: TopoToken | None,
        limit: int,
        ignored: Collection[str] = (),
    ) -> tuple[list[ThreadRoot], TopoToken | None]:
        """A page of the room's thread roots, ordered by their latest thread event, newest first (CS
        "GET /threads"); with ``participant``, only threads they started or replied in."""
        skip, skip_params = _not_ignored(ignored)
        sql = (
            "SELECT x.root, x.d, x.o FROM ("
            " SELECT r.relates_to_id AS root, e.topo_depth AS d, e.topo_order AS o,"
            " ROW_NUMBER() OVER (PARTITION BY r.relates_to_id"
            " ORDER BY e.topo_depth DESC, e.topo_order DESC) AS n,"
            " MAX(CASE WHEN e.sender = ? THEN 1 ELSE 0 END) OVER (PARTITION BY r.relates_to_id) AS mine"
            " FROM event_relations r JOIN events e ON e.event_id = r.event_id"
            f" WHERE r.room_id = ? AND r.rel_type = ? AND {_CHILD}{skip}"
            ") x JOIN events p ON p.event_id = x.root"
            f" WHERE x.n = 1 AND p.room_id = ? AND {live('p')}"
        )
        params: list[Any] = [participant or "", room_id, THREAD, *skip_params, room_id]
        if participant is not None:
            sql += " AND (x.mine = 1 OR p.sender = ?)"
            params.append(participant)
        if from_token is not None:
            sql += " AND (x.d, x.o) <= (?, ?)"
            params += [from_token.depth, from_token.stream]
        sql += " ORDER BY x.d DESC, x.o DESC LIMIT ?"
        rows = await self._db.fetchall(sql, (*params, limit + 1))
        roots = [ThreadRoot(r[0], TopoToken(int(r[1]), int(r[2]))) for r in rows]
        if len(roots) <= limit:
            return roots, None
        roots = roots[:limit]
        last = roots[-1].latest
        return roots, TopoToken(last.depth, last.stream - 1)

    async def thread_of(self, event_id: str) -> str | None:
        """The thread root an event is in, or None for the main timeline (see ``thread_root_of``)."""
        return await thread_root_of(self._db, event_id)

    async def is_thread_root(self, event_id: str) -> bool:
        """Whether any event holds an ``m.thread`` relationship to ``event_id``."""
        row = await self._db.fetchone(
            "SELECT 1 FROM event_relations WHERE relates_to_id = ? AND rel_type = ?", (event_id, THREAD)
        )
        return row is not None

    async def rel_type_of(self, event_id: str) -> str | None:
        """The ``rel_type`` of the relationship an event declares, if it declares one."""
        value = await self._db.fetchval(
            "SELECT rel_type FROM event_relations WHERE event_id = ?", (event_id,)
        )
        return None if value is None else str(value)

    async def annotation_exists(
        self, room_id: str, parent_id: str, sender: str, event_type: str, key: str
    ) -> bool:
        """Whether ``sender`` already has a live, unredacted annotation of this type and key on the parent
        (CS "Avoiding duplicate annotations")."""
        row = await self._db.fetchone(
            "SELECT 1 FROM event_relations r JOIN events e ON e.event_id = r.event_id"
            " WHERE r.relates_to_id = ? AND r.rel_type = 'm.annotation' AND r.aggregation_key = ?"
            f" AND {_IN_ROOM} AND e.sender = ? AND e.type = ? AND {_CHILD}",
            (parent_id, key, room_id, sender, event_type),
        )
        return row is not None
