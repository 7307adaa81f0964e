"""The invariants, read from each server's own database, never by paging.

No client ever pages ``/messages`` backwards here (which would make a server backfill and hide a hole). The
timelines are read from the databases directly, read-only: SQLite through a ``mode=ro`` connection, PostgreSQL
in a read-only transaction. A server's timeline is its non-outlier, non-rejected, non-soft-failed events,
ordered by ``(topo_depth, topo_order)``, the order its ``/messages`` serves (for Synapse: not an outlier, no
row in ``rejections``, not ``soft_failed`` in its internal metadata, ordered by ``(topological_ordering,
stream_ordering)``). ``/state`` is read through the
client API (``GET /rooms/{roomId}/state``, which never fetches anything over federation).
"""

from __future__ import annotations

import asyncio
import bisect
import json
import sqlite3
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import asyncpg

from .cluster import ChaosServer
from .workload import User

EVENTS_SQL = (
    "SELECT event_id, type, depth, topo_depth, topo_order, outlier, rejected_reason, soft_failed, json "
    "FROM events WHERE room_id = {p}"
)
# Synapse: the timeline order is (topological_ordering, stream_ordering); soft-failure is internal metadata.
SYNAPSE_EVENTS_SQL = (
    "SELECT e.event_id, e.type, e.depth, e.topological_ordering, e.stream_ordering, e.outlier, r.reason, "
    "j.internal_metadata, j.json FROM events e JOIN event_json j ON j.event_id = e.event_id "
    "LEFT JOIN rejections r ON r.event_id = e.event_id WHERE e.room_id = {p}"
)


@dataclass
class Row:
    event_id: str
    type: str
    depth: int
    position: tuple[int, int]
    live: bool  # in the timeline: not an outlier, not rejected, not soft-failed
    txn_id: str | None


async def read_events(server: ChaosServer, room_id: str) -> dict[str, Row]:
    sql = SYNAPSE_EVENTS_SQL if server.kind == "synapse" else EVENTS_SQL
    if server.postgres:
        conn = await asyncpg.connect(server.pg_dsn, timeout=10)
        try:
            async with conn.transaction(readonly=True):
                records = await conn.fetch(sql.format(p="$1"), room_id)
            rows = [tuple(r) for r in records]
        finally:
            await conn.close()
    else:
        rows = await asyncio.to_thread(_sqlite_rows, str(server.sqlite_path), sql.format(p="?"), room_id)
    out: dict[str, Row] = {}
    for event_id, etype, depth, topo_depth, topo_order, outlier, rejected, soft_failed, raw in rows:
        if server.kind == "synapse":
            soft_failed = bool(json.loads(soft_failed or "{}").get("soft_failed"))
        txn_id = None
        if etype == "m.room.message":
            body = json.loads(raw).get("content", {}).get("body")
            if isinstance(body, str) and body.startswith("chaos "):
                txn_id = body[len("chaos ") :]
        out[event_id] = Row(
            event_id,
            etype,
            int(depth),
            (int(topo_depth if topo_depth is not None else depth), int(topo_order or 0)),
            not outlier and rejected is None and not soft_failed,
            txn_id,
        )
    return out


def _sqlite_rows(path: str, sql: str, room_id: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return list(conn.execute(sql, (room_id,)))
    finally:
        conn.close()


async def read_all(servers: list[ChaosServer], room_id: str) -> list[dict[str, Row]]:
    return list(await asyncio.gather(*(read_events(s, room_id) for s in servers)))


def missing(acked: list[str], timelines: list[dict[str, Row]]) -> int:
    """(server, acknowledged event) pairs where the event is not a timeline event of that server."""
    return sum(missing_by_server(acked, timelines).values())


def missing_by_server(acked: list[str], timelines: list[dict[str, Row]]) -> dict[int, int]:
    """Per server with any: acknowledged events that are not timeline events there (absent or outliers,
    rejected, soft-failed)."""
    out: dict[int, int] = {}
    for index, rows in enumerate(timelines):
        count = 0
        for event_id in acked:
            row = rows.get(event_id)
            if row is None or not row.live:
                count += 1
        if count:
            out[index] = count
    return out


def duplicates(timelines: list[dict[str, Row]]) -> tuple[int, list[str]]:
    """Extra events for one txnId, summed over servers (a txnId is unique across the run), and the txnIds."""
    extra = 0
    txns: set[str] = set()
    for rows in timelines:
        counts = Counter(r.txn_id for r in rows.values() if r.txn_id is not None)
        for txn, n in counts.items():
            if n > 1:
                extra += n - 1
                txns.add(txn)
    return extra, sorted(txns)


def order_inversions(acked: list[str], timelines: list[dict[str, Row]]) -> dict[int, int]:
    """Per server (other than 0, the reference), the pairs of acknowledged events of different depths that
    it orders differently from server 0; counted in O(n log n): walk the server's order and count the events
    already seen that server 0 places later, minus those of the same depth."""
    reference = timelines[0]
    out: dict[int, int] = {}
    for index, rows in enumerate(timelines[1:], start=1):
        common = [e for e in acked if e in rows and e in reference and rows[e].live and reference[e].live]
        ref_rank = {e: i for i, e in enumerate(sorted(common, key=lambda e: reference[e].position))}
        seen = _Fenwick(len(common))
        seen_by_depth: dict[int, list[int]] = defaultdict(list)
        total = 0
        for n, e in enumerate(sorted(common, key=lambda e: rows[e].position)):
            r = ref_rank[e]
            later = n - seen.prefix(r)  # seen so far, ranked after e by server 0
            same_depth = seen_by_depth[rows[e].depth]
            later_same_depth = len(same_depth) - bisect.bisect_right(same_depth, r)
            total += later - later_same_depth
            seen.add(r)
            bisect.insort(same_depth, r)
        if total:
            out[index] = total
    return out


class _Fenwick:
    def __init__(self, n: int) -> None:
        self.tree = [0] * (n + 1)

    def add(self, i: int) -> None:
        i += 1
        while i < len(self.tree):
            self.tree[i] += 1
            i += i & -i

    def prefix(self, i: int) -> int:
        """How many added indexes are <= i."""
        i += 1
        total = 0
        while i > 0:
            total += self.tree[i]
            i -= i & -i
        return total


@dataclass
class StateCheck:
    divergent: list[int] = field(default_factory=list)  # servers whose /state differs from server 0's
    differing_keys: int = 0


async def compare_state(users: list[User], room_id: str) -> StateCheck:
    states = [await u.state(room_id) for u in users]
    check = StateCheck()
    for i, st in enumerate(states[1:], start=1):
        if st != states[0]:
            check.divergent.append(i)
            keys = set(st) | set(states[0])
            check.differing_keys += sum(1 for k in keys if st.get(k) != states[0].get(k))
    return check
