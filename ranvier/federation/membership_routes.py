"""Federation routes for membership: make_join/send_join (v2; v1 send_join was removed in v1.18),
make_leave/send_leave v2, make_knock/send_knock v1 and invite v2. Authentication and (de)serialisation
only: the decisions are the room layer's, reached through ``handler`` (rooms.resident.ResidentMembership),
which is passed in so this transport module never imports the room layer."""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from ..protocol.canonical_json import parse_json
from ..protocol.errors import CanonicalJsonError
from .errors import FederationRequestError
from .keys import Keyring
from .request_auth import authenticate_request

PREFIX = "/_matrix/federation"


class MembershipHandler(Protocol):
    async def make_membership(
        self, origin: str, room_id: str, user_id: str, membership: str, supported_versions: list[str] | None
    ) -> dict[str, Any]: ...

    async def send_membership(
        self,
        origin: str,
        room_id: str,
        event_id: str,
        pdu_json: Any,
        membership: str,
        omit_members: bool = False,
    ) -> dict[str, Any]: ...

    async def on_invite(self, origin: str, room_id: str, event_id: str, body: Any) -> dict[str, Any]: ...

    async def current_extremities(self, origin: str, room_id: str) -> dict[str, Any]: ...


def _error(e: FederationRequestError) -> web.Response:
    return web.json_response(e.to_json(), status=e.status)


async def _body(request: web.Request) -> Any:
    try:
        # Lenient numbers: events of room versions 1-5 may carry floats; Pdu applies the version's rules.
        return parse_json(await request.read(), strict=False)
    except CanonicalJsonError as e:
        raise FederationRequestError(400, "M_NOT_JSON", e.message) from None


def add_membership_routes(
    app: web.Application, keyring: Keyring, server_name: str, handler: MembershipHandler
) -> None:
    async def make_join(request: web.Request) -> web.Response:
        origin = await authenticate_request(request, keyring, server_name)
        versions = request.query.getall("ver", ["1"])  # spec: absent means only version 1
        try:
            result = await handler.make_membership(
                origin, request.match_info["room"], request.match_info["user"], "join", versions
            )
        except FederationRequestError as e:
            return _error(e)
        return web.json_response(result)

    async def make_knock(request: web.Request) -> web.Response:
        origin = await authenticate_request(request, keyring, server_name)
        # S2S "Knocking upon a room": ``ver`` is required (knocking exists since v7, so "1" alone is useless).
        versions = request.query.getall("ver", [])
        try:
            if not versions:
                raise FederationRequestError(400, "M_MISSING_PARAM", "the 'ver' query parameter is required")
            result = await handler.make_membership(
                origin, request.match_info["room"], request.match_info["user"], "knock", versions
            )
        except FederationRequestError as e:
            return _error(e)
        return web.json_response(result)

    async def make_leave(request: web.Request) -> web.Response:
        origin = await authenticate_request(request, keyring, server_name)
        try:
            result = await handler.make_membership(
                origin, request.match_info["room"], request.match_info["user"], "leave", None
            )
        except FederationRequestError as e:
            return _error(e)
        return web.json_response(result)

    def send(membership: str) -> Any:
        async def route(request: web.Request) -> web.Response:
            origin = await authenticate_request(request, keyring, server_name)
            try:
                body = await _body(request)
                # send_join v2 ?omit_members=true (MSC3706, spec v1.6): the joiner takes partial state.
                omit = membership == "join" and request.query.get("omit_members", "").lower() == "true"
                result = await handler.send_membership(
                    origin, request.match_info["room"], request.match_info["event"], body, membership, omit
                )
            except FederationRequestError as e:
                return _error(e)
            return web.json_response(result)

        return route

    async def invite(request: web.Request) -> web.Response:
        origin = await authenticate_request(request, keyring, server_name)
        try:
            body = await _body(request)
            result = await handler.on_invite(
                origin, request.match_info["room"], request.match_info["event"], body
            )
        except FederationRequestError as e:
            return _error(e)
        return web.json_response(result)

    async def extremities(request: web.Request) -> web.Response:
        origin = await authenticate_request(request, keyring, server_name)
        try:
            result = await handler.current_extremities(origin, request.match_info["room"])
        except FederationRequestError as e:
            return _error(e)
        return web.json_response(result)

    # MSC4370 (unstable prefix): joiners use it to find events their join did not reference.
    app.router.add_get(PREFIX + "/unstable/org.matrix.msc4370/extremities/{room}", extremities)
    app.router.add_get(PREFIX + "/v1/make_join/{room}/{user}", make_join)
    app.router.add_put(PREFIX + "/v2/send_join/{room}/{event}", send("join"))
    app.router.add_get(PREFIX + "/v1/make_leave/{room}/{user}", make_leave)
    app.router.add_put(PREFIX + "/v2/send_leave/{room}/{event}", send("leave"))
    app.router.add_put(PREFIX + "/v2/invite/{room}/{event}", invite)
    app.router.add_get(PREFIX + "/v1/make_knock/{room}/{user}", make_knock)
    app.router.add_put(PREFIX + "/v1/send_knock/{room}/{event}", send("knock"))
