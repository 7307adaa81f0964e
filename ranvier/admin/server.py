"""Server-wide admin endpoints in the shape of Synapse's admin API:

- ``GET /_synapse/admin/v1/server_version`` (no authentication, as in Synapse);
- ``GET /_synapse/admin/v1/background_updates/status``: Synapse reports its database background updates.
  Ranvier has none of those (every schema migration completes before the server serves), so
  ``current_updates`` lists the background work it does have: the filling of holes in room timelines
  (``rooms.gap_filler``), as ``{"main": {"name": "gap_fill", "rooms": [...]}}`` while any room is being
  filled, and nothing otherwise. ``enabled`` is true: Ranvier has no switch that pauses that work;
- registration tokens (``/_synapse/admin/v1/registration_tokens``: list with ``valid``, ``new``, get,
  update, delete), redeemed by ``m.login.registration_token`` at registration.
"""

from __future__ import annotations

import re
import secrets
import string
from typing import Any, Protocol

from aiohttp import web

from .. import __version__
from ..client_api.errors import invalid_param, not_found
from ..client_api.http_util import read_json_body
from ..clock import now_ms
from ..storage.protocols.admin import AdminStorage
from ..storage.protocols.composite import HasEvents
from ..storage.sql.admin import RegistrationToken
from .access import AdminAccess, note, query_bool

V1 = "/_synapse/admin/v1"
TOKENS = V1 + "/registration_tokens"
TOKEN_CHARS = re.compile(r"^[A-Za-z0-9._~-]{1,64}$")
_ALPHABET = string.ascii_letters + string.digits + "._~-"


class GapFillerStatus(Protocol):
    def is_idle(self, room_id: str) -> bool: ...


def token_json(token: RegistrationToken) -> dict[str, Any]:
    return {
        "token": token.token,
        "uses_allowed": token.uses_allowed,
        "pending": token.pending,
        "completed": token.completed,
        "expiry_time": token.expiry_time,
    }


def _optional_count(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise invalid_param(f"{key} must be a non-negative integer or null")
    return value


def _expiry(body: dict[str, Any]) -> int | None:
    value = body.get("expiry_time")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < now_ms():
        raise invalid_param("expiry_time must not be in the past")
    return value


class ServerAdminHandlers:
    def __init__(
        self,
        storage: HasEvents,
        admin_store: AdminStorage,
        access: AdminAccess,
        gap_filler: GapFillerStatus | None,
    ) -> None:
        self._storage = storage
        self._store = admin_store
        self._access = access
        self._gap_filler = gap_filler

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(V1 + "/server_version", self.server_version),
            web.get(V1 + "/background_updates/status", self.background_updates),
            web.get(TOKENS, self.list_tokens),
            web.post(TOKENS + "/new", self.new_token),
            web.get(TOKENS + "/{token}", self.get_token),
            web.put(TOKENS + "/{token}", self.update_token),
            web.delete(TOKENS + "/{token}", self.delete_token),
        ]

    async def server_version(self, request: web.Request) -> web.Response:
        return web.json_response({"server_version": __version__})

    async def background_updates(self, request: web.Request) -> web.Response:
        await self._access.require_admin(request)
        updates: dict[str, Any] = {}
        if self._gap_filler is not None:
            rooms = await self._storage.events.get_rooms_with_backward_extremities()
            filling = sorted(r for r in rooms if not self._gap_filler.is_idle(r))
            if filling:
                updates["main"] = {"name": "gap_fill", "rooms": filling}
        return web.json_response({"enabled": True, "current_updates": updates})

    # -- registration tokens ----------------------------------------------------------------------

    async def list_tokens(self, request: web.Request) -> web.Response:
        await self._access.require_admin(request)
        tokens = await self._store.list_tokens()
        if "valid" in request.query:
            valid = query_bool(request, "valid", True)
            now = now_ms()
            tokens = [t for t in tokens if t.usable(now) == valid]
        return web.json_response({"registration_tokens": [token_json(t) for t in tokens]})

    async def new_token(self, request: web.Request) -> web.Response:
        admin = await self._access.require_admin(request)
        body = await read_json_body(request, allow_empty=True)
        uses_allowed = _optional_count(body, "uses_allowed")
        expiry_time = _expiry(body)
        token = body.get("token")
        if token is not None:
            if not isinstance(token, str) or not TOKEN_CHARS.match(token):
                raise invalid_param("token must be 1 to 64 characters of A-Z a-z 0-9 . _ ~ -")
            if not await self._store.create_token(token, uses_allowed, expiry_time):
                raise invalid_param(f"Token already exists: {token}")
        else:
            length = body.get("length", 16)
            if not isinstance(length, int) or isinstance(length, bool) or not 1 <= length <= 64:
                raise invalid_param("length must be an integer from 1 to 64")
            while True:
                token = "".join(secrets.choice(_ALPHABET) for _ in range(length))
                if await self._store.create_token(token, uses_allowed, expiry_time):
                    break
        note(admin, "created registration token", uses_allowed=uses_allowed, expiry_time=expiry_time)
        created = await self._store.get_token(token)
        assert created is not None
        return web.json_response(token_json(created))

    async def _existing(self, request: web.Request) -> RegistrationToken:
        token = await self._store.get_token(request.match_info["token"])
        if token is None:
            raise not_found(f"No such registration token: {request.match_info['token']}")
        return token

    async def get_token(self, request: web.Request) -> web.Response:
        await self._access.require_admin(request)
        return web.json_response(token_json(await self._existing(request)))

    async def update_token(self, request: web.Request) -> web.Response:
        admin = await self._access.require_admin(request)
        existing = await self._existing(request)
        body = await read_json_body(request, allow_empty=True)
        changes: dict[str, int | None] = {}
        if "uses_allowed" in body:
            changes["uses_allowed"] = _optional_count(body, "uses_allowed")
        if "expiry_time" in body:
            changes["expiry_time"] = _expiry(body)
        updated = await self._store.update_token(existing.token, changes)
        if updated is None:
            raise not_found("No such registration token")
        note(admin, "updated registration token", **changes)
        return web.json_response(token_json(updated))

    async def delete_token(self, request: web.Request) -> web.Response:
        admin = await self._access.require_admin(request)
        existing = await self._existing(request)
        await self._store.delete_token(existing.token)
        note(admin, "deleted registration token")
        return web.json_response({})
