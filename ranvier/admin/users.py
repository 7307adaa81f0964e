"""User administration in the shape of Synapse's admin API (server admins only):

- ``GET /_synapse/admin/v2/users``: list (``from``/``limit``, ``name`` or ``user_id``, ``guests``,
  ``deactivated``, ``admins``, ``order_by``, ``dir``);
- ``GET/PUT /_synapse/admin/v2/users/{userId}``: details; create (201) or modify (password, displayname,
  avatar_url, admin, deactivated);
- ``POST /_synapse/admin/v1/deactivate/{userId}`` (``erase``): ``accounts.deactivation``;
- ``POST /_synapse/admin/v1/reset_password/{userId}`` (``new_password``, ``logout_devices``);
- ``GET /_synapse/admin/v1/whois/{userId}`` and the spec's ``GET /_matrix/client/v3/admin/whois/{userId}``;
- ``GET /_synapse/admin/v1/users/{userId}/joined_rooms`` and ``.../pushers``;
- ``POST/DELETE /_synapse/admin/v1/users/{userId}/shadow_ban`` and ``GET/POST/DELETE
  .../override_ratelimit`` (applied by ``admin.policy``);
- ``POST /_synapse/admin/v1/users/{userId}/login``: a token for the user, only where the configuration
  allows it (``admin_api.allow_login_as_user``, off by default);
- ``GET/PUT /_synapse/admin/v1/users/{userId}/admin`` (the admin flag alone) and
  ``GET /_synapse/admin/v1/username_available``.

Ranvier has no guests, user types, third-party ids, SSO or consent tracking: the fields Synapse gives
for those are answered as what is true here (``is_guest: false``, ``threepids: []``, ``user_type: null``),
and consent fields are left out. ``locked`` is the account's lock (CS "Account locking"), which PUT sets
as Synapse's does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from ..client_api.account import new_access_token, new_device_id
from ..client_api.errors import MatrixError, invalid_param, not_found
from ..client_api.http_util import optional_str, query_int, read_json_body
from ..protocol.identifiers import is_valid_localpart
from ..storage.protocols.accounts import UserExists
from ..storage.protocols.admin import AdminStorage
from ..storage.protocols.composite import HasAccountTokens, HasDevices, HasPushers, HasState, HasUsers
from ..storage.sql.admin import USER_ORDERS, RateLimitOverride
from ..storage.sql.users import UserRecord
from .access import AdminAccess, note, query_bool, query_dir
from .policy import AdminPolicy

V1 = "/_synapse/admin/v1"
V2 = "/_synapse/admin/v2"

ProfileHook = Callable[[str], Awaitable[None]]


class UserAdminStorage(HasState, HasUsers, HasDevices, HasAccountTokens, HasPushers, Protocol):
    """What admin/users.py asks of storage."""


class Deactivator(Protocol):
    """What this module needs of ``accounts.deactivation.AccountDeactivator``."""

    async def deactivate(self, user_id: str, *, erase: bool = False) -> Any: ...


def _bool_field(body: dict[str, Any], key: str) -> bool | None:
    value = body.get(key)
    if value is not None and not isinstance(value, bool):
        raise invalid_param(f"'{key}' must be a boolean")
    return value


class UserAdminHandlers:
    def __init__(
        self,
        storage: UserAdminStorage,
        admin_store: AdminStorage,
        access: AdminAccess,
        policy: AdminPolicy,
        *,
        deactivator: Deactivator | None,
        on_profile_changed: ProfileHook | None = None,
        allow_login_as_user: bool = False,
    ) -> None:
        self._storage = storage
        self._store = admin_store
        self._access = access
        self._policy = policy
        self._deactivator = deactivator
        self._on_profile_changed = on_profile_changed
        self._allow_login_as_user = allow_login_as_user

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(V2 + "/users", self.list_users),
            web.get(V2 + "/users/{user_id}", self.get_user),
            web.put(V2 + "/users/{user_id}", self.put_user),
            web.post(V1 + "/deactivate/{user_id}", self.deactivate),
            web.post(V1 + "/reset_password/{user_id}", self.reset_password),
            web.get(V1 + "/whois/{user_id}", self.whois),
            web.get("/_matrix/client/v3/admin/whois/{user_id}", self.whois),
            web.get("/_matrix/client/r0/admin/whois/{user_id}", self.whois),
            web.get(V1 + "/users/{user_id}/joined_rooms", self.joined_rooms),
            web.get(V1 + "/users/{user_id}/pushers", self.pushers),
            web.post(V1 + "/users/{user_id}/shadow_ban", self.shadow_ban),
            web.delete(V1 + "/users/{user_id}/shadow_ban", self.unshadow_ban),
            web.get(V1 + "/users/{user_id}/override_ratelimit", self.get_override),
            web.post(V1 + "/users/{user_id}/override_ratelimit", self.set_override),
            web.delete(V1 + "/users/{user_id}/override_ratelimit", self.delete_override),
            web.post(V1 + "/users/{user_id}/login", self.login_as_user),
            web.get(V1 + "/users/{user_id}/admin", self.get_admin_flag),
            web.put(V1 + "/users/{user_id}/admin", self.put_admin_flag),
            web.get(V1 + "/username_available", self.username_available),
        ]

    async def _existing_user(self, user_id: str) -> UserRecord:
        self._access.require_local_user_id(user_id)
        user: UserRecord | None = await self._storage.users.get_user(user_id)
        if user is None:
            raise not_found("User not found")
        return user

    async def _last_seen(self, user_id: str) -> int | None:
        seen = [d.last_seen_ts for d in await self._storage.devices.list_devices(user_id) if d.last_seen_ts]
        return max(seen) if seen else None

    async def _user_json(self, user: UserRecord) -> dict[str, Any]:
        return {
            "name": user.user_id,
            "displayname": user.displayname,
            "avatar_url": user.avatar_url,
            "threepids": [],
            "external_ids": [],
            "is_guest": False,
            "admin": user.is_admin,
            "deactivated": user.deactivated,
            "erased": bool(await self._storage.account_tokens.erased_among([user.user_id])),
            "shadow_banned": user.user_id in self._policy.shadow_banned,
            # Synapse gives the creation time in seconds.
            "creation_ts": user.created_ts // 1000,
            "last_seen_ts": await self._last_seen(user.user_id),
            "user_type": None,
            "locked": user.locked,
            "suspended": user.suspended,
        }

    # -- listing and details ----------------------------------------------------------------------

    async def list_users(self, request: web.Request) -> web.Response:
        await self._access.require_admin(request)
        start = query_int(request, "from", 0)
        limit = query_int(request, "limit", 100, lo=0, hi=10_000)
        order_by = request.query.get("order_by", "name")
        if order_by not in USER_ORDERS:
            raise invalid_param(f"'order_by' must be one of {', '.join(sorted(USER_ORDERS))}")
        admins = request.query.get("admins")
        query_bool(
            request, "guests", True
        )  # validated; Ranvier has no guest accounts to include or leave out
        name = request.query.get("name")
        rows, total = await self._store.list_users(
            start=start,
            limit=limit,
            name=name,
            user_id=request.query.get("user_id"),
            deactivated=query_bool(request, "deactivated", False),
            admins=None if admins is None else query_bool(request, "admins", False),
            order_by=order_by,
            backwards=query_dir(request),
        )
        erased: set[str] = await self._storage.account_tokens.erased_among(r[0] for r in rows)
        users = [
            {
                "name": r[0],
                "is_guest": False,
                "admin": bool(r[1]),
                "user_type": None,
                "deactivated": bool(r[2]),
                "erased": r[0] in erased,
                "shadow_banned": bool(r[6]),
                "displayname": r[4],
                "avatar_url": r[5],
                "creation_ts": int(r[3]) // 1000,
                "last_seen_ts": None if r[7] is None else int(r[7]),
                "locked": bool(r[8]),
            }
            for r in rows
        ]
        body: dict[str, Any] = {"users": users, "total": total}
        if start + len(users) < total and users:
            body["next_token"] = str(start + len(users))
        return web.json_response(body)

    async def get_user(self, request: web.Request) -> web.Response:
        await self._access.require_admin(request)
        user = await self._existing_user(request.match_info["user_id"])
        return web.json_response(await self._user_json(user))

    async def put_user(self, request: web.Request) -> web.Response:
        admin = await self._access.require_admin(request)
        user_id = self._access.require_local_user_id(request.match_info["user_id"])
        body = await read_json_body(request)
        password = optional_str(body, "password")
        displayname = optional_str(body, "displayname")
        avatar_url = optional_str(body, "avatar_url")
        make_admin = _bool_field(body, "admin")
        deactivated = _bool_field(body, "deactivated")
        locked = _bool_field(body, "locked")
        logout_devices = _bool_field(body, "logout_devices")
        if body.get("threepids") or body.get("external_ids"):
            raise invalid_param("This server has no third-party ids or external auth providers")
        if body.get("user_type") is not None:
            raise invalid_param("This server has no user types")
        user = await self._storage.users.get_user(user_id)
        created = user is None
        if user is None:
            localpart = user_id[1:].split(":", 1)[0]
            if not is_valid_localpart(localpart):
                raise MatrixError(400, "M_INVALID_USERNAME", "Invalid user id localpart")
            if deactivated:
                raise invalid_param("Cannot create a deactivated user")
            try:
                await self._storage.users.create_user(
                    user_id, password, is_admin=bool(make_admin), displayname=displayname
                )
            except UserExists:
                raise MatrixError(400, "M_USER_IN_USE", "User ID already taken") from None
            note(admin, "created user", user_id=user_id, admin=bool(make_admin))
        else:
            if password is not None:
                await self._storage.users.set_password(user_id, password)
                if logout_devices is not False:
                    await self._storage.devices.delete_all_devices(user_id)
                note(admin, "set password", user_id=user_id)
            if displayname is not None and displayname != user.displayname:
                await self._storage.users.set_displayname(user_id, displayname)
            if make_admin is not None and make_admin != user.is_admin:
                if user_id == admin.user_id and not make_admin:
                    raise invalid_param("You may not demote yourself.")
                await self._storage.users.set_admin(user_id, make_admin)
                note(admin, "set admin flag", user_id=user_id, admin=make_admin)
            if deactivated is True and not user.deactivated:
                await self._require_deactivator().deactivate(user_id, erase=False)
                note(admin, "deactivated user", user_id=user_id)
            elif deactivated is False and user.deactivated:
                if password is None:
                    raise invalid_param("Must provide a password to re-activate an account.")
                await self._store.reactivate_user(user_id)
                note(admin, "reactivated user", user_id=user_id)
        if locked is not None:
            await self._storage.users.set_locked(user_id, locked)
            note(admin, "locked user" if locked else "unlocked user", user_id=user_id)
        if avatar_url is not None:
            await self._storage.users.set_avatar_url(user_id, avatar_url)
        if (displayname is not None or avatar_url is not None) and self._on_profile_changed is not None:
            await self._on_profile_changed(user_id)
        record = await self._existing_user(user_id)
        return web.json_response(await self._user_json(record), status=201 if created else 200)

    # -- deactivation and passwords ---------------------------------------------------------------

    def _require_deactivator(self) -> Deactivator:
        if self._deactivator is None:
            raise MatrixError(500, "M_UNKNOWN", "Deactivation is not wired on this server")
        return self._deactivator

    async def deactivate(self, request: web.Request) -> web.Response:
        admin = await self._access.require_admin(request)
        user_id = request.match_info["user_id"]
        await self._existing_user(user_id)
        body = await read_json_body(request, allow_empty=True)
        erase = _bool_field(body, "erase") or False
        await self._require_deactivator().deactivate(user_id, erase=erase)
        note(admin, "deactivated user", user_id=user_id, erase=erase)
        # Synapse answers whether a third-party id server unbinding succeeded; there are none here.
        return web.json_response({"id_server_unbind_result": "success"})

    async def reset_password(self, request: web.Request) -> web.Response:
        admin = await self._access.require_admin(request)
        user_id = request.match_info["user_id"]
        user = await self._existing_user(user_id)
        body = await read_json_body(request)
        new_password = optional_str(body, "new_password")
        if not new_password:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing 'new_password'")
        if user.deactivated:
            raise invalid_param("Cannot set the password of a deactivated user")
        logout = _bool_field(body, "logout_devices")
        await self._storage.users.set_password(user_id, new_password)
        if logout is not False:
            await self._storage.devices.delete_all_devices(user_id)
        note(admin, "reset password", user_id=user_id, logout_devices=logout is not False)
        return web.json_response({})

    # -- sessions and rooms -----------------------------------------------------------------------

    async def whois(self, request: web.Request) -> web.Response:
        """CS "GET /_matrix/client/v3/admin/whois/{userId}": admins, or the user about themselves."""
        user_id = request.match_info["user_id"]
        requester = await self._access.authenticator.require_user(request)
        if requester.user_id != user_id:
            await self._access.require_admin(request)
        await self._existing_user(user_id)
        devices = {}
        for device in await self._storage.devices.list_devices(user_id):
            connections = []
            if device.last_seen_ts is not None:
                connections.append({"ip": device.last_seen_ip, "last_seen": device.last_seen_ts})
            devices[device.device_id] = {"sessions": [{"connections": connections}]}
        return web.json_response({"user_id": user_id, "devices": devices})

    async def joined_rooms(self, request: web.Request) -> web.Response:
        await self._access.require_admin(request)
        user_id = request.match_info["user_id"]
        await self._existing_user(user_id)
        rooms: dict[str, str] = await self._storage.state.get_rooms_for_user(user_id)
        joined = sorted(r for r, m in rooms.items() if m == "join")
        return web.json_response({"joined_rooms": joined, "total": len(joined)})

    async def pushers(self, request: web.Request) -> web.Response:
        await self._access.require_admin(request)
        user_id = request.match_info["user_id"]
        await self._existing_user(user_id)
        pushers = [p.client_json() for p in await self._storage.pushers.pushers_for_user(user_id)]
        return web.json_response({"pushers": pushers, "total": len(pushers)})

    # -- shadow bans and rate-limit overrides -----------------------------------------------------

    async def _set_shadow_ban(self, request: web.Request, banned: bool) -> web.Response:
        admin = await self._access.require_admin(request)
        user_id = request.match_info["user_id"]
        await self._existing_user(user_id)
        await self._policy.set_shadow_banned(user_id, banned)
        note(admin, "shadow-banned" if banned else "lifted shadow ban", user_id=user_id)
        return web.json_response({})

    async def shadow_ban(self, request: web.Request) -> web.Response:
        return await self._set_shadow_ban(request, True)

    async def unshadow_ban(self, request: web.Request) -> web.Response:
        return await self._set_shadow_ban(request, False)

    async def get_override(self, request: web.Request) -> web.Response:
        await self._access.require_admin(request)
        user_id = request.match_info["user_id"]
        await self._existing_user(user_id)
        override = self._policy.overrides.get(user_id)
        if override is None:
            return web.json_response({})
        return web.json_response(
            {"messages_per_second": override.messages_per_second, "burst_count": override.burst_count}
        )

    async def set_override(self, request: web.Request) -> web.Response:
        admin = await self._access.require_admin(request)
        user_id = request.match_info["user_id"]
        await self._existing_user(user_id)
        body = await read_json_body(request, allow_empty=True)
        values = {}
        for key in ("messages_per_second", "burst_count"):
            value = body.get(key, 0)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise invalid_param(f"'{key}' must be a non-negative integer")
            values[key] = value
        override = RateLimitOverride(values["messages_per_second"], values["burst_count"])
        await self._policy.set_override(user_id, override)
        note(admin, "set rate-limit override", user_id=user_id, **values)
        return web.json_response(values)

    async def delete_override(self, request: web.Request) -> web.Response:
        admin = await self._access.require_admin(request)
        user_id = request.match_info["user_id"]
        await self._existing_user(user_id)
        await self._policy.set_override(user_id, None)
        note(admin, "removed rate-limit override", user_id=user_id)
        return web.json_response({})

    async def login_as_user(self, request: web.Request) -> web.Response:
        admin = await self._access.require_admin(request)
        if not self._allow_login_as_user:
            raise MatrixError(
                403, "M_FORBIDDEN", "Logging in as another user is disabled (admin_api.allow_login_as_user)"
            )
        user_id = request.match_info["user_id"]
        user = await self._existing_user(user_id)
        if user.deactivated:
            raise invalid_param("Cannot log in as a deactivated user")
        if user_id == admin.user_id:
            raise invalid_param("Cannot use admin API to login as self")
        body = await read_json_body(request, allow_empty=True)
        if body.get("valid_until_ms") is not None:
            raise invalid_param("'valid_until_ms' is not supported: the token is valid until logged out")
        # A device of its own, so that the session shows in the user's device list and can be ended there.
        device_id = new_device_id()
        await self._storage.devices.create_device(user_id, device_id, f"admin login by {admin.user_id}")
        token = new_access_token()
        await self._storage.devices.create_access_token(user_id, device_id, token)
        note(admin, "logged in as user", user_id=user_id, device_id=device_id)
        return web.json_response({"access_token": token})

    # -- the admin flag alone, and name availability --------------------------------------------------

    async def get_admin_flag(self, request: web.Request) -> web.Response:
        await self._access.require_admin(request)
        user = await self._existing_user(request.match_info["user_id"])
        return web.json_response({"admin": user.is_admin})

    async def put_admin_flag(self, request: web.Request) -> web.Response:
        admin = await self._access.require_admin(request)
        user = await self._existing_user(request.match_info["user_id"])
        body = await read_json_body(request)
        flag = _bool_field(body, "admin")
        if flag is None:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing 'admin'")
        if user.user_id == admin.user_id and not flag:
            raise invalid_param("You may not demote yourself.")
        await self._storage.users.set_admin(user.user_id, flag)
        note(admin, "set admin flag", user_id=user.user_id, admin=flag)
        return web.json_response({})

    async def username_available(self, request: web.Request) -> web.Response:
        await self._access.require_admin(request)
        username = request.query.get("username")
        if not username:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing 'username'")
        localpart = username.lower()
        if not is_valid_localpart(localpart):
            raise MatrixError(400, "M_INVALID_USERNAME", "Invalid username")
        if await self._storage.users.user_exists(f"@{localpart}:{self._access.server_name}"):
            raise MatrixError(400, "M_USER_IN_USE", "User ID already taken.")
        return web.json_response({"available": True})
