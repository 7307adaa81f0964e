"""``GET``/``PUT /presence/{userId}/status`` (CS "Presence"), and the ``presence`` filter of /sync.

Reading another user's presence needs a joined room in common with them (CS "Presence": "published to
all users who share a room"; Synapse's ``is_visible``): 403 otherwise. With presence disabled
(``presence.enabled: false``) GET answers ``offline`` for everybody and PUT is accepted and ignored, as
Synapse does.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..clock import now_ms
from ..presence.service import PresenceService
from ..presence.state import MAX_STATUS_MSG_BYTES, STATES, client_content
from ..protocol.errors import InvalidIdentifier
from ..protocol.identifiers import parse_user_id
from ..storage.protocols.composite import HasFilters
from .auth import Authenticator
from .errors import MatrixError, bad_json, forbidden, invalid_param
from .filters import parse_filter, valid_filter_id
from .http_util import read_json_body

PREFIXES = ("/_matrix/client/v3", "/_matrix/client/r0")


class PresenceHandlers:
    def __init__(self, presence: PresenceService, authenticator: Authenticator) -> None:
        self._presence = presence
        self._auth = authenticator

    def routes(self) -> list[web.RouteDef]:
        r: list[web.RouteDef] = []
        for p in PREFIXES:
            r += [
                web.get(p + "/presence/{user}/status", self.get_status),
                web.put(p + "/presence/{user}/status", self.put_status),
            ]
        return r

    @staticmethod
    def _user(request: web.Request) -> str:
        raw = request.match_info["user"]
        try:
            return str(parse_user_id(raw))
        except InvalidIdentifier:
            raise invalid_param(f"Invalid user id {raw!r}") from None

    async def get_status(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        user_id = self._user(request)
        if not self._presence.enabled:
            return web.json_response({"presence": "offline"})
        if not await self._presence.may_see(requester.user_id, user_id):
            raise forbidden("You are not allowed to see their presence")
        state = await self._presence.get_state(user_id)
        return web.json_response(client_content(state, now_ms()))

    async def put_status(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        user_id = self._user(request)
        if user_id != requester.user_id:
            raise forbidden("You can only set your own presence state")
        body = await read_json_body(request)
        if "presence" not in body:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing 'presence'")
        state = body["presence"]
        if state not in STATES:
            raise invalid_param(f"'presence' must be one of {', '.join(STATES)}")
        status_msg = body.get("status_msg")
        if status_msg is not None and not isinstance(status_msg, str):
            raise bad_json("'status_msg' must be a string")
        if status_msg is not None and len(status_msg.encode("utf-8", "surrogatepass")) > MAX_STATUS_MSG_BYTES:
            raise invalid_param(f"'status_msg' is longer than {MAX_STATUS_MSG_BYTES} bytes")
        await self._presence.set_state(user_id, requester.device_id, str(state), status_msg)
        return web.json_response({})


async def sync_presence_filter(storage: HasFilters, user_id: str, raw_filter: str | None) -> Any:
    """The ``presence`` part (an ``EventFilter``) of /sync's ``filter`` parameter (an uploaded filter's id
    or inline JSON), or None."""
    if not raw_filter:
        return None
    if valid_filter_id(raw_filter):
        parsed = await storage.filters.get_filter(user_id, raw_filter)
    else:
        parsed = parse_filter(raw_filter)
    return parsed.get("presence") if isinstance(parsed, dict) else None
