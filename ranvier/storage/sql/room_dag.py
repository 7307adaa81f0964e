"""A window of a room's event graph as the operator's DAG page draws it (``ranvier/admin/dag.py``).

Read-only: events with their prev edges and status flags (outlier, rejected, soft-failed, redacted),
the forward and backward extremities, the prev events we do not hold (the room's gaps), and, for our own
events, which destinations still have them queued (the outbox keeps a row until the destination
acknowledged the transaction that carried it, so "not queued" means acknowledged, or never owed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .engine import Database, Reader, chunks, in_list


@dataclass(frozen=True)
class DagEvent:
    event_id: str
    type: str
    state_key: str | None
    sender: str
    depth: int
    stream_ordering: int
    origin_server_ts: int
    outlier: bool
    rejected_reason: str | None
    soft_failed: bool
    redacted: bool
    prev_event_ids: tuple[str, ...]
    content_summary: str | None


@dataclass
class DagWindow:
    room_id: str
    events: list[DagEvent]
    forward_extremities: list[str]
    backward_extremities: list[str]
    # prev events named by events of the window that we do not hold at all (not even as outliers)
    missing: list[str]
    # event id -> destinations that have not acknowledged it yet
    unacknowledged: dict[str, list[str]] = field(default_factory=dict)
    # whether events older (by depth) than the window exist
    more_before: bool = False


_COLUMNS = (
    "event_id, type, state_key, sender, depth, stream_ordering, origin_server_ts, outlier, rejected_reason, "
    "soft_failed, redacted_by, json"
)


def _summary(event_type: str, content: Any) -> str | None:
    """A short label for the state changes and membership the page shows next to a node."""
    if not isinstance(content, dict):
        return None
    if event_type == "m.room.member":
        membership = content.get("membership")
        return membership if isinstance(membership, str) else None
    if event_type in ("m.room.name", "m.room.topic"):
        value = content.get("name" if event_type == "m.room.name" else "topic")
        return value[:60] if isinstance(value, str) else None
    return None


def _row_to_event(row: Any) -> DagEvent:
    (event_id, etype, state_key, sender, depth, stream, ts, outlier, rejected, soft, redacted_by, raw) = row
    pdu = json.loads(raw)
    prevs = pdu.get("prev_events", [])
    # v1/v2 rooms name prev events as [event_id, hashes] pairs; later versions as bare ids.
    prev_ids = tuple(p[0] if isinstance(p, list) else p for p in prevs if isinstance(p, (str, list)))
    return DagEvent(
        event_id=event_id,
        type=etype,
        state_key=state_key,
        sender=sender,
        depth=int(depth),
        stream_ordering=int(stream),
        origin_server_ts=int(ts),
        outlier=bool(outlier),
        rejected_reason=rejected,
        soft_failed=bool(soft),
        redacted=redacted_by is not None,
        prev_event_ids=prev_ids,
        content_summary=None if redacted_by is not None else _summary(etype, pdu.get("content")),
    )


class RoomDagStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def window(self, room_id: str, limit: int, around: str | None = None) -> DagWindow | None:
        """The newest ``limit`` events of the room by depth, or the ``limit`` nearest ``around`` (half
        before, half after). None when the room or the ``around`` event is unknown here."""
        async with self._db.snapshot() as txn:
            if await txn.fetchval("SELECT 1 FROM rooms WHERE room_id = ?", (room_id,)) is None:
                return None
            if around is None:
                rows = await txn.fetchall(
                    f"SELECT {_COLUMNS} FROM events WHERE room_id = ? "
                    "ORDER BY depth DESC, stream_ordering DESC LIMIT ?",
                    (room_id, limit),
                )
            else:
                anchor = await txn.fetchone(
                    "SELECT depth, stream_ordering FROM events WHERE room_id = ? AND event_id = ?",
                    (room_id, around),
                )
                if anchor is None:
                    return None
                depth, stream = int(anchor[0]), int(anchor[1])
                half = max(1, limit // 2)
                older = await txn.fetchall(
                    f"SELECT {_COLUMNS} FROM events WHERE room_id = ? "
                    "AND (depth < ? OR (depth = ? AND stream_ordering <= ?)) "
                    "ORDER BY depth DESC, stream_ordering DESC LIMIT ?",
                    (room_id, depth, depth, stream, half + 1),
                )
                newer = await txn.fetchall(
                    f"SELECT {_COLUMNS} FROM events WHERE room_id = ? "
                    "AND (depth > ? OR (depth = ? AND stream_ordering > ?)) "
                    "ORDER BY depth ASC, stream_ordering ASC LIMIT ?",
                    (room_id, depth, depth, stream, limit - half),
                )
                rows = [*older, *newer]
            events = sorted((_row_to_event(r) for r in rows), key=lambda e: (e.depth, e.stream_ordering))
            oldest = events[0].depth if events else 0
            more_before = bool(
                events
                and await txn.fetchval(
                    "SELECT 1 FROM events WHERE room_id = ? AND depth < ? LIMIT 1", (room_id, oldest)
                )
            )
            forward = await _ids(txn, "forward_extremities", room_id)
            backward = await _ids(txn, "backward_extremities", room_id)
            known = {e.event_id for e in events}
            wanted = sorted({p for e in events for p in e.prev_event_ids} - known)
            held = await _held(txn, wanted)
            unacked = await _unacknowledged(txn, sorted(known))
        return DagWindow(
            room_id=room_id,
            events=events,
            forward_extremities=forward,
            backward_extremities=backward,
            missing=[p for p in wanted if p not in held],
            unacknowledged=unacked,
            more_before=more_before,
        )


async def _ids(txn: Reader, table: str, room_id: str) -> list[str]:
    rows = await txn.fetchall(f"SELECT event_id FROM {table} WHERE room_id = ? ORDER BY event_id", (room_id,))
    return [r[0] for r in rows]


async def _held(txn: Reader, event_ids: list[str]) -> set[str]:
    out: set[str] = set()
    for chunk in chunks(event_ids):
        sql = f"SELECT event_id FROM events WHERE event_id IN ({in_list(len(chunk))})"
        rows = await txn.fetchall(sql, chunk)
        out.update(r[0] for r in rows)
    return out


async def _unacknowledged(txn: Reader, event_ids: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for chunk in chunks(event_ids):
        rows = await txn.fetchall(
            f"SELECT event_id, destination FROM outbox_pdus WHERE event_id IN ({in_list(len(chunk))}) "
            "ORDER BY destination",
            chunk,
        )
        for event_id, destination in rows:
            out.setdefault(event_id, []).append(destination)
    return out
