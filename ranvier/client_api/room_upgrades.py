"""``POST /rooms/{roomId}/upgrade`` (CS "Room Upgrades"); the work is ``rooms.upgrade``."""

from __future__ import annotations

from aiohttp import web

from ..protocol.identifiers import is_valid_user_id
from ..rooms.upgrade import RoomUpgrader, UpgradeError
from .auth import Authenticator
from .errors import MatrixError, invalid_param
from .http_util import read_json_body, require_str


class RoomUpgradeHandlers:
    def __init__(self, upgrader: RoomUpgrader, authenticator: Authenticator) -> None:
        self._upgrader = upgrader
        self._auth = authenticator

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post(prefix + "/rooms/{room}/upgrade", self.upgrade)
            for prefix in ("/_matrix/client/v3", "/_matrix/client/r0")
        ]

    async def upgrade(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        body = await read_json_body(request)
        new_version = require_str(body, "new_version")
        extra = body.get("additional_creators")
        if extra is not None and (
            not isinstance(extra, list) or not all(isinstance(u, str) and is_valid_user_id(u) for u in extra)
        ):
            raise invalid_param("'additional_creators' must be a list of user ids")
        try:
            room_id = await self._upgrader.upgrade(
                requester.user_id, request.match_info["room"], new_version, extra
            )
        except UpgradeError as e:
            raise MatrixError(e.status, e.errcode, e.message) from None
        return web.json_response({"replacement_room": room_id})
