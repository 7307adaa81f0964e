"""Client config: global and per-room account data (CS "Client Config"), plus the private per-room marker
that records a forgotten room.

``POST /rooms/{id}/forget`` stores the id of the membership event that was forgotten under
``FORGOTTEN_TYPE`` in the room's account data. While the user's membership is still that event, /sync
leaves the room out of ``leave`` and /messages and /context refuse its history; a later join or invite
is a new event, so the room comes back. Nothing is deleted (the room's events are shared). The
marker is ours alone: it is never served to clients nor accepted from them.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..protocol.errors import InvalidIdentifier
from ..protocol.identifiers import parse_room_id
from ..push.rules import ACCOUNT_DATA_TYPE as PUSH_RULES
from ..push.rules import merged_ruleset, stored_form
from ..storage.protocols.composite import HasAccountData
from .auth import Authenticator, Requester
from .ephemeral import FULLY_READ, SyncNotifier
from .errors import MatrixError, forbidden, invalid_param, not_found
from .http_util import read_json_body

PREFIXES = ("/_matrix/client/v3", "/_matrix/client/r0")
FORGOTTEN_TYPE = "org.ranvier.internal.forgotten"
MAX_TYPE_LEN = 255


def is_internal_type(data_type: str) -> bool:
    return data_type.startswith("org.ranvier.internal.")


def client_account_data(data: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Account data as /sync events, without our private markers."""
    return [{"type": t, "content": c} for t, c in sorted(data.items()) if not is_internal_type(t)]


async def forget_room(
    storage: HasAccountData, user_id: str, room_id: str, membership_event_id: str | None
) -> None:
    await storage.account_data.put_room(user_id, room_id, FORGOTTEN_TYPE, {"event_id": membership_event_id})


async def forgotten_event(storage: HasAccountData, user_id: str, room_id: str) -> str | None:
    """The membership event id the user forgot the room at, if they did."""
    marker = await storage.account_data.get_room(user_id, room_id, FORGOTTEN_TYPE)
    value = marker.get("event_id") if marker else None
    return value if isinstance(value, str) else None


class AccountDataHandlers:
    def __init__(self, storage: HasAccountData, authenticator: Authenticator, notifier: SyncNotifier) -> None:
        self._storage = storage
        self._auth = authenticator
        self._notifier = notifier

    def routes(self) -> list[web.RouteDef]:
        r: list[web.RouteDef] = []
        for p in PREFIXES:
            r += [
                web.get(p + "/user/{user}/account_data/{type}", self.get_global),
                web.put(p + "/user/{user}/account_data/{type}", self.put_global),
                web.get(p + "/user/{user}/rooms/{room}/account_data/{type}", self.get_room),
                web.put(p + "/user/{user}/rooms/{room}/account_data/{type}", self.put_room),
            ]
        return r

    async def _owner(self, request: web.Request) -> tuple[Requester, str]:
        requester = await self._auth.require_user(request)
        if request.match_info["user"] != requester.user_id:
            raise forbidden("You cannot access account data for other users")
        data_type = request.match_info["type"]
        if not data_type or len(data_type) > MAX_TYPE_LEN:
            raise invalid_param("Invalid account data type")
        return requester, data_type

    @staticmethod
    def room_id(request: web.Request) -> str:
        """The path's room id: either form (``!x:server``, or room version 12's domainless one)."""
        room_id = request.match_info["room"]
        try:
            parse_room_id(room_id)
        except InvalidIdentifier:
            try:
                parse_room_id(room_id, domainless=True)  # room version 12's form
            except InvalidIdentifier:
                raise invalid_param(f"{room_id!r} is not a valid room ID") from None
        return room_id

    async def _content_to_store(self, request: web.Request, data_type: str) -> dict[str, Any]:
        # Account data is never signed or put in an event, so floats are fine (clients store settings and
        # tag orders as fractions; Synapse accepts them too).
        body = await read_json_body(request, strict=False)
        # CS "PUT /user/{userId}/account_data/{type}": m.fully_read is set through /read_markers only.
        if data_type == FULLY_READ:
            raise MatrixError(405, "M_BAD_JSON", "Cannot set m.fully_read through this API.")
        # CS "Client Config": "Servers MUST reject clients from setting account data for event types that
        # the server manages": m.push_rules is edited through /pushrules.
        if data_type == PUSH_RULES:
            raise MatrixError(405, "M_BAD_JSON", "Cannot set m.push_rules through this API; use /pushrules.")
        if is_internal_type(data_type):
            raise forbidden("This account data type is reserved by the server")
        return body

    async def get_global(self, request: web.Request) -> web.Response:
        requester, data_type = await self._owner(request)
        content = None
        if not is_internal_type(data_type):
            content = await self._storage.account_data.get_global(requester.user_id, data_type)
        if data_type == PUSH_RULES:
            # The user's effective rules, the server's defaults included, whether edited yet or not.
            content = stored_form(merged_ruleset(requester.user_id, content))
        if content is None:
            raise not_found("Account data not found")
        return web.json_response(content)

    async def put_global(self, request: web.Request) -> web.Response:
        requester, data_type = await self._owner(request)
        content = await self._content_to_store(request, data_type)
        await self._storage.account_data.put_global(requester.user_id, data_type, content)
        self._notifier.notify()
        return web.json_response({})

    async def get_room(self, request: web.Request) -> web.Response:
        requester, data_type = await self._owner(request)
        room_id = self.room_id(request)
        content = None
        if not is_internal_type(data_type):
            content = await self._storage.account_data.get_room(requester.user_id, room_id, data_type)
        if content is None:
            raise not_found("Room account data not found")
        return web.json_response(content)

    async def put_room(self, request: web.Request) -> web.Response:
        requester, data_type = await self._owner(request)
        room_id = self.room_id(request)
        content = await self._content_to_store(request, data_type)
        await self._storage.account_data.put_room(requester.user_id, room_id, data_type, content)
        self._notifier.notify()
        return web.json_response({})
