"""Who is making a request (access tokens), and User-Interactive Authentication (UIA) for the endpoints
that need it (registration with ``m.login.dummy``, device deletion with ``m.login.password``).

CS "Client Authentication" > "Using access tokens" and "User-Interactive Authentication API".
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from ..appservice.registration import AppService, AppServices
from ..clock import now_ms
from ..logs.context import AUTHENTICATED_APPSERVICE, AUTHENTICATED_USER
from ..storage.protocols.accounts import DeviceStorage, UserStorage
from .errors import MatrixError, missing_token, unknown_token
from .http_util import access_token_from

# Recording "last seen" costs a write; once per device per this interval is plenty for GET /devices.
LAST_SEEN_INTERVAL_MS = 5 * 60 * 1000
# UIA sessions are only bookkeeping (every stage is re-checked when submitted), so a short life is fine.
UIA_SESSION_LIFETIME_MS = 30 * 60 * 1000
MAX_UIA_SESSIONS = 10_000
# CS "Account locking": the requests a locked account may still make.
LOCK_EXEMPT = ("/logout", "/logout/all")


class SuspensionCheck(Protocol):
    async def forbids(self, request: web.Request, user_id: str) -> bool: ...


class UserAndDeviceStorage(Protocol):
    @property
    def users(self) -> UserStorage: ...
    @property
    def devices(self) -> DeviceStorage: ...


@dataclass(frozen=True, slots=True)
class Requester:
    user_id: str
    device_id: str
    is_admin: bool
    access_token: str
    # Set when an appservice makes the request (as_token), acting as ``user_id`` (AS "Identity assertion").
    appservice: AppService | None = None
    # CS "Account suspension": the account may read but not act (ranvier.accounts.moderation).
    suspended: bool = False


class Authenticator:
    """Resolves the request's access token to a ``Requester``."""

    def __init__(
        self,
        storage: UserAndDeviceStorage,
        clock_ms: Callable[[], int] = now_ms,
        appservices: AppServices | None = None,
    ) -> None:
        self._storage = storage
        self._clock_ms = clock_ms
        self._last_seen: dict[tuple[str, str], int] = {}
        self.appservices = appservices or AppServices()
        # What a suspended user may not do (accounts.moderation.SuspensionPolicy), set by app.py.
        self.suspension: SuspensionCheck | None = None

    def appservice_of(self, request: web.Request) -> AppService | None:
        """The appservice whose as_token the request carries, if any."""
        token = access_token_from(request)
        return None if token is None else self.appservices.by_as_token(token)

    def require_appservice(self, request: web.Request) -> AppService:
        """The appservice making the request; 401 M_MISSING_TOKEN / M_UNKNOWN_TOKEN otherwise."""
        token = access_token_from(request)
        if token is None:
            raise missing_token()
        service = self.appservices.by_as_token(token)
        if service is None:
            raise unknown_token()
        if AUTHENTICATED_USER not in request:  # for the request log: its sender, and which appservice
            request[AUTHENTICATED_USER] = (service.sender, "")
            request[AUTHENTICATED_APPSERVICE] = service.id
        return service

    async def _as_requester(self, request: web.Request, service: AppService, token: str) -> Requester:
        """AS "Identity assertion": ``?user_id=`` in the appservice's user namespace (default: its sender),
        registered here; ``?device_id=`` one of that user's devices (MSC3202, Matrix 1.17)."""
        query = request.query
        user_id = query.get("user_id") or query.get("org.matrix.msc3202.user_id") or service.sender
        if not service.is_interested_in_user(user_id):
            raise MatrixError(403, "M_FORBIDDEN", f"Application service cannot masquerade as {user_id}")
        user = await self._storage.users.get_user(user_id)
        if user is None or user.deactivated:
            raise MatrixError(403, "M_FORBIDDEN", f"Application service has not registered {user_id}")
        device_id = query.get("device_id") or query.get("org.matrix.msc3202.device_id") or ""
        if device_id and await self._storage.devices.get_device(user_id, device_id) is None:
            raise MatrixError(400, "M_UNKNOWN_DEVICE", f"{user_id} has no device {device_id}")
        request[AUTHENTICATED_USER] = (user_id, device_id)  # for the request log
        request[AUTHENTICATED_APPSERVICE] = service.id
        return Requester(user_id, device_id, user.is_admin, token, appservice=service)

    async def require_user(self, request: web.Request) -> Requester:
        """The requester; 401 M_MISSING_TOKEN without a token, 401 M_UNKNOWN_TOKEN for a bad one."""
        token = access_token_from(request)
        if token is None:
            raise missing_token()
        service = self.appservices.by_as_token(token) if self.appservices else None
        if service is not None:
            return await self._as_requester(request, service, token)
        owner = await self._storage.devices.lookup_access_token(token)
        if owner is None:
            raise unknown_token()
        user_id, device_id, expires_ts = owner
        if expires_ts is not None and expires_ts <= self._clock_ms():
            # CS "Soft logout": an expired token (issued with a refresh token) is refreshed, not re-logged.
            raise unknown_token("Access token has expired", soft_logout=True)
        user = await self._storage.users.get_user(user_id)
        if user is None or user.deactivated:
            raise unknown_token()
        request[AUTHENTICATED_USER] = (user_id, device_id)  # for the request log
        if user.locked and not request.path.endswith(LOCK_EXEMPT):
            # CS "Account locking": everything but logging out, with soft_logout so the session is kept.
            raise MatrixError(401, "M_USER_LOCKED", "This account has been locked", soft_logout=True)
        if user.suspended and self.suspension is not None and await self.suspension.forbids(request, user_id):
            raise MatrixError(403, "M_USER_SUSPENDED", "You cannot perform this action while suspended.")
        await self._note_seen(user_id, device_id, request.remote)
        return Requester(user_id, device_id, user.is_admin, token, suspended=user.suspended)

    async def optional_user(self, request: web.Request) -> Requester | None:
        """The requester if a token was sent (a bad token is still an error), else None."""
        if access_token_from(request) is None:
            return None
        return await self.require_user(request)

    async def _note_seen(self, user_id: str, device_id: str, ip: str | None) -> None:
        now = self._clock_ms()
        key = (user_id, device_id)
        if now - self._last_seen.get(key, -LAST_SEEN_INTERVAL_MS) < LAST_SEEN_INTERVAL_MS:
            return
        if len(self._last_seen) > 100_000:
            self._last_seen.clear()  # a bound on memory; the cost is one extra write per device
        self._last_seen[key] = now
        await self._storage.devices.touch_device(user_id, device_id, now, ip)


