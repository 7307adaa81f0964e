"""Accounts: registration (open with ``m.login.dummy``, or by shared secret), login/logout, whoami,
devices and the profile (CS "Client Authentication", "Device Management", "Profiles").

Every endpoint is served under ``/_matrix/client/v3`` and the older ``/_matrix/client/r0`` that clients
such as matrix-nio still use.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ..clock import now_ms
from ..protocol.errors import InvalidIdentifier
from ..protocol.identifiers import MAX_ID_BYTES, is_valid_localpart, parse_user_id, server_of
from ..storage.protocols.accounts import Device, UserExists
from .auth import Authenticator, Requester, UserAndDeviceStorage, UserInteractiveAuth
from .errors import MatrixError, forbidden, invalid_param, missing_param, not_found
from .http_util import optional_str, read_json_body, require_str
from .registration_tokens import REGISTRATION_TOKEN, RegistrationTokenStorage, check_token
from .token_issuer import TokenIssuer, new_access_token, new_device_id

__all__ = ["AccountHandlers", "new_access_token", "new_device_id"]

logger = logging.getLogger(__name__)

CLIENT_PREFIXES = ("/_matrix/client/v3", "/_matrix/client/r0")
ADMIN_REGISTER_PATH = "/_synapse/admin/v1/register"
DUMMY = "m.login.dummy"
PASSWORD = "m.login.password"
TOKEN = "m.login.token"
APPSERVICE = "m.login.application_service"
# Synapse's limits, so that a profile accepted there is accepted here and vice versa.
MAX_DISPLAYNAME_LEN = 256
MAX_AVATAR_URL_LEN = 1000
# Shared-secret registration nonces are single-use and short-lived, as in Synapse's admin API.
NONCE_LIFETIME_MS = 60 * 1000

ProfileHook = Callable[[str], Awaitable[None]]
RemoteProfileLookup = Callable[[str], Awaitable[dict[str, Any] | None]]


def refuse_if_locked(user: Any) -> None:
    """CS "Soft logout" (v1.12): a locked account "cannot obtain a new access token until the account
    has been unlocked", neither by logging in nor by refreshing."""
    if user is not None and user.locked:
        raise MatrixError(401, "M_USER_LOCKED", "This account has been locked", soft_logout=True)


def user_error(errcode: str, message: str) -> MatrixError:
    return MatrixError(400, errcode, message)


