"""The event stream: positions, incremental sync reads, timelines, pagination, and waiting for news."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Literal

from ranvier.protocol.events import Pdu

from ..interfaces import TopoToken
from .engine import Database, Txn, chunks, in_list
from .events import LIVE, SqlEventStore
from .partial_state import max_completed_stream


class StreamPositions:
    """Allocates stream orderings and wakes long-polling readers.

    Allocation happens under the persister's lock and the position is published only after the commit,
    so a reader that sees position N can rely on every event up to N being readable.
    """

    def __init__(self) -> None:
        self.max_committed = 0
        self.min_committed = 0
        self._news = asyncio.Event()

    async def load(self, txn: Txn) -> None:
        row = await txn.fetchone("SELECT MAX(stream_ordering), MIN(stream_ordering) FROM events")
        assert row is not None
        # A partial-state room's completion takes a position of its own (no event has it): never reuse it.
        self.max_committed = max(int(row[0] or 0), await max_completed_stream(txn), 0)
        self.min_committed = min(int(row[1] or 0), 0)

    def publish(self, max_stream: int, min_stream: int) -> None:
        self.min_committed = min(self.min_committed, min_stream)
        if max_stream > self.max_committed:
            self.max_committed = max_stream
            # Wake every waiter at once; each re-checks the position. A fresh Event for the next round.
            news, self._news = self._news, asyncio.Event()
            news.set()

    async def wait_for_new(self, position: int, timeout: float) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.max_committed <= position:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(self._news.wait(), remaining)
            except TimeoutError:
                break
        return self.max_committed


class SqlStreamStore:
    def __init__(self, db: Database, events: SqlEventStore, positions: StreamPositions) -> None:
        self._db = db
        self._events = events
        self._positions = positions

    def use_positions(self, positions: StreamPositions) -> None:
        """Several processes write the event stream (ranvier.workers): read its frontier from these."""
        self._positions = positions

    def current_position(self) -> int:
        return self._positions.max_committed

    async def wait_for_new(self, position: int, timeout: float) -> int:
        return await self._positions.wait_for_new(position, timeout)

    async def _pdus(self, event_ids: list[str]) -> list[Pdu]:
        found = await self._events.get_events(event_ids)
        return [found[e] for e in event_ids if e in found]

    async def get_room_events_between(
        self, room_ids: Iterable[str], from_stream: int, to_stream: int, limit: int
    ) -> dict[str, list[Pdu]]:
        by_room: dict[str, list[str]] = {}
        for part in chunks(list(dict.fromkeys(room_ids))):
            # The window keeps the newest `limit` of each room in one statement for all rooms.
            rows = await self._db.fetchall(
                "SELECT room_id, event_id FROM ("
                " SELECT room_id, event_id, stream_ordering, ROW_NUMBER() OVER"
                "  (PARTITION BY room_id ORDER BY stream_ordering DESC) AS n"
                f" FROM events WHERE room_id IN ({in_list(len(part))})"
                f" AND stream_ordering > ? AND stream_ordering <= ? AND {LIVE}"
                ") recent WHERE n <= ? ORDER BY stream_ordering",
                (*part, from_stream, to_stream, limit),
            )
            for room_id, event_id in rows:
                by_room.setdefault(room_id, []).append(event_id)
        return {room_id: await self._pdus(ids) for room_id, ids in by_room.items()}

    async def get_recent_events(
        self, room_id: str, limit: int, before_stream: int | None = None
    ) -> list[Pdu]:
        bound = self._positions.max_committed + 1 if before_stream is None else before_stream
        rows = await self._db.fetchall(
            f"SELECT event_id FROM events WHERE room_id = ? AND stream_ordering < ? AND {LIVE}"
            " ORDER BY stream_ordering DESC LIMIT ?",
            (room_id, bound, limit),
        )
        return await self._pdus([r[0] for r in reversed(rows)])

    async def paginate(
        self,
        room_id: str,
        from_token: TopoToken | None,
        direction: Literal["b", "f"],
        limit: int,
        types: Iterable[str] | None = None,
    ) -> tuple[list[Pdu], TopoToken | None]:
        if direction not in ("b", "f"):
            raise ValueError(f"direction must be 'b' or 'f', not {direction!r}")
        clauses = [f"room_id = ? AND {LIVE}"]
        params: list[object] = [room_id]
        if from_token is not None:
            # A token sits just after the event at that position: backwards includes that event.
            cmp = "<=" if direction == "b" else ">"
            clauses.append(f"(topo_depth, topo_order) {cmp} (?, ?)")
            params += [from_token.depth, from_token.stream]
        if types is not None:
            type_list = list(dict.fromkeys(types))
            if not type_list:
                return [], from_token
            clauses.append(f"type IN ({in_list(len(type_list))})")
            params += type_list
        order = "DESC" if direction == "b" else "ASC"
        rows = await self._db.fetchall(
            f"SELECT event_id, topo_depth, topo_order FROM events WHERE {' AND '.join(clauses)}"
            f" ORDER BY topo_depth {order}, topo_order {order} LIMIT ?",
            (*params, limit),
        )
        if not rows:
            return [], None
        _, depth, stream = rows[-1]
        token = TopoToken(int(depth), int(stream) - 1 if direction == "b" else int(stream))
        return await self._pdus([r[0] for r in rows]), token
