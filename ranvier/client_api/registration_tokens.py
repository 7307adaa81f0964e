"""Token-gated registration (CS "Token-authenticated registration", ``m.login.registration_token``,
v1.2): with ``registration.requires_token`` the only /register UIA stage is a token the admin API made
(``/_synapse/admin/v1/registration_tokens``, ranvier.admin.server), and
``GET /_matrix/client/v1/register/m.login.registration_token/validity`` tells a client whether its token
is still good."""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from ..clock import now_ms
from .errors import MatrixError, forbidden, missing_param

REGISTRATION_TOKEN = "m.login.registration_token"
VALIDITY_PATH = "/_matrix/client/v1/register/m.login.registration_token/validity"


class TokenRecord(Protocol):
    def usable(self, now: int) -> bool: ...


class RegistrationTokenStorage(Protocol):
    """``storage.sql.admin.AdminStore``'s registration-token part."""

    async def get_token(self, token: str) -> Any: ...
    async def complete_token_use(self, token: str) -> bool: ...


async def check_token(tokens: RegistrationTokenStorage, auth: dict[str, Any]) -> str:
    """The auth dict's token if it can still register an account; a MatrixError (for the UIA answer)
    otherwise. The use is counted later, with ``complete_token_use``, once the registration goes ahead."""
    token = auth.get("token")
    if not isinstance(token, str) or not token:
        raise MatrixError(401, "M_MISSING_PARAM", "Missing 'token'")
    record = await tokens.get_token(token)
    if record is None or not record.usable(now_ms()):
        raise MatrixError(401, "M_FORBIDDEN", "Invalid registration token")
    return token


class RegistrationTokenValidity:
    def __init__(self, tokens: RegistrationTokenStorage | None, registration_enabled: bool) -> None:
        self._tokens = tokens
        self._registration_enabled = registration_enabled

    def routes(self) -> list[web.RouteDef]:
        return [web.get(VALIDITY_PATH, self.validity)]

    async def validity(self, request: web.Request) -> web.Response:
        if not self._registration_enabled:
            raise forbidden("Registration is not enabled on this homeserver.")
        token = request.query.get("token")
        if not token:
            raise missing_param("Missing 'token'")
        if self._tokens is None:
            # Open registration needs no token, so none is recognised.
            return web.json_response({"valid": False})
        record = await self._tokens.get_token(token)
        return web.json_response({"valid": record is not None and record.usable(now_ms())})
