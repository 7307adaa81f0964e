"""``GET /voip/turnServer`` (CS "Voice over IP" > "Server Behaviour") and ``GET /.well-known/matrix/support``.

TURN credentials follow Synapse's scheme (and coturn's ``use-auth-secret``): with a shared secret, the
username is ``<expiry unix seconds>:<user id>`` and the password the base64 HMAC-SHA1 of that username
keyed by the secret; otherwise a fixed username/password from the config. Without ``turn_uris`` the
answer is ``{}``, as Synapse answers, which clients read as "no TURN server".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ..clock import now_ms
from ..config import Accounts, Voip
from ..config_schema import as_dict
from .auth import Authenticator
from .errors import not_found

PREFIXES = ("/_matrix/client/v3", "/_matrix/client/r0")


def turn_credentials(secret: str, user_id: str, expires_s: int) -> tuple[str, str]:
    username = f"{expires_s}:{user_id}"
    mac = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return username, base64.b64encode(mac).decode("ascii")


class VoipHandlers:
    def __init__(
        self,
        authenticator: Authenticator,
        voip: Voip,
        accounts: Accounts,
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        self._auth = authenticator
        self._voip = voip
        self._accounts = accounts
        self._clock_ms = clock_ms

    def routes(self) -> list[web.RouteDef]:
        return [web.get(p + "/voip/turnServer", self.turn_server) for p in PREFIXES] + [
            web.get("/.well-known/matrix/support", self.support)
        ]

    async def turn_server(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        voip = self._voip
        if not voip.turn_uris:
            return web.json_response({})
        lifetime_s = int(voip.turn_user_lifetime)
        body: dict[str, Any] = {"uris": list(voip.turn_uris), "ttl": lifetime_s}
        if voip.turn_shared_secret:
            expires = self._clock_ms() // 1000 + lifetime_s
            body["username"], body["password"] = turn_credentials(
                voip.turn_shared_secret, requester.user_id, expires
            )
        elif voip.turn_username and voip.turn_password:
            body["username"], body["password"] = voip.turn_username, voip.turn_password
        else:
            return web.json_response({})  # URIs without credentials: nothing a client could use (Synapse)
        return web.json_response(body)

    async def support(self, request: web.Request) -> web.Response:
        """CS "GET /.well-known/matrix/support": 404 when nothing is configured, as the spec allows."""
        accounts = self._accounts
        if not accounts.support_contacts and accounts.support_page is None:
            raise not_found("No support information is configured")
        body: dict[str, Any] = {}
        if accounts.support_contacts:
            body["contacts"] = [as_dict(c, exclude_none=True) for c in accounts.support_contacts]
        if accounts.support_page is not None:
            body["support_page"] = accounts.support_page
        return web.json_response(body, headers={"Access-Control-Allow-Origin": "*"})
