"""Federation route for spaces: ``GET /_matrix/federation/v1/hierarchy/{roomId}`` (S2S "Spaces").
Authentication and parameters only; the answer is the room layer's (rooms.spaces.SpaceHierarchy), passed
in as ``handler`` so this transport module never imports the room layer."""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from .errors import FederationRequestError
from .keys import Keyring
from .request_auth import authenticate_request


class HierarchyHandler(Protocol):
    async def federation_hierarchy(
        self, origin: str, room_id: str, suggested_only: bool
    ) -> dict[str, Any]: ...


def add_space_routes(
    app: web.Application, keyring: Keyring, server_name: str, handler: HierarchyHandler
) -> None:
    async def hierarchy(request: web.Request) -> web.Response:
        origin = await authenticate_request(request, keyring, server_name)
        raw = request.query.get("suggested_only", "false")
        try:
            if raw not in ("true", "false"):
                raise FederationRequestError(400, "M_INVALID_PARAM", "suggested_only must be true or false")
            result = await handler.federation_hierarchy(origin, request.match_info["room"], raw == "true")
        except FederationRequestError as e:
            return web.json_response(e.to_json(), status=e.status)
        return web.json_response(result)

    app.router.add_get("/_matrix/federation/v1/hierarchy/{room}", hierarchy)
