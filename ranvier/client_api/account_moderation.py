"""``GET``/``PUT /_matrix/client/v1/admin/lock/{userId}`` and ``.../suspend/{userId}`` (CS "Server
administration", v1.18): server admins lock or suspend local accounts. The effect is enforced by the
Authenticator (M_USER_LOCKED on every request but logout; M_USER_SUSPENDED where
``accounts.moderation`` says so)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ..protocol.errors import InvalidIdentifier
from ..protocol.identifiers import parse_user_id, server_of
from ..storage.protocols.composite import HasUsers
from .auth import Authenticator
from .errors import forbidden, invalid_param, missing_param, not_found
from .http_util import read_json_body

PREFIX = "/_matrix/client/v1/admin"


class AccountModerationHandlers:
    def __init__(self, storage: HasUsers, authenticator: Authenticator, server_name: str) -> None:
        self._storage = storage
        self._auth = authenticator
        self._server_name = server_name

    def routes(self) -> list[web.RouteDef]:
        out = []
        for flag in ("locked", "suspended"):
            path = f"{PREFIX}/{'lock' if flag == 'locked' else 'suspend'}/{{user_id}}"
            out += [web.get(path, self._getter(flag)), web.put(path, self._setter(flag))]
        return out

    async def _target(self, request: web.Request) -> Any:
        """The local account named in the path; the admin check comes first, so that non-admins learn
        nothing of which accounts exist."""
        requester = await self._auth.require_user(request)
        if not requester.is_admin:
            raise forbidden("You are not a server admin")
        user_id = request.match_info["user_id"]
        try:
            parse_user_id(user_id)
        except InvalidIdentifier:
            raise invalid_param(f"Invalid user id {user_id!r}") from None
        if server_of(user_id) != self._server_name:
            raise invalid_param("User does not belong to the local server.")
        user = await self._storage.users.get_user(user_id)
        if user is None:
            raise not_found("Unknown user")
        return user

    def _getter(self, flag: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            user = await self._target(request)
            return web.json_response({flag: bool(getattr(user, flag))})

        return handler

    def _setter(self, flag: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            user = await self._target(request)
            body = await read_json_body(request)
            if flag not in body:
                raise missing_param(f"Missing '{flag}'")
            value = body[flag]
            if not isinstance(value, bool):
                raise invalid_param(f"'{flag}' must be a boolean")
            if flag == "locked":
                await self._storage.users.set_locked(user.user_id, value)
            else:
                await self._storage.users.set_suspended(user.user_id, value)
            return web.json_response({flag: value})

        return handler
