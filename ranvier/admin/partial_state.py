"""Rooms joined with partial state (MSC3706 faster joins) whose members are still being fetched.

- ``GET /_ranvier/admin/v1/partial_state_rooms``: the rooms still partial, oldest join first, each with
  its resync's progress: ``attempts`` (failed attempts so far), ``last_error`` (which server and why),
  ``last_attempt_ts`` and ``next_attempt_ts`` (ms since the epoch), whether the state ids at the join
  are held already (``state_ids_fetched``), the server joined through and ``servers_in_room``.
  ``?include_completed=true`` lists completed rooms too (with ``completed_ts``).

A room stuck here is usable by its members (lazy-loading /sync, messages); the resync keeps retrying with
back-off and never gives up. Server admins only.
"""

from __future__ import annotations

from aiohttp import web

from ..client_api.errors import invalid_param
from ..storage.protocols.composite import HasPartialState
from ..storage.sql.partial_state import PartialStateRoom
from .access import AdminAccess

PATH = "/_ranvier/admin/v1/partial_state_rooms"


class PartialStateAdminHandlers:
    def __init__(self, storage: HasPartialState, access: AdminAccess) -> None:
        self._storage = storage
        self._access = access

    def routes(self) -> list[web.RouteDef]:
        return [web.get(PATH, self.list_rooms)]

    async def list_rooms(self, request: web.Request) -> web.Response:
        await self._access.require_admin(request)
        raw = request.query.get("include_completed", "false")
        if raw not in ("true", "false"):
            raise invalid_param("include_completed must be true or false")
        rooms: list[PartialStateRoom] = await self._storage.partial_state.list_rooms(raw == "true")
        out = []
        for room in rooms:
            out.append(
                {
                    "room_id": room.room_id,
                    "join_event_id": room.join_event_id,
                    "joined_via": room.joined_via,
                    "servers_in_room": await self._storage.partial_state.servers(room.room_id),
                    "joined_ts": room.created_ts,
                    "state_ids_fetched": room.has_state_ids,
                    "attempts": room.attempts,
                    "last_error": room.last_error,
                    "last_attempt_ts": room.last_attempt_ts,
                    "next_attempt_ts": room.next_attempt_ts,
                    "completed_ts": room.completed_ts,
                }
            )
        return web.json_response({"rooms": out, "total": len(out)})