# -- User-Interactive Authentication ------------------------------------------------------------------


@dataclass
class _UiaSession:
    purpose: str
    user_id: str | None
    created_ms: int
    completed: list[str] = field(default_factory=list)


class UserInteractiveAuth:
    """In-memory UIA sessions. Each flow here has a single stage, so a request either carries a valid
    ``auth`` dict for that stage and proceeds, or gets the 401 that lists the flows."""

    def __init__(self, clock_ms: Callable[[], int] = now_ms) -> None:
        self._clock_ms = clock_ms
        self._sessions: dict[str, _UiaSession] = {}

    def challenge(
        self,
        purpose: str,
        stages: Sequence[str],
        *,
        user_id: str | None = None,
        session: str | None = None,
        error: MatrixError | None = None,
    ) -> MatrixError:
        """The 401 response asking for ``stages``; ``error`` adds errcode/error for a failed attempt."""
        existing = self._sessions.get(session) if session is not None else None
        if session is None or existing is None or existing.purpose != purpose or existing.user_id != user_id:
            session = self._new_session(purpose, user_id)
        body: dict[str, Any] = {
            "flows": [{"stages": list(stages)}],
            "params": {},
            "session": session,
        }
        completed = self._sessions[session].completed
        if completed:
            body["completed"] = list(completed)
        if error is not None:
            return MatrixError(401, error.errcode, error.message, **body)
        # No errcode on the first challenge: CS "User-interactive API in the REST API" shows none.
        return _UiaChallenge(body)

    def complete(self, session: str | None, stage: str) -> None:
        """Record a completed stage (for the ``completed`` list if the client asks again)."""
        if session is not None and session in self._sessions:
            self._sessions[session].completed.append(stage)

    def _new_session(self, purpose: str, user_id: str | None) -> str:
        now = self._clock_ms()
        if len(self._sessions) >= MAX_UIA_SESSIONS:
            self._expire(now)
        if len(self._sessions) >= MAX_UIA_SESSIONS:
            # Still full: drop the oldest half rather than grow without bound.
            for key in sorted(self._sessions, key=lambda k: self._sessions[k].created_ms)[
                : MAX_UIA_SESSIONS // 2
            ]:
                del self._sessions[key]
        session = secrets.token_urlsafe(18)
        self._sessions[session] = _UiaSession(purpose, user_id, now)
        return session

    def _expire(self, now: int) -> None:
        for key in [k for k, s in self._sessions.items() if now - s.created_ms > UIA_SESSION_LIFETIME_MS]:
            del self._sessions[key]


class _UiaChallenge(MatrixError):
    """A 401 whose body is exactly the flows object (no ``errcode``/``error``)."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(401, "M_UNAUTHORIZED", "Additional authentication is required")
        self._body = body

    def to_json(self) -> dict[str, Any]:
        return dict(self._body)
