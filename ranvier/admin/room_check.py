"""``POST /_ranvier/admin/v1/rooms/{roomId}/check`` (admins only): the room check of
``ranvier/rooms/room_check.py``, with ``{"heal": true}`` to fetch what we lack and queue what others lack.
Used by ``ranvier room-check`` and the DAG page's "Check room" button."""

from __future__ import annotations

import json
import logging

from aiohttp import web

from ..client_api.auth import Authenticator
from ..client_api.errors import MatrixError, not_found
from ..rooms.room_check import RoomChecker

logger = logging.getLogger("ranvier.admin")


class RoomCheckHandlers:
    def __init__(self, checker: RoomChecker, authenticator: Authenticator) -> None:
        self._checker = checker
        self._auth = authenticator

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/_ranvier/admin/v1/rooms/{room_id}/check", self.check)]

    async def check(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        if not requester.is_admin:
            raise MatrixError(403, "M_FORBIDDEN", "You are not a server admin")
        raw = await request.read()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            raise MatrixError(400, "M_NOT_JSON", "The body is not JSON") from None
        if not isinstance(body, dict):
            raise MatrixError(400, "M_BAD_JSON", "The body must be a JSON object")
        heal = body.get("heal", False)
        if not isinstance(heal, bool):
            raise MatrixError(400, "M_BAD_JSON", "'heal' must be a boolean")
        room_id = request.match_info["room_id"]
        logger.info("admin %s checks room %s (heal=%s)", requester.user_id, room_id, heal)
        report = await self._checker.check(room_id, heal=heal)
        if report is None:
            raise not_found("Unknown room")
        return web.json_response(report.json())
