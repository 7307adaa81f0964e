"""``POST /knock/{roomIdOrAlias}`` (CS "Knocking on rooms"); the work is ``rooms.knock``."""

from __future__ import annotations

from aiohttp import web

from ..protocol.errors import AuthRejected
from ..rooms.knock import KnockService
from ..rooms.local_events import RoomNotFound
from ..rooms.membership import MembershipError
from .auth import Authenticator
from .errors import MatrixError, forbidden, not_found
from .http_util import optional_str, read_json_body


class KnockHandlers:
    def __init__(self, knocks: KnockService, authenticator: Authenticator) -> None:
        self._knocks = knocks
        self._auth = authenticator

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/_matrix/client/v3/knock/{room}", self.knock)]

    async def knock(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        body = await read_json_body(request, allow_empty=True)
        # ``via`` since v1.12; ``server_name`` is its deprecated older name, still sent by clients.
        via = request.query.getall("via", []) + request.query.getall("server_name", [])
        try:
            room_id = await self._knocks.knock(
                requester.user_id, request.match_info["room"], via, optional_str(body, "reason")
            )
        except MembershipError as e:
            raise MatrixError(e.status, e.errcode, e.message) from None
        except RoomNotFound as e:
            raise not_found(f"Unknown room {e}") from None
        except AuthRejected as e:
            raise forbidden(f"You are not allowed to knock on this room: {e.message}") from None
        return web.json_response({"room_id": room_id})
