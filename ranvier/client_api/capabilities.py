"""``GET /capabilities`` (CS "Capabilities negotiation"): what this server lets the user do, computed from
the configuration that governs each endpoint."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..config import Accounts
from ..protocol.room_versions import KNOWN_ROOM_VERSIONS
from .auth import Authenticator

PREFIXES = ("/_matrix/client/v3", "/_matrix/client/r0")


class CapabilitiesHandlers:
    def __init__(
        self, authenticator: Authenticator, default_room_version: str, accounts: Accounts | None = None
    ) -> None:
        self._auth = authenticator
        self._default_room_version = default_room_version
        self._accounts = accounts or Accounts()

    def routes(self) -> list[web.RouteDef]:
        return [web.get(p + "/capabilities", self.capabilities) for p in PREFIXES]

    def body(self, is_admin: bool = False) -> dict[str, Any]:
        accounts = self._accounts
        # The profile fields this server stores and lets users set (PUT /profile/{userId}/{keyName}).
        settable = [
            name
            for name, allowed in (
                ("displayname", accounts.set_displayname),
                ("avatar_url", accounts.set_avatar_url),
            )
            if allowed
        ]
        body: dict[str, Any] = {
            "capabilities": {
                # "### m.room_versions capability": every version we can create or join, all stable.
                "m.room_versions": {
                    "default": self._default_room_version,
                    "available": {version: "stable" for version in KNOWN_ROOM_VERSIONS},
                },
                # POST /account/password (client_api.account_manage), unless the config turns it off.
                "m.change_password": {"enabled": accounts.password_change},
                "m.set_displayname": {"enabled": accounts.set_displayname},
                "m.set_avatar_url": {"enabled": accounts.set_avatar_url},
                # v1.16: which fields PUT /profile may change; only these two are stored.
                "m.profile_fields": {"enabled": bool(settable), "allowed": settable},
                # No 3PID can be validated here (client_api.account_manage): adding/removing is refused.
                "m.3pid_changes": {"enabled": False},
                # POST /login/get_token, off unless accounts.login_get_token.
                "m.get_login_token": {"enabled": accounts.login_get_token},
            }
        }
        if is_admin:
            # v1.18: admins may lock and suspend accounts (client_api.account_moderation); the spec asks
            # to leave the capability out for everyone else.
            body["capabilities"]["m.account_moderation"] = {"lock": True, "suspend": True}
        return body

    async def capabilities(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        return web.json_response(self.body(requester.is_admin))
