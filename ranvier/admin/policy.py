"""What admins decide about users and rooms, applied to client requests:

- shadow-banned users (Synapse's ``/users/{userId}/shadow_ban``): a request of theirs that would send
  something to others (an event, a state event, a redaction, an invite, typing) is answered as if it had
  succeeded (a fresh event id) and nothing is created, stored or sent, as Synapse does;
- blocked rooms (``/rooms/{roomId}/block``): local users cannot join them (403 M_FORBIDDEN);
- per-user message rate-limit overrides (``/users/{userId}/override_ratelimit``), asked by the client
  API's rate-limit middleware (``client_api.ratelimits``).

The decisions live in the database (``storage.sql.admin``) and are mirrored here in memory, loaded at start
and updated by the admin endpoints, so that requests of users nobody has restricted cost no query.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from ..client_api.errors import MatrixError
from ..client_api.http_util import access_token_from
from ..storage.protocols.accounts import DeviceStorage
from ..storage.protocols.admin import AdminStorage
from ..storage.protocols.directory import AliasStorage
from ..storage.sql.admin import RateLimitOverride

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_CLIENT = r"^/_matrix/client/(?:v3|r0)"
# Requests that put something in front of other users (CS "Sending events to a room", "Redactions",
# "Room membership" invites, "Typing notifications").
_SENDS = re.compile(_CLIENT + r"/rooms/([^/]+)/(send|state|redact)/")
_OTHER_SENDS = re.compile(_CLIENT + r"/rooms/([^/]+)/(invite|typing/[^/]+)$")
# Joins of a room by id (CS "Joining rooms"); /join/{roomIdOrAlias} with an alias is resolved locally.
_JOINS = re.compile(_CLIENT + r"/(?:rooms/([^/]+)/join|join/([^/]+))$")


class AdminPolicy:
    def __init__(self, store: AdminStorage, devices: DeviceStorage, aliases: AliasStorage) -> None:
        self._store = store
        self._devices = devices
        self._aliases = aliases
        self.shadow_banned: set[str] = set()
        self.overrides: dict[str, RateLimitOverride] = {}
        self.blocked_rooms: set[str] = set()

    async def load(self) -> None:
        self.shadow_banned = await self._store.shadow_banned_users()
        self.overrides = await self._store.all_overrides()
        self.blocked_rooms = await self._store.blocked_rooms()

    async def set_shadow_banned(self, user_id: str, banned: bool) -> None:
        await self._store.set_shadow_banned(user_id, banned)
        (self.shadow_banned.add if banned else self.shadow_banned.discard)(user_id)

    async def set_override(self, user_id: str, override: RateLimitOverride | None) -> None:
        if override is None:
            await self._store.delete_override(user_id)
            self.overrides.pop(user_id, None)
        else:
            await self._store.set_override(user_id, override)
            self.overrides[user_id] = override

    async def set_room_blocked(self, room_id: str, by_user: str, blocked: bool) -> None:
        await self._store.set_room_blocked(room_id, by_user, blocked)
        (self.blocked_rooms.add if blocked else self.blocked_rooms.discard)(room_id)

    async def blocked_by(self, room_id: str) -> str | None:
        """Who blocked the room, if it is blocked."""
        return await self._store.room_blocked_by(room_id)

    async def _user_of(self, request: web.Request) -> str | None:
        token = access_token_from(request)
        if token is None:
            return None
        owner = await self._devices.get_user_by_token(token)
        return None if owner is None else owner[0]

    async def override_for(self, request: web.Request) -> tuple[int, int] | None:
        """The message rate-limit override of the requesting user as (messages_per_second, burst_count),
        if any (one token look-up, and only while some user has an override)."""
        if not self.overrides:
            return None
        user_id = await self._user_of(request)
        override = None if user_id is None else self.overrides.get(user_id)
        return None if override is None else (override.messages_per_second, override.burst_count)

    async def _blocked_join_target(self, request: web.Request) -> str | None:
        match = _JOINS.match(request.path)
        if match is None:
            return None
        target = match.group(1) or match.group(2)
        if target.startswith("#"):
            record = await self._aliases.get_alias(target)
            target = record.room_id if record is not None else target
        return target if target in self.blocked_rooms else None

    def middleware(self) -> Middleware:
        @web.middleware
        async def admin_policy(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.method in ("PUT", "POST"):
                if self.blocked_rooms and await self._blocked_join_target(request) is not None:
                    raise MatrixError(403, "M_FORBIDDEN", "This room has been blocked on this server")
                if self.shadow_banned and (_SENDS.match(request.path) or _OTHER_SENDS.match(request.path)):
                    user_id = await self._user_of(request)
                    if user_id in self.shadow_banned:
                        # Shadow-banned: the request looks successful and nothing happens.
                        if _SENDS.match(request.path):
                            return web.json_response({"event_id": _fake_event_id()})
                        return web.json_response({})
            return await handler(request)

        return admin_policy


def _fake_event_id() -> str:
    # The shape of a room v4+ event id (a URL-safe base64 SHA-256), random, as Synapse answers.
    digest = hashlib.sha256(secrets.token_bytes(32)).digest()
    return "$" + base64.urlsafe_b64encode(digest).decode().rstrip("=")
