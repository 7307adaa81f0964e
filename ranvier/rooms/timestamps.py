"""Finding the event closest to a point in time (CS and S2S ``/timestamp_to_event``).

``closest_local_event`` is the lookup both the federation read (rooms.incoming_reads) and the client
endpoint use. Storage has no index on ``origin_server_ts`` yet, so it walks the timeline in pages
(bounded: at most MAX_TIMESTAMP_PAGES pages of PAGE_SIZE from each end).

For clients, ``TimestampLookup`` also asks the other servers of the room when our copy of the history
cannot answer well, as Synapse does: when nothing was found here, or (looking backwards) the event found
follows a hole in our timeline, so a closer event may be in the part we never received. A closer remote
event is backfilled (rooms.backfill) and answered if it is then held; otherwise our own answer stands.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from ..federation.client import FederationClient, FederationError
from ..protocol.events import Pdu
from ..storage.protocols.composite import HasEvents, HasState, HasStream

logger = logging.getLogger(__name__)

MAX_TIMESTAMP_PAGES = 50
PAGE_SIZE = 100
MAX_SERVERS_ASKED = 5

Backfill = Callable[[str, int], Awaitable[bool]]


class TimestampsStorage(HasEvents, HasState, HasStream, Protocol):
    """What rooms/timestamps.py asks of storage."""


async def closest_local_event(
    storage: TimestampsStorage, room_id: str, ts: int, direction: str
) -> Pdu | None:
    """The first live event at or after ``ts`` ('f'), or the last at or before it ('b'), of the held
    timeline (topological order; timestamps are taken as growing along it, which they mostly do).

    The walk starts from the end of the room, backwards, which is right for recent times (most asked):
    'b' stops at the first event at or before ``ts``, 'f' at the first one before it, answering the one
    after that. When ``ts`` lies beyond the pages walked, a second walk starts from the room's beginning.
    """
    best: Pdu | None = None
    token = None
    for _ in range(MAX_TIMESTAMP_PAGES):
        page, token = await storage.stream.paginate(room_id, token, "b", PAGE_SIZE)
        for pdu in page:
            if direction == "b" and pdu.origin_server_ts <= ts:
                return pdu
            if direction == "f":
                if pdu.origin_server_ts < ts:
                    return best
                best = pdu
        if token is None:
            return best  # the whole room was walked
    # Further back than MAX_TIMESTAMP_PAGES pages from the end: from the beginning, forwards. ('f': should
    # that walk end before ``ts`` too, the oldest event after it seen from the end is the best we know.)
    recent, best = best, None
    token = None
    for _ in range(MAX_TIMESTAMP_PAGES):
        page, token = await storage.stream.paginate(room_id, token, "f", PAGE_SIZE)
        for pdu in page:
            if direction == "f" and pdu.origin_server_ts >= ts:
                return pdu
            if direction == "b":
                if pdu.origin_server_ts > ts:
                    return best
                best = pdu
        if token is None:
            break
    return best if direction == "b" else recent


class TimestampLookup:
    def __init__(
        self,
        storage: TimestampsStorage,
        server_name: str,
        client: FederationClient | None = None,
        backfill: Backfill | None = None,
    ) -> None:
        self._storage = storage
        self.server_name = server_name
        self._client = client
        self._backfill = backfill

    async def find(self, room_id: str, ts: int, direction: str) -> Pdu | None:
        local = await closest_local_event(self._storage, room_id, ts, direction)
        if local is not None and not await self._next_to_gap(room_id, local, direction):
            return local
        remote = await self._ask_others(room_id, ts, direction)
        if remote is None or not _closer(remote, local, direction):
            return local
        event_id = remote[0]
        if await self._held(event_id) is None and self._backfill is not None:
            try:
                await self._backfill(room_id, 100)
            except Exception:
                logger.exception("backfill for timestamp_to_event in %s failed", room_id)
        held = await self._held(event_id)
        return held if held is not None else local

    async def _next_to_gap(self, room_id: str, pdu: Pdu, direction: str) -> bool:
        """Looking backwards, an event that follows a hole may have closer events behind the hole."""
        if direction != "b":
            return False
        return pdu.event_id in await self._storage.events.get_timeline_breaks(room_id, [pdu.event_id])

    async def _held(self, event_id: str) -> Pdu | None:
        meta = await self._storage.events.get_event_meta(event_id)
        if meta is None or meta.outlier or meta.soft_failed:
            return None
        pdu: Pdu | None = await self._storage.events.get_event(event_id)
        return pdu

    async def _ask_others(self, room_id: str, ts: int, direction: str) -> tuple[str, int] | None:
        if self._client is None:
            return None
        servers = sorted(
            s for s in await self._storage.state.get_joined_servers(room_id) if s != self.server_name
        )
        for server in servers[:MAX_SERVERS_ASKED]:
            try:
                answer = await self._client.timestamp_to_event(server, room_id, ts, direction)
            except FederationError as e:
                logger.info("timestamp_to_event in %s from %s failed: %s", room_id, server, e)
                continue
            event_id, origin_ts = answer.get("event_id"), answer.get("origin_server_ts")
            if not isinstance(event_id, str) or not isinstance(origin_ts, int) or isinstance(origin_ts, bool):
                continue
            if (origin_ts >= ts) if direction == "f" else (origin_ts <= ts):
                return event_id, origin_ts
        return None


def _closer(remote: tuple[str, int], local: Pdu | None, direction: str) -> bool:
    if local is None:
        return True
    if remote[0] == local.event_id:
        return False
    return remote[1] < local.origin_server_ts if direction == "f" else remote[1] > local.origin_server_ts
