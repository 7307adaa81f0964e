"""``GET /rooms/{roomId}/timestamp_to_event`` (CS "Events", v1.6): the event closest to a time.

Who may ask: a member of the room, or anyone when its history is ``world_readable`` (the same check as
Synapse's; the spec does not say more). The lookup, with its federation fallback, is rooms.timestamps'.
"""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from ..protocol.visibility import HistoryVisibility
from ..rooms.timestamps import TimestampLookup
from ..rooms.visibility import HistoryVisibilityFilter
from ..storage.protocols.composite import HasRooms, HasState
from .auth import Authenticator
from .errors import MatrixError, forbidden, invalid_param, missing_param, not_found
from .http_util import query_int


class TimestampsStorage(HasRooms, HasState, Protocol):
    """What client_api/timestamps.py asks of storage."""


class TimestampHandlers:
    def __init__(
        self,
        storage: TimestampsStorage,
        lookup: TimestampLookup,
        visibility: HistoryVisibilityFilter,
        authenticator: Authenticator,
    ) -> None:
        self._storage = storage
        self._lookup = lookup
        self._visibility = visibility
        self._auth = authenticator

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/_matrix/client/v1/rooms/{room}/timestamp_to_event", self.timestamp_to_event)]

    async def timestamp_to_event(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        room_id = request.match_info["room"]
        if "ts" not in request.query:
            raise missing_param("Missing 'ts'")
        ts = query_int(request, "ts", 0, 0, 2**53 - 1)
        direction = request.query.get("dir")
        if direction is None:
            raise missing_param("Missing 'dir'")
        if direction not in ("f", "b"):
            raise invalid_param("'dir' must be 'f' or 'b'")
        await self._require_readable(room_id, requester.user_id)
        pdu = await self._lookup.find(room_id, ts, direction)
        if pdu is None:
            raise not_found(f"Unable to find event {'after' if direction == 'f' else 'before'} {ts}")
        return web.json_response({"event_id": pdu.event_id, "origin_server_ts": pdu.origin_server_ts})

    async def _require_readable(self, room_id: str, user_id: str) -> None:
        if await self._storage.rooms.get_room_version(room_id) is None:
            raise forbidden(f"You are not in room {room_id}")  # do not reveal whether the room exists
        membership = await self._storage.state.get_membership(room_id, user_id)
        if membership is not None and membership[0] == "join":
            return
        if await self._visibility.current_visibility(room_id) is HistoryVisibility.WORLD_READABLE:
            return
        raise MatrixError(403, "M_FORBIDDEN", f"You are not joined to room {room_id}")
