"""Account management beyond login: changing the password, deactivating, the third-party identifier (3PID)
endpoints and OpenID tokens (CS "Account registration and management", "Adding Account Administrative
Contact Information", "OpenID").

This server has no email or SMS sender and talks to no identity server, so no 3PID can ever be validated
or bound: the 3PID endpoints answer what that means in the spec's own error codes (never 404), and an
account's 3PID list is empty because nothing can add to it.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from ..clock import now_ms
from ..storage.protocols.composite import HasAccountTokens, HasDevices, HasPushers, HasUsers
from .auth import Authenticator, Requester
from .errors import MatrixError, forbidden, invalid_param
from .http_util import read_json_body, require_str

PREFIXES = ("/_matrix/client/v3", "/_matrix/client/r0")

PasswordUia = Callable[[Requester, dict[str, Any], str], Awaitable[None]]


class AccountManageStorage(HasUsers, HasDevices, HasAccountTokens, HasPushers, Protocol):
    """What client_api/account_manage.py asks of storage."""


class Deactivator(Protocol):
    """``ranvier.accounts.deactivation.AccountDeactivator``."""

    async def deactivate(self, user_id: str, *, erase: bool = False) -> Any: ...


def _optional_bool(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise invalid_param(f"'{key}' must be a boolean")
    return value


class AccountManagementHandlers:
    def __init__(
        self,
        storage: AccountManageStorage,
        authenticator: Authenticator,
        password_uia: PasswordUia,
        deactivator: Deactivator,
        server_name: str,
        *,
        password_change: bool = True,
        openid_token_lifetime_ms: int = 3_600_000,
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        """``password_uia(requester, body, purpose)``: AccountHandlers.require_password_uia."""
        self._storage = storage
        self._auth = authenticator
        self._password_uia = password_uia
        self._deactivator = deactivator
        self._server_name = server_name
        self._password_change = password_change
        self._openid_lifetime_ms = openid_token_lifetime_ms
        self._clock_ms = clock_ms

    def routes(self) -> list[web.RouteDef]:
        client: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
            ("POST", "/account/password", self.change_password),
            ("POST", "/account/deactivate", self.deactivate),
            ("GET", "/account/3pid", self.list_threepids),
            ("POST", "/account/3pid", self.add_threepid),  # deprecated since v1.1, still in the spec
            ("POST", "/account/3pid/add", self.add_threepid),
            ("POST", "/account/3pid/bind", self.bind_threepid),
            ("POST", "/account/3pid/delete", self.delete_threepid),
            ("POST", "/account/3pid/unbind", self.unbind_threepid),
            ("POST", "/user/{user_id}/openid/request_token", self.openid_request_token),
        ]
        for medium in ("email", "msisdn"):
            client += [
                ("POST", f"/register/{medium}/requestToken", self._request_token(medium, "register")),
                ("POST", f"/account/password/{medium}/requestToken", self._request_token(medium, "password")),
                ("POST", f"/account/3pid/{medium}/requestToken", self._request_token(medium, "add")),
            ]
        return [web.route(m, prefix + path, h) for prefix in PREFIXES for m, path, h in client]

    # -- password and deactivation ---------------------------------------------------------------------

    async def change_password(self, request: web.Request) -> web.Response:
        """CS "POST /account/password": password UIA, then the new password; ``logout_devices`` (default
        true) logs out every other device (their tokens, E2EE keys and pushers), keeping this one."""
        # Without an access token the spec's flow is an email-validated reset, which this server
        # cannot offer: M_MISSING_TOKEN says what is needed.
        requester = await self._auth.require_user(request)
        if not self._password_change:
            raise forbidden("Password changes are disabled on this server")
        body = await read_json_body(request)
        new_password = require_str(body, "new_password")
        logout_devices = _optional_bool(body, "logout_devices", True)
        await self._password_uia(requester, body, "password")
        await self._storage.users.set_password(requester.user_id, new_password)
        if logout_devices:
            await self._storage.devices.delete_all_devices(
                requester.user_id, except_device=requester.device_id
            )
            for pusher in await self._storage.pushers.pushers_for_user(requester.user_id):
                if pusher.device_id != requester.device_id:
                    await self._storage.pushers.delete_pusher(
                        requester.user_id, pusher.app_id, pusher.pushkey
                    )
        return web.json_response({})

    async def deactivate(self, request: web.Request) -> web.Response:
        """CS "POST /account/deactivate": password UIA (an appservice deactivates its users without),
        then ``accounts.deactivation``; ``erase`` (default false) hides the user's messages from those
        who join later."""
        requester = await self._auth.require_user(request)
        body = await read_json_body(request, allow_empty=True)
        erase = _optional_bool(body, "erase", False)
        if requester.appservice is None:
            await self._password_uia(requester, body, "deactivate")
        await self._deactivator.deactivate(requester.user_id, erase=erase)
        # No 3PID was ever bound through this server, so there was nothing to unbind: every unbinding
        # (of none) succeeded.
        return web.json_response({"id_server_unbind_result": "success"})

    # -- third-party identifiers -----------------------------------------------------------------------

    async def list_threepids(self, request: web.Request) -> web.Response:
        await self._auth.require_user(request)
        # Nothing can add a 3PID here (see add_threepid), so every account's list is empty.
        return web.json_response({"threepids": []})

    async def add_threepid(self, request: web.Request) -> web.Response:
        """CS "POST /account/3pid/add": the ``sid`` must name a validation session this server ran, and
        it runs none (requestToken is refused), so after UIA every attempt fails validation."""
        requester = await self._auth.require_user(request)
        body = await read_json_body(request)
        creds = body.get("three_pid_creds", body)
        if not isinstance(creds, dict):
            raise invalid_param("'three_pid_creds' must be an object")
        require_str(creds, "client_secret")
        require_str(creds, "sid")
        if request.path.endswith("/add"):
            await self._password_uia(requester, body, "add_threepid")
        raise MatrixError(
            400, "M_THREEPID_AUTH_FAILED", "No such validation session: this server does not validate 3PIDs"
        )

    async def bind_threepid(self, request: web.Request) -> web.Response:
        await self._auth.require_user(request)
        body = await read_json_body(request)
        for key in ("client_secret", "id_server", "id_access_token", "sid"):
            require_str(body, key)
        raise forbidden("This homeserver does not contact identity servers, so it cannot bind 3PIDs")

    async def delete_threepid(self, request: web.Request) -> web.Response:
        await self._auth.require_user(request)
        body = await read_json_body(request)
        medium, address = require_str(body, "medium"), require_str(body, "address")
        raise MatrixError(400, "M_THREEPID_NOT_FOUND", f"No {medium} {address!r} is bound to this account")

    async def unbind_threepid(self, request: web.Request) -> web.Response:
        await self._auth.require_user(request)
        body = await read_json_body(request)
        require_str(body, "medium")
        require_str(body, "address")
        # CS: "no-support" when the homeserver could not determine an identity server to unbind from;
        # it knows of none.
        return web.json_response({"id_server_unbind_result": "no-support"})

    def _request_token(self, medium: str, purpose: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            body = await read_json_body(request)
            require_str(body, "client_secret")
            if medium == "email":
                require_str(body, "email")
            else:
                require_str(body, "country")
                require_str(body, "phone_number")
            if not isinstance(body.get("send_attempt"), int):
                raise invalid_param("'send_attempt' must be an integer")
            kind = "email addresses" if medium == "email" else "phone numbers"
            if purpose == "add":
                # The spec's own code for this case (CS "POST /account/3pid/email/requestToken").
                raise MatrixError(
                    400, "M_THREEPID_MEDIUM_NOT_SUPPORTED", f"This homeserver does not support adding {kind}"
                )
            what = "registration" if purpose == "register" else "password resets"
            raise MatrixError(
                403, "M_THREEPID_DENIED", f"This homeserver does not validate {kind} for {what}"
            )

        return handler

    # -- OpenID --------------------------------------------------------------------------------------

    async def openid_request_token(self, request: web.Request) -> web.Response:
        """CS "POST /user/{userId}/openid/request_token": a token a third party checks with
        ``GET /_matrix/federation/v1/openid/userinfo`` (``openid_userinfo`` below)."""
        requester = await self._auth.require_user(request)
        if request.match_info["user_id"] != requester.user_id:
            raise forbidden("You may only request OpenID tokens for yourself")
        await read_json_body(request, allow_empty=True)
        token = "rvo_" + secrets.token_urlsafe(32)
        await self._storage.account_tokens.create_openid_token(
            requester.user_id, token, self._clock_ms() + self._openid_lifetime_ms
        )
        return web.json_response(
            {
                "access_token": token,
                "token_type": "Bearer",
                "matrix_server_name": self._server_name,
                "expires_in": self._openid_lifetime_ms // 1000,
            }
        )

    async def openid_userinfo(self, request: web.Request) -> web.Response:
        """S2S "GET /_matrix/federation/v1/openid/userinfo": no X-Matrix signature, the token is the proof."""
        token = request.query.get("access_token")
        if not token:
            raise MatrixError(401, "M_MISSING_TOKEN", "Missing access_token")
        user_id = await self._storage.account_tokens.openid_token_owner(token, self._clock_ms())
        if user_id is None:
            raise MatrixError(401, "M_UNKNOWN_TOKEN", "Access token unknown or expired")
        return web.json_response({"sub": user_id})

    def add_federation_routes(self, app: web.Application) -> None:
        # The federation listener has no Matrix-error middleware: errors are answered here.
        async def handler(request: web.Request) -> web.Response:
            try:
                return await self.openid_userinfo(request)
            except MatrixError as e:
                return web.json_response(e.to_json(), status=e.status)

        app.router.add_get("/_matrix/federation/v1/openid/userinfo", handler)
