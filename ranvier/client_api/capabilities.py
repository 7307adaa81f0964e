"""``GET /capabilities`` (CS "Capabilities negotiation")."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..protocol.room_versions import KNOWN_ROOM_VERSIONS
from .auth import Authenticator

PREFIXES = ("/_matrix/client/v3", "/_matrix/client/r0")


class CapabilitiesHandlers:
    def __init__(self, authenticator: Authenticator, default_room_version: str) -> None:
        self._auth = authenticator
        self._default_room_version = default_room_version

    def routes(self) -> list[web.RouteDef]:
        return [web.get(p + "/capabilities", self.capabilities) for p in PREFIXES]

    def body(self) -> dict[str, Any]:
        return {
            "capabilities": {
                # "### m.room_versions capability": every version we can create or join, all stable.
                "m.room_versions": {
                    "default": self._default_room_version,
                    "available": {version: "stable" for version in KNOWN_ROOM_VERSIONS},
                },
                # There is no POST /account/password yet, so clients must not offer it.
                "m.change_password": {"enabled": False},
                "m.set_displayname": {"enabled": True},
                "m.set_avatar_url": {"enabled": True},
                "m.3pid_changes": {"enabled": False},
                "m.get_login_token": {"enabled": False},
            }
        }

    async def capabilities(self, request: web.Request) -> web.Response:
        await self._auth.require_user(request)  # the endpoint requires authentication
        return web.json_response(self.body())
