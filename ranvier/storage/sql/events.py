"""Reading events and the room DAG. Writes are in ``persist.py``."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from ranvier.protocol.events import Pdu
from ranvier.protocol.redaction import redact_event
from ranvier.protocol.room_versions import get_room_version

from ..interfaces import EventMeta, TopoToken
from .caches import LruCache
from .engine import Database, Reader, chunks, in_list


def live(alias: str = "") -> str:
    """The SQL condition for a live event (non-outlier, not rejected, not soft-failed)."""
    a = f"{alias}." if alias else ""
    return f"{a}outlier = FALSE AND {a}rejected_reason IS NULL AND {a}soft_failed = FALSE"


LIVE = live()

# event id -> (the event as served: redacted if a valid redaction is held, its rejection reason)
EventCache = LruCache[str, tuple[Pdu, str | None]]


def parse_pdu(room_version_id: str, text: str) -> Pdu:
    return Pdu(json.loads(text), get_room_version(room_version_id))


def apply_redaction(pdu: Pdu, because: Pdu) -> Pdu:
    """The redacted form of ``pdu``; the stored JSON keeps the original."""
    redacted: dict[str, Any] = redact_event(pdu.json, pdu.room_version)
    redacted["unsigned"] = {"redacted_because": because.json}
    return Pdu(redacted, pdu.room_version)


class SqlEventStore:
    def __init__(self, db: Database, cache: EventCache) -> None:
        self._db = db
        self._cache = cache

    async def get_event(self, event_id: str, allow_rejected: bool = False) -> Pdu | None:
        return (await self.get_events([event_id], allow_rejected)).get(event_id)

    async def get_events(self, event_ids: Iterable[str], allow_rejected: bool = False) -> dict[str, Pdu]:
        found = await self.get_events_with_verdicts(event_ids)
        return {eid: pdu for eid, (pdu, rejected) in found.items() if allow_rejected or rejected is None}

    async def get_events_with_verdicts(self, event_ids: Iterable[str]) -> dict[str, tuple[Pdu, str | None]]:
        found: dict[str, tuple[Pdu, str | None]] = {}
        missing = []
        for event_id in dict.fromkeys(event_ids):
            hit = self._cache.get(event_id)
            if hit is None:
                missing.append(event_id)
            else:
                found[event_id] = hit
        if missing:
            # Statement by statement, no snapshot needed: a stored event and its redaction never change.
            found.update(await self._load(self._db, missing))
        return found

    async def _load(self, txn: Reader, event_ids: list[str]) -> dict[str, tuple[Pdu, str | None]]:
        generation = self._cache.generation
        rows: list[tuple[Any, ...]] = []
        for part in chunks(event_ids):
            rows += await txn.fetchall(
                "SELECT event_id, room_version, json, rejected_reason, redacted_by FROM events"
                f" WHERE event_id IN ({in_list(len(part))})",
                tuple(part),
            )
        redactions: dict[str, Pdu] = {}
        because_ids = [r[4] for r in rows if r[4] is not None]
        for part in chunks(because_ids):
            for eid, version, text in await txn.fetchall(
                f"SELECT event_id, room_version, json FROM events WHERE event_id IN ({in_list(len(part))})",
                tuple(part),
            ):
                redactions[eid] = parse_pdu(version, text)
        out = {}
        for eid, version, text, rejected, redacted_by in rows:
            pdu = parse_pdu(version, text)
            if redacted_by is not None:
                pdu = apply_redaction(pdu, redactions[redacted_by])
            out[eid] = (pdu, rejected)
            self._cache.put_if_unchanged(eid, (pdu, rejected), generation)
        return out

    async def get_event_texts(self, event_ids: Iterable[str]) -> dict[str, str]:
        """The JSON text of the accepted events held among ``event_ids``, as ``get_events`` would give them
        (a redacted one in its redacted form): the stored text itself for the others, never parsed, for
        answers that carry many events (``/state`` of a big room: 10,000s of them)."""
        out: dict[str, str] = {}
        redacted: list[str] = []
        for part in chunks(list(dict.fromkeys(event_ids))):
            rows = await self._db.fetchall(
                "SELECT event_id, json, redacted_by FROM events"
                f" WHERE event_id IN ({in_list(len(part))}) AND rejected_reason IS NULL",
                tuple(part),
            )
            for event_id, text, redacted_by in rows:
                if redacted_by is None:
                    out[event_id] = text
                else:
                    redacted.append(event_id)
        for event_id, pdu in (await self.get_events(redacted)).items():
            out[event_id] = json.dumps(pdu.json, separators=(",", ":"), ensure_ascii=False)
        return out

    async def have_events(self, event_ids: Iterable[str]) -> set[str]:
        ids = list(dict.fromkeys(event_ids))
        have = {eid for eid in ids if eid in self._cache}
        rest = [eid for eid in ids if eid not in have]
        for part in chunks(rest):
            rows = await self._db.fetchall(
                f"SELECT event_id FROM events WHERE event_id IN ({in_list(len(part))})", tuple(part)
            )
            have.update(r[0] for r in rows)
        return have

    async def held_in_timeline(self, event_ids: Iterable[str]) -> set[str]:
        # One query for the lot (the intake asks it of a transaction's PDUs and their prev events).
        held: set[str] = set()
        for part in chunks(list(dict.fromkeys(event_ids))):
            rows = await self._db.fetchall(
                f"SELECT event_id FROM events WHERE outlier = FALSE AND event_id IN ({in_list(len(part))})",
                tuple(part),
            )
            held.update(r[0] for r in rows)
        return held

    async def get_event_meta(self, event_id: str) -> EventMeta | None:
        row = await self._db.fetchone(
            "SELECT event_id, room_id, stream_ordering, depth, outlier, rejected_reason, soft_failed,"
            " topo_depth, topo_order FROM events WHERE event_id = ?",
            (event_id,),
        )
        if row is None:
            return None
        event_id, room_id, stream, depth, outlier, rejected, soft_failed, topo_depth, topo_order = row
        return EventMeta(
            event_id,
            room_id,
            int(stream),
            int(depth),
            bool(outlier),
            rejected,
            bool(soft_failed),
            int(topo_depth),
            int(topo_order),
        )

    async def get_forward_extremities(self, room_id: str) -> list[str]:
        rows = await self._db.fetchall(
            "SELECT event_id FROM forward_extremities WHERE room_id = ? ORDER BY event_id", (room_id,)
        )
        return [r[0] for r in rows]

    async def get_backward_extremities(self, room_id: str) -> list[str]:
        rows = await self._db.fetchall(
            "SELECT event_id FROM backward_extremities WHERE room_id = ? ORDER BY event_id", (room_id,)
        )
        return [r[0] for r in rows]

    async def get_timeline_gaps(self, room_id: str) -> dict[str, TopoToken]:
        """The backward extremities in the middle of the room's timeline (a hole: events we know exist, and
        hold live events both after and before), each with the topological position of the earliest live
        event that cites it; the missing events belong just before that position. A backward extremity
        at the start of what we hold (history from before our join) is not a gap."""
        rows = await self._db.fetchall(
            "SELECT b.event_id, e.topo_depth, e.topo_order FROM backward_extremities b"
            " JOIN event_edges ed ON ed.prev_event_id = b.event_id"
            " JOIN events e ON e.event_id = ed.event_id"
            f" WHERE b.room_id = ? AND e.room_id = ? AND {live('e')}",
            (room_id, room_id),
        )
        if not rows:
            return {}
        cited_at: dict[str, TopoToken] = {}
        for event_id, depth, order in rows:
            position = TopoToken(int(depth), int(order))
            if event_id not in cited_at or position < cited_at[event_id]:
                cited_at[event_id] = position
        lowest = await self._lowest_live_position(room_id)
        return {e: p for e, p in cited_at.items() if lowest is not None and lowest < p}

    async def _lowest_live_position(self, room_id: str) -> TopoToken | None:
        row = await self._db.fetchone(
            f"SELECT topo_depth, topo_order FROM events WHERE room_id = ? AND {LIVE}"
            " ORDER BY topo_depth, topo_order LIMIT 1",
            (room_id,),
        )
        return None if row is None else TopoToken(int(row[0]), int(row[1]))

    async def get_rooms_with_backward_extremities(self) -> list[str]:
        rows = await self._db.fetchall("SELECT DISTINCT room_id FROM backward_extremities ORDER BY room_id")
        return [r[0] for r in rows]

    async def get_timeline_breaks(self, room_id: str, event_ids: Iterable[str]) -> set[str]:
        """The events of ``event_ids`` that follow a hole a /sync reader has not seen: a prev event that
        is a gap in the timeline (see ``get_timeline_gaps``) or that was filled in since by backfill
        (negative stream orderings never reach /sync)."""
        ids = list(dict.fromkeys(event_ids))
        out: set[str] = set()
        missing_prev: set[str] = set()
        for part in chunks(ids):
            rows = await self._db.fetchall(
                "SELECT ed.event_id, ed.prev_event_id, p.outlier, p.stream_ordering FROM event_edges ed"
                " LEFT JOIN events p ON p.event_id = ed.prev_event_id"
                f" WHERE ed.event_id IN ({in_list(len(part))})",
                tuple(part),
            )
            for event_id, prev_id, outlier, stream in rows:
                if outlier is None or bool(outlier):
                    missing_prev.add(prev_id)
                elif int(stream) < 0:
                    out.add(event_id)
        if missing_prev:
            gaps = set(await self.get_timeline_gaps(room_id))
            if gaps & missing_prev:
                for part in chunks(ids):
                    rows = await self._db.fetchall(
                        "SELECT event_id, prev_event_id FROM event_edges"
                        f" WHERE event_id IN ({in_list(len(part))})",
                        tuple(part),
                    )
                    out.update(e for e, prev in rows if prev in gaps)
        return out

    async def get_max_depth_of(self, event_ids: Iterable[str]) -> int:
        best = 0
        for part in chunks(list(dict.fromkeys(event_ids))):
            value = await self._db.fetchval(
                f"SELECT MAX(depth) FROM events WHERE event_id IN ({in_list(len(part))})", tuple(part)
            )
            if value is not None:
                best = max(best, int(value))
        return best

    async def get_auth_chain_ids(self, event_ids: Iterable[str]) -> set[str]:
        # One recursive query per chunk of starting events: the walk happens inside the database rather
        # than as one round trip per level of the chain. UNION (not UNION ALL) stops at events seen before.
        out: set[str] = set()
        for part in chunks(list(dict.fromkeys(event_ids))):
            rows = await self._db.fetchall(
                "WITH RECURSIVE chain(event_id) AS ("
                f" SELECT auth_event_id FROM event_auth_edges WHERE event_id IN ({in_list(len(part))})"
                " UNION"
                " SELECT a.auth_event_id FROM event_auth_edges a JOIN chain c ON a.event_id = c.event_id"
                ") SELECT event_id FROM chain",
                tuple(part),
            )
            out.update(r[0] for r in rows)
        return out

    async def get_prev_event_ids(self, event_id: str) -> list[str]:
        # From the PDU, not the edges table: keeps the order the sender wrote.
        pdu = await self.get_event(event_id, allow_rejected=True)
        return [] if pdu is None else list(pdu.prev_event_ids)

    async def get_child_event_ids(self, event_ids: Iterable[str]) -> set[str]:
        out: set[str] = set()
        for part in chunks(list(dict.fromkeys(event_ids))):
            rows = await self._db.fetchall(
                f"SELECT event_id FROM event_edges WHERE prev_event_id IN ({in_list(len(part))})", tuple(part)
            )
            out.update(r[0] for r in rows)
        return out
