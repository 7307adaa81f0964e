"""Issuing access tokens: at login and registration, with a refresh token when the client asks for one and
the server lets access tokens expire (CS "Refreshing access tokens"), ``POST /refresh``, and the short-lived
``m.login.token`` tokens of ``POST /login/get_token`` (MSC3882, CS "Login token").
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..clock import now_ms
from ..storage.protocols.accounts import DeviceStorage, UserStorage
from .errors import MatrixError

# Live m.login.token tokens kept at once (they live two minutes by default); the oldest go first beyond.
MAX_LOGIN_TOKENS = 10_000


def new_access_token() -> str:
    # 32 random bytes; the prefix lets secret scanners and logs recognise a Ranvier token.
    return "rvt_" + secrets.token_urlsafe(32)


def new_refresh_token() -> str:
    return "rvr_" + secrets.token_urlsafe(32)


def new_device_id() -> str:
    return "".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(10))


class RefreshTokenStorage(Protocol):
    async def create_refresh_token(
        self, user_id: str, device_id: str, token: str, access_token: str | None = None
    ) -> None: ...
    async def take_refresh_token(self, token: str) -> tuple[str, str] | None: ...
    async def refresh_token_owner(self, token: str) -> str | None: ...


@dataclass(frozen=True, slots=True)
class _LoginToken:
    user_id: str
    expires_ms: int


class TokenIssuer:
    def __init__(
        self,
        devices: DeviceStorage,
        refresh_tokens: RefreshTokenStorage | None = None,
        *,
        access_token_lifetime_ms: int | None = None,
        login_token_lifetime_ms: int = 120_000,
        clock_ms: Callable[[], int] = now_ms,
        users: UserStorage | None = None,
    ) -> None:
        """Refresh tokens are issued only with both ``refresh_tokens`` and ``access_token_lifetime_ms``:
        without an expiry there is nothing to refresh (the spec lets the server decline)."""
        self._devices = devices
        self._refresh_tokens = refresh_tokens
        self._lifetime_ms = access_token_lifetime_ms
        self._login_token_lifetime_ms = login_token_lifetime_ms
        self._clock_ms = clock_ms
        # To refuse refreshing a locked account (its refresh token kept for after the unlock).
        self._users = users
        # m.login.token tokens: in memory, as they live for minutes (a restart makes clients ask again).
        self._login_tokens: dict[str, _LoginToken] = {}

    @property
    def refreshing(self) -> bool:
        return self._refresh_tokens is not None and self._lifetime_ms is not None

    async def issue(
        self, user_id: str, device_id: str | None, display_name: str | None, *, want_refresh: bool = False
    ) -> dict[str, Any]:
        """A new access token for ``device_id`` (created if new, a random id if None): the login
        response's ``access_token``/``device_id`` and, when asked and enabled, ``refresh_token`` and
        ``expires_in_ms``."""
        device_id = device_id or new_device_id()
        await self._devices.create_device(user_id, device_id, display_name)
        return await self._pair(user_id, device_id, want_refresh)

    async def _pair(self, user_id: str, device_id: str, want_refresh: bool) -> dict[str, Any]:
        token = new_access_token()
        out: dict[str, Any] = {"access_token": token, "device_id": device_id}
        if not want_refresh or self._refresh_tokens is None or self._lifetime_ms is None:
            await self._devices.create_access_token(user_id, device_id, token)
            return out
        await self._devices.create_access_token(
            user_id, device_id, token, self._clock_ms() + self._lifetime_ms
        )
        refresh = new_refresh_token()
        await self._refresh_tokens.create_refresh_token(user_id, device_id, refresh, token)
        out.update(refresh_token=refresh, expires_in_ms=self._lifetime_ms)
        return out

    async def refresh(self, refresh_token: str) -> dict[str, Any]:
        """``POST /refresh``: the refresh token is used up and replaced, with a new access token (the one
        issued with the old refresh token stops working; other sessions of the device are left alone).
        Unknown or used: 401 M_UNKNOWN_TOKEN, soft_logout false (the client must log in again)."""
        if self._refresh_tokens is not None and self._users is not None:
            user_id = await self._refresh_tokens.refresh_token_owner(refresh_token)
            user = await self._users.get_user(user_id) if user_id is not None else None
            if user is not None and user.locked:
                raise MatrixError(401, "M_USER_LOCKED", "This account has been locked", soft_logout=True)
        owner = await self._refresh_tokens.take_refresh_token(refresh_token) if self._refresh_tokens else None
        if owner is None:
            raise MatrixError(401, "M_UNKNOWN_TOKEN", "Unknown refresh token", soft_logout=False)
        user_id, device_id = owner
        answer = await self._pair(user_id, device_id, want_refresh=True)
        answer.pop("device_id")
        return answer

    # -- m.login.token -------------------------------------------------------------------------------

    def new_login_token(self, user_id: str) -> tuple[str, int]:
        """A single-use token for ``m.login.token`` and its lifetime in ms."""
        now = self._clock_ms()
        for key in [k for k, t in self._login_tokens.items() if t.expires_ms < now]:
            del self._login_tokens[key]
        while len(self._login_tokens) >= MAX_LOGIN_TOKENS:
            del self._login_tokens[next(iter(self._login_tokens))]
        token = "rvl_" + secrets.token_urlsafe(32)
        self._login_tokens[token] = _LoginToken(user_id, now + self._login_token_lifetime_ms)
        return token, self._login_token_lifetime_ms

    def take_login_token(self, token: str) -> str | None:
        """The user a live login token was issued to; the token is used up."""
        found = self._login_tokens.pop(token, None)
        if found is None or found.expires_ms < self._clock_ms():
            return None
        return found.user_id
