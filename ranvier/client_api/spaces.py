"""Spaces and room previews: ``GET /rooms/{roomId}/hierarchy`` (CS "Spaces") and the room summary
(CS "GET /room_summary/{roomIdOrAlias}", v1.15, MSC3266), served at the stable path and at the two unstable
paths clients still call (``im.nheko.summary``). The work is ``rooms.spaces``."""

from __future__ import annotations

import re

from aiohttp import web

from ..rooms.membership import MembershipError, MembershipService
from ..rooms.spaces import SpaceHierarchy, SpacesError
from .auth import Authenticator
from .errors import MatrixError, invalid_param

_NON_NEGATIVE = re.compile(r"[0-9]{1,16}")


def _query_bool(request: web.Request, key: str) -> bool:
    raw = request.query.get(key)
    if raw is None:
        return False
    if raw not in ("true", "false"):
        raise invalid_param(f"query parameter '{key}' must be 'true' or 'false'")
    return raw == "true"


def _query_count(request: web.Request, key: str, minimum: int) -> int | None:
    raw = request.query.get(key)
    if raw is None:
        return None
    if _NON_NEGATIVE.fullmatch(raw) is None or int(raw) < minimum:
        raise invalid_param(f"query parameter '{key}' must be an integer of at least {minimum}")
    return int(raw)


class SpaceHandlers:
    def __init__(
        self, spaces: SpaceHierarchy, membership: MembershipService, authenticator: Authenticator
    ) -> None:
        self._spaces = spaces
        self._membership = membership
        self._auth = authenticator

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/_matrix/client/v1/rooms/{room}/hierarchy", self.hierarchy),
            web.get("/_matrix/client/v1/room_summary/{room}", self.summary),
            web.get("/_matrix/client/unstable/im.nheko.summary/rooms/{room}/summary", self.summary),
            web.get("/_matrix/client/unstable/im.nheko.summary/summary/{room}", self.summary),
        ]

    async def hierarchy(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        try:
            result = await self._spaces.hierarchy(
                requester.user_id,
                request.match_info["room"],
                suggested_only=_query_bool(request, "suggested_only"),
                max_depth=_query_count(request, "max_depth", 0),
                limit=_query_count(request, "limit", 1),
                from_token=request.query.get("from"),
            )
        except SpacesError as e:
            raise MatrixError(e.status, e.errcode, e.message) from None
        return web.json_response(result)

    async def summary(self, request: web.Request) -> web.Response:
        # Unauthenticated requests are allowed, for rooms open to anyone (CS "GET /room_summary").
        requester = await self._auth.optional_user(request)
        via = request.query.getall("via", [])
        try:
            room_id, alias_servers = await self._membership.resolve_room(request.match_info["room"])
            result = await self._spaces.summary(
                requester.user_id if requester is not None else None, room_id, [*via, *alias_servers]
            )
        except MembershipError as e:
            raise MatrixError(e.status, e.errcode, e.message) from None
        except SpacesError as e:
            raise MatrixError(e.status, e.errcode, e.message) from None
        return web.json_response(result)