class AccountHandlers:
    def __init__(
        self,
        storage: UserAndDeviceStorage,
        server_name: str,
        registration_enabled: bool,
        shared_secret: str | None,
        authenticator: Authenticator,
        on_profile_changed: ProfileHook | None = None,
        *,
        remote_profile: RemoteProfileLookup | None = None,
        clock_ms: Callable[[], int] = now_ms,
        issuer: TokenIssuer | None = None,
        login_get_token: bool = False,
        set_displayname: bool = True,
        set_avatar_url: bool = True,
        registration_tokens: RegistrationTokenStorage | None = None,
    ) -> None:
        """``on_profile_changed(user_id)`` runs after a displayname/avatar change so the room layer can
        send new membership events; ``remote_profile(user_id)`` answers profile queries for other servers'
        users (a federation query); without it those are 404."""
        self._storage = storage
        self._server_name = server_name
        self._registration_enabled = registration_enabled
        self._shared_secret = shared_secret
        self._auth = authenticator
        self._on_profile_changed = on_profile_changed
        self._remote_profile = remote_profile
        self._clock_ms = clock_ms
        # Tokens (access, refresh, m.login.token); by default plain non-expiring access tokens.
        self.issuer = issuer or TokenIssuer(storage.devices, clock_ms=clock_ms)
        self._login_get_token = login_get_token
        self._may_set = {"displayname": set_displayname, "avatar_url": set_avatar_url}
        # registration.requires_token: /register's one UIA stage is m.login.registration_token.
        self._registration_tokens = registration_tokens
        self._uia = UserInteractiveAuth(clock_ms)
        self._nonces: dict[str, int] = {}
        # Appservices (ranvier.appservice): asked about unknown local users in their namespaces.
        self.user_query: Callable[[str], Awaitable[bool]] | None = None

    def routes(self) -> list[web.RouteDef]:
        client: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
            ("POST", "/register", self.register),
            ("GET", "/register/available", self.register_available),
            ("GET", "/login", self.login_flows),
            ("POST", "/login", self.login),
            ("POST", "/logout", self.logout),
            ("POST", "/logout/all", self.logout_all),
            ("GET", "/account/whoami", self.whoami),
            ("POST", "/refresh", self.refresh),
            ("GET", "/devices", self.list_devices),
            ("GET", "/devices/{device_id}", self.get_device),
            ("PUT", "/devices/{device_id}", self.update_device),
            ("DELETE", "/devices/{device_id}", self.delete_device),
            ("POST", "/delete_devices", self.delete_devices),
            ("GET", "/profile/{user_id}", self.get_profile),
        ]
        for field_name in ("displayname", "avatar_url"):
            client += [
                ("GET", f"/profile/{{user_id}}/{field_name}", self._profile_field_getter(field_name)),
                ("PUT", f"/profile/{{user_id}}/{field_name}", self._profile_field_setter(field_name)),
                ("DELETE", f"/profile/{{user_id}}/{field_name}", self._profile_field_deleter(field_name)),
            ]
        routes = [web.route(m, prefix + path, h) for prefix in CLIENT_PREFIXES for m, path, h in client]
        routes += [
            web.post("/_matrix/client/v1/login/get_token", self.get_login_token),
            web.get(ADMIN_REGISTER_PATH, self.admin_register_nonce),
            web.post(ADMIN_REGISTER_PATH, self.admin_register),
        ]
        return routes

    # -- identifiers ---------------------------------------------------------------------------------

    def _user_id_for_new_localpart(self, username: str) -> str:
        """Map a requested username onto a user id, or raise M_INVALID_USERNAME (CS "/register": the
        server maps the username "in a logical manner" or rejects it; we lower-case it)."""
        localpart = username.lower()
        user_id = f"@{localpart}:{self._server_name}"
        if not localpart or not is_valid_localpart(localpart):
            raise user_error(
                "M_INVALID_USERNAME", "User ID may only contain the characters a-z, 0-9, and '._=-/+'"
            )
        if len(user_id.encode("utf-8")) > MAX_ID_BYTES:
            raise user_error("M_INVALID_USERNAME", f"User ID may not be longer than {MAX_ID_BYTES} bytes")
        return user_id

    def _resolve_login_user(self, body: dict[str, Any]) -> str:
        """The user id named by a login (or m.login.password UIA) body: ``identifier`` of type
        ``m.id.user``, or the deprecated top-level ``user``."""
        identifier = body.get("identifier")
        if identifier is not None:
            if not isinstance(identifier, dict):
                raise invalid_param("'identifier' must be an object")
            id_type = identifier.get("type")
            if id_type != "m.id.user":
                raise MatrixError(400, "M_UNKNOWN", f"Unsupported identifier type {id_type!r}")
            user = require_str(identifier, "user")
        elif "user" in body:
            user = require_str(body, "user")
        else:
            raise missing_param("Missing 'identifier'")
        if user.startswith("@"):
            try:
                user_id = parse_user_id(user)
            except InvalidIdentifier:
                raise forbidden("Invalid username or password") from None
            if server_of(user_id) != self._server_name:
                raise forbidden("Invalid username or password")
            # The localpart ends at the first colon: server names may carry a port (example.org:8448).
            localpart = user_id[1:].split(":", 1)[0]
        else:
            localpart = user
        # Localparts are registered lower-cased, so logging in is case-insensitive.
        return f"@{localpart.lower()}:{self._server_name}"

    async def _issue_token(
        self,
        user_id: str,
        device_id: str | None,
        display_name: str | None,
        body: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """``access_token``, ``device_id`` and, if the body asked with ``refresh_token: true`` and the
        server lets tokens expire, ``refresh_token`` and ``expires_in_ms``."""
        want_refresh = False
        if body is not None:
            want_refresh = body.get("refresh_token", False)
            if not isinstance(want_refresh, bool):
                raise invalid_param("'refresh_token' must be a boolean")
        return await self.issuer.issue(user_id, device_id, display_name, want_refresh=want_refresh)

    # -- registration --------------------------------------------------------------------------------

    async def register(self, request: web.Request) -> web.Response:
        kind = request.query.get("kind", "user")
        if kind == "guest":
            raise MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "Guest access is not supported")
        if kind != "user":
            raise invalid_param(f"Unknown account kind {kind!r}")
        body: dict[str, Any] | None = None
        if self._auth.appservices:
            body = await read_json_body(request)
            auth = body.get("auth")
            login_type = body.get("type") or (auth.get("type") if isinstance(auth, dict) else None)
            if login_type == APPSERVICE or self._auth.appservice_of(request) is not None:
                return await self._register_for_appservice(request, body, login_type)
        if not self._registration_enabled:
            raise forbidden("Registration is disabled")
        if body is None:
            body = await read_json_body(request)
        username = optional_str(body, "username")
        password = optional_str(body, "password")
        device_id = optional_str(body, "device_id")
        display_name = optional_str(body, "initial_device_display_name")
        inhibit_login = body.get("inhibit_login", False)
        if not isinstance(inhibit_login, bool):
            raise invalid_param("'inhibit_login' must be a boolean")

        # CS "/register": username errors come before User-Interactive Authentication.
        if username is not None:
            user_id = self._user_id_for_new_localpart(username)
            if await self._storage.users.user_exists(user_id):
                raise user_error("M_USER_IN_USE", "User ID already taken")
            self._check_not_exclusive(user_id)
        else:
            user_id = await self._generate_user_id()

        auth = body.get("auth")
        session = auth.get("session") if isinstance(auth, dict) else None
        session = session if isinstance(session, str) else None
        stage = DUMMY if self._registration_tokens is None else REGISTRATION_TOKEN
        if not isinstance(auth, dict) or "type" not in auth:
            raise self._uia.challenge("register", [stage], session=session)
        if auth["type"] != stage:
            raise self._uia.challenge(
                "register",
                [stage],
                session=session,
                error=MatrixError(401, "M_UNRECOGNIZED", f"Unsupported authentication type {auth['type']!r}"),
            )
        if self._registration_tokens is not None:
            try:
                token = await check_token(self._registration_tokens, auth)
                # Counted before the account exists: a lost race for the name costs the token a use.
                if not await self._registration_tokens.complete_token_use(token):
                    raise MatrixError(401, "M_FORBIDDEN", "Invalid registration token")
            except MatrixError as e:
                raise self._uia.challenge("register", [stage], session=session, error=e) from None
        self._uia.complete(session, stage)

        try:
            await self._storage.users.create_user(user_id, password)
        except UserExists:
            raise user_error("M_USER_IN_USE", "User ID already taken") from None
        logger.info("registered %s", user_id)
        response: dict[str, Any] = {"user_id": user_id, "home_server": self._server_name}
        if not inhibit_login:
            response.update(await self._issue_token(user_id, device_id, display_name, body))
        return web.json_response(response)

    def _check_not_exclusive(self, user_id: str) -> None:
        """AS "Server admin style permissions": names in an appservice's exclusive user namespace are
        only the appservice's to register."""
        owner = self._auth.appservices.exclusive_owner_of_user(user_id)
        if owner is not None:
            raise user_error("M_EXCLUSIVE", f"{user_id} is reserved by an application service")

    async def _register_for_appservice(
        self, request: web.Request, body: dict[str, Any], login_type: Any
    ) -> web.Response:
        """``/register`` with the as_token and ``type: m.login.application_service`` (AS "Server admin
        style permissions"): a user in the appservice's namespace, no UIA, ``inhibit_login`` honoured."""
        service = self._auth.require_appservice(request)
        if login_type != APPSERVICE:
            raise MatrixError(
                400, "M_MISSING_PARAM", f"An appservice registers users with type {APPSERVICE!r}"
            )
        username = require_str(body, "username")
        device_id = optional_str(body, "device_id")
        display_name = optional_str(body, "initial_device_display_name")
        inhibit_login = body.get("inhibit_login", False)
        if not isinstance(inhibit_login, bool):
            raise invalid_param("'inhibit_login' must be a boolean")
        user_id = self._user_id_for_new_localpart(username)
        if not service.is_interested_in_user(user_id):
            raise user_error("M_EXCLUSIVE", f"{user_id} is not in the application service's namespace")
        try:
            await self._storage.users.create_user(user_id, None)
        except UserExists:
            raise user_error("M_USER_IN_USE", "User ID already taken") from None
        logger.info("registered %s for appservice %s", user_id, service.id)
        response: dict[str, Any] = {"user_id": user_id, "home_server": self._server_name}
        if not inhibit_login:
            response.update(await self._issue_token(user_id, device_id, display_name, body))
        return web.json_response(response)

    async def _generate_user_id(self) -> str:
        for _ in range(10):
            user_id = f"@{secrets.randbelow(10**12):012d}:{self._server_name}"
            if not await self._storage.users.user_exists(user_id):
                return user_id
        raise MatrixError(500, "M_UNKNOWN", "Could not generate a free user ID")

    async def register_available(self, request: web.Request) -> web.Response:
        username = request.query.get("username")
        if username is None:
            raise missing_param("Missing 'username' query parameter")
        user_id = self._user_id_for_new_localpart(username)
        if await self._storage.users.user_exists(user_id):
            raise user_error("M_USER_IN_USE", "User ID already taken")
        self._check_not_exclusive(user_id)
        return web.json_response({"available": True})

    # -- shared-secret registration (Synapse's admin API, for register_new_matrix_user and our CLI) ----

    async def admin_register_nonce(self, request: web.Request) -> web.Response:
        if self._shared_secret is None:
            raise MatrixError(400, "M_UNKNOWN", "Shared secret registration is not enabled")
        now = self._clock_ms()
        for nonce in [n for n, ts in self._nonces.items() if now - ts > NONCE_LIFETIME_MS]:
            del self._nonces[nonce]
        nonce = secrets.token_hex(32)
        self._nonces[nonce] = now
        return web.json_response({"nonce": nonce})

    async def admin_register(self, request: web.Request) -> web.Response:
        if self._shared_secret is None:
            raise MatrixError(400, "M_UNKNOWN", "Shared secret registration is not enabled")
        body = await read_json_body(request)
        nonce = require_str(body, "nonce")
        issued = self._nonces.pop(nonce, None)
        if issued is None or self._clock_ms() - issued > NONCE_LIFETIME_MS:
            raise MatrixError(400, "M_UNKNOWN", "Unrecognised nonce")
        username = require_str(body, "username")
        password = require_str(body, "password")
        mac = require_str(body, "mac")
        admin = body.get("admin", False)
        if not isinstance(admin, bool):
            raise invalid_param("'admin' must be a boolean")
        user_type = optional_str(body, "user_type")
        displayname = optional_str(body, "displayname")

        # HMAC-SHA1 over nonce NUL username NUL password NUL admin|notadmin [NUL user_type], hex-encoded.
        parts = [nonce, username, password, "admin" if admin else "notadmin"]
        if user_type is not None:
            parts.append(user_type)
        expected = hmac.new(
            self._shared_secret.encode("utf-8"), "\x00".join(parts).encode("utf-8"), hashlib.sha1
        ).hexdigest()
        if not hmac.compare_digest(expected, mac.lower()):
            raise forbidden("HMAC incorrect")

        user_id = self._user_id_for_new_localpart(username)
        try:
            await self._storage.users.create_user(user_id, password, is_admin=admin, displayname=displayname)
        except UserExists:
            raise user_error("M_USER_IN_USE", "User ID already taken") from None
        logger.info("registered %s via the shared secret (admin=%s)", user_id, admin)
        tokens = await self._issue_token(user_id, None, None)
        return web.json_response({"user_id": user_id, "home_server": self._server_name, **tokens})

    # -- login / logout ------------------------------------------------------------------------------

    async def login_flows(self, request: web.Request) -> web.Response:
        flows: list[dict[str, Any]] = [{"type": PASSWORD}]
        if self._login_get_token:
            # CS "Login token": clients look for get_login_token to offer signing in another device.
            flows.append({"type": TOKEN, "get_login_token": True})
        if self._auth.appservices:
            flows.append({"type": APPSERVICE})
        return web.json_response({"flows": flows})

    async def login(self, request: web.Request) -> web.Response:
        body = await read_json_body(request)
        login_type = require_str(body, "type")
        known = [PASSWORD] + [APPSERVICE] * bool(self._auth.appservices) + [TOKEN] * self._login_get_token
        if login_type not in known:
            raise MatrixError(400, "M_UNKNOWN", f"Unknown login type {login_type!r}")
        device_id = optional_str(body, "device_id")
        display_name = optional_str(body, "initial_device_display_name")
        if login_type == TOKEN:
            # CS "Token-based": single use; an unknown, used or expired token is 403 M_FORBIDDEN.
            owner = self.issuer.take_login_token(require_str(body, "token"))
            user = await self._storage.users.get_user(owner) if owner is not None else None
            if owner is None or user is None or user.deactivated:
                raise forbidden("Invalid or expired login token")
            refuse_if_locked(user)
            issued = await self._issue_token(owner, device_id, display_name, body)
            return web.json_response({"user_id": owner, "home_server": self._server_name, **issued})
        user_id = self._resolve_login_user(body)
        if login_type == APPSERVICE:
            # AS "Using /login": the as_token authenticates, for a registered user in the namespace.
            service = self._auth.require_appservice(request)
            if not service.is_interested_in_user(user_id):
                raise MatrixError(403, "M_EXCLUSIVE", f"{user_id} is outside the appservice's namespace")
            user = await self._storage.users.get_user(user_id)
            if user is None or user.deactivated:
                raise forbidden(f"{user_id} is not registered")
        elif not await self._storage.users.check_password(user_id, require_str(body, "password")):
            user = await self._storage.users.get_user(user_id)
            if user is not None and user.deactivated:
                raise MatrixError(403, "M_USER_DEACTIVATED", "This account has been deactivated")
            raise forbidden("Invalid username or password")
        refuse_if_locked(await self._storage.users.get_user(user_id))
        issued = await self._issue_token(user_id, device_id, display_name, body)
        return web.json_response({"user_id": user_id, "home_server": self._server_name, **issued})

    async def refresh(self, request: web.Request) -> web.Response:
        """``POST /refresh`` (CS "Refreshing access tokens"): no access token needed, it may have expired."""
        body = await read_json_body(request)
        return web.json_response(await self.issuer.refresh(require_str(body, "refresh_token")))

    async def get_login_token(self, request: web.Request) -> web.Response:
        """``POST /login/get_token`` (CS "Login token", MSC3882): password UIA every time, as the spec
        requires explicit consent for each new client."""
        requester = await self._auth.require_user(request)
        if not self._login_get_token:
            # An optional endpoint; m.get_login_token says it is off.
            raise MatrixError(400, "M_FORBIDDEN", "Login tokens are not enabled on this server")
        body = await read_json_body(request, allow_empty=True)
        await self._require_password_uia(requester, body, "login_token")
        token, lifetime_ms = self.issuer.new_login_token(requester.user_id)
        return web.json_response({"login_token": token, "expires_in_ms": lifetime_ms})

    async def logout(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        # CS "/logout": the device of the token is deleted too (which revokes all its tokens).
        await self._storage.devices.delete_device(requester.user_id, requester.device_id)
        await self._storage.devices.delete_access_token(requester.access_token)
        return web.json_response({})

    async def logout_all(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        await self._storage.devices.delete_all_devices(requester.user_id)
        return web.json_response({})

    async def whoami(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        body: dict[str, Any] = {"user_id": requester.user_id, "is_guest": False}
        if requester.device_id:  # an appservice acting without ?device_id= has none
            body["device_id"] = requester.device_id
        return web.json_response(body)

    # -- devices -------------------------------------------------------------------------------------

    @staticmethod
    def _device_json(device: Device) -> dict[str, Any]:
        out: dict[str, Any] = {"device_id": device.device_id}
        if device.display_name is not None:
            out["display_name"] = device.display_name
        if device.last_seen_ts is not None:
            out["last_seen_ts"] = device.last_seen_ts
        if device.last_seen_ip is not None:
            out["last_seen_ip"] = device.last_seen_ip
        return out

    async def list_devices(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        devices = await self._storage.devices.list_devices(requester.user_id)
        return web.json_response({"devices": [self._device_json(d) for d in devices]})

    async def get_device(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        device = await self._storage.devices.get_device(requester.user_id, request.match_info["device_id"])
        if device is None:
            raise not_found("No such device")
        return web.json_response(self._device_json(device))

    async def update_device(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        body = await read_json_body(request, allow_empty=True)
        device_id = request.match_info["device_id"]
        device = await self._storage.devices.get_device(requester.user_id, device_id)
        if device is None:
            if requester.appservice is None:
                raise not_found("No such device")
            # AS "Device management" (Matrix 1.17): an appservice creates its users' devices this way.
            await self._storage.devices.create_device(
                requester.user_id, device_id, optional_str(body, "display_name")
            )
            return web.json_response({}, status=201)
        if "display_name" in body:
            name = optional_str(body, "display_name")
            await self._storage.devices.rename_device(requester.user_id, device_id, name)
        return web.json_response({})

    async def delete_device(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        body = await read_json_body(request, allow_empty=True)
        if requester.appservice is None:  # AS "Device management": appservices skip UIA
            await self._require_password_uia(requester, body, "delete_devices")
        await self._storage.devices.delete_device(requester.user_id, request.match_info["device_id"])
        return web.json_response({})

    async def delete_devices(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        body = await read_json_body(request)
        devices = body.get("devices")
        if devices is None:
            raise missing_param("Missing 'devices'")
        if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
            raise invalid_param("'devices' must be a list of strings")
        if requester.appservice is None:
            await self._require_password_uia(requester, body, "delete_devices")
        for device_id in devices:
            await self._storage.devices.delete_device(requester.user_id, device_id)
        return web.json_response({})

    async def require_password_uia(self, requester: Requester, body: dict[str, Any], purpose: str) -> None:
        """Password re-authentication for another module's endpoint (cross-signing key upload)."""
        await self._require_password_uia(requester, body, purpose)

    async def _require_password_uia(self, requester: Requester, body: dict[str, Any], purpose: str) -> None:
        """Re-authentication with the account password (CS "Password-based" UIA stage)."""
        auth = body.get("auth")
        session = auth.get("session") if isinstance(auth, dict) else None
        session = session if isinstance(session, str) else None
        if not isinstance(auth, dict) or "type" not in auth:
            raise self._uia.challenge(purpose, [PASSWORD], user_id=requester.user_id, session=session)

        def failed(errcode: str, message: str) -> MatrixError:
            return self._uia.challenge(
                purpose,
                [PASSWORD],
                user_id=requester.user_id,
                session=session,
                error=MatrixError(401, errcode, message),
            )

        if auth["type"] != PASSWORD:
            raise failed("M_UNRECOGNIZED", f"Unsupported authentication type {auth['type']!r}")
        password = auth.get("password")
        if not isinstance(password, str):
            raise failed("M_MISSING_PARAM", "Missing 'password'")
        try:
            user_id = self._resolve_login_user(auth)
        except MatrixError as e:
            raise failed(e.errcode, e.message) from None
        if user_id != requester.user_id or not await self._storage.users.check_password(user_id, password):
            raise failed("M_FORBIDDEN", "Invalid password")
        self._uia.complete(session, PASSWORD)

    # -- profile -------------------------------------------------------------------------------------

    async def _load_profile(self, user_id: str) -> dict[str, Any]:
        """The non-empty profile fields of a user; 404 if the user does not exist."""
        try:
            parse_user_id(user_id)
        except InvalidIdentifier:
            raise invalid_param(f"Invalid user id {user_id!r}") from None
        if server_of(user_id) != self._server_name:
            remote = await self._remote_profile(user_id) if self._remote_profile is not None else None
            if remote is None:
                raise not_found("Profile not found")
            return {k: v for k, v in remote.items() if k in ("displayname", "avatar_url") and v is not None}
        profile = await self._storage.users.get_profile(user_id)
        if profile is None and self.user_query is not None and await self.user_query(user_id):
            # AS "Query User": the appservice owning the name registered it just now.
            profile = await self._storage.users.get_profile(user_id)
        if profile is None:
            raise not_found("Profile not found")
        out: dict[str, Any] = {}
        if profile.displayname is not None:
            out["displayname"] = profile.displayname
        if profile.avatar_url is not None:
            out["avatar_url"] = profile.avatar_url
        return out

    async def get_profile(self, request: web.Request) -> web.Response:
        return web.json_response(await self._load_profile(request.match_info["user_id"]))

    def _profile_field_getter(self, field_name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            profile = await self._load_profile(request.match_info["user_id"])
            if field_name not in profile:
                raise not_found(f"The user has no {field_name}")
            return web.json_response({field_name: profile[field_name]})

        return handler

    def _profile_field_setter(self, field_name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            requester = await self._own_profile(request)
            if not self._may_set[field_name] and requester.appservice is None:
                raise forbidden(f"Changing {field_name} is disabled on this server")
            body = await read_json_body(request)
            if field_name not in body:
                raise missing_param(f"Missing '{field_name}'")
            value = body[field_name]
            if value is not None and not isinstance(value, str):
                raise invalid_param(f"'{field_name}' must be a string")
            # An empty string clears the field, as clients have long done to remove an avatar.
            await self._set_profile_field(requester.user_id, field_name, value or None)
            return web.json_response({})

        return handler

    def _profile_field_deleter(self, field_name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            requester = await self._own_profile(request)
            if not self._may_set[field_name] and requester.appservice is None:
                raise forbidden(f"Changing {field_name} is disabled on this server")
            await self._set_profile_field(requester.user_id, field_name, None)
            return web.json_response({})

        return handler

    async def _own_profile(self, request: web.Request) -> Requester:
        requester = await self._auth.require_user(request)
        if request.match_info["user_id"] != requester.user_id:
            raise forbidden("You may only change your own profile")
        return requester

    async def _set_profile_field(self, user_id: str, field_name: str, value: str | None) -> None:
        if field_name == "displayname":
            if value is not None and len(value) > MAX_DISPLAYNAME_LEN:
                raise invalid_param(f"displayname is longer than {MAX_DISPLAYNAME_LEN} characters")
            await self._storage.users.set_displayname(user_id, value)
        else:
            if value is not None and (not value.startswith("mxc://") or len(value) > MAX_AVATAR_URL_LEN):
                raise invalid_param("avatar_url must be an mxc:// URI")
            await self._storage.users.set_avatar_url(user_id, value)
        if self._on_profile_changed is not None:
            try:
                await self._on_profile_changed(user_id)
            except Exception:
                # The profile itself is saved; failing to update room memberships must not undo that.
                logger.exception("propagating the profile change of %s failed", user_id)
