"""A real Ranvier (tests.scenarios.servers) with the admin API's optional parts switched on, and a raw HTTP
helper that calls any path as a given user."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ranvier.app import Homeserver
from tests.scenarios.servers import start_server

SHARED_SECRET = "admin-tests-shared-secret"
MESSAGE_BURST = 10


class Api:
    """Raw HTTP calls against one server, as one user (or anonymously)."""

    def __init__(self, session: aiohttp.ClientSession, base: str, user_id: str, token: str | None) -> None:
        self.session = session
        self.base = base
        self.user_id = user_id
        self.token = token

    async def call(self, method: str, path: str, body: Any = None, **params: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with self.session.request(
            method, self.base + path, json=body, params=params or None, headers=headers
        ) as resp:
            return resp.status, await resp.json()

    async def ok(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        status, answer = await self.call(method, path, body, **params)
        assert status == 200, (method, path, status, answer)
        return answer


async def register(
    session: aiohttp.ClientSession, base: str, localpart: str, *, admin: bool, secret: str, password: str
) -> Api:
    """Register with Synapse's shared-secret admin API (the nonce and HMAC-SHA1 as its docs give them)."""
    async with session.get(base + "/_synapse/admin/v1/register") as resp:
        nonce = (await resp.json())["nonce"]
    mac = hmac.new(
        secret.encode(),
        b"\x00".join(
            [nonce.encode(), localpart.encode(), password.encode(), b"admin" if admin else b"notadmin"]
        ),
        hashlib.sha1,
    ).hexdigest()
    body = {"nonce": nonce, "username": localpart, "password": password, "admin": admin, "mac": mac}
    async with session.post(base + "/_synapse/admin/v1/register", json=body) as resp:
        answer = await resp.json()
        assert resp.status == 200, answer
    return Api(session, base, answer["user_id"], answer["access_token"])


class AdminServer:
    def __init__(self, hs: Homeserver, session: aiohttp.ClientSession) -> None:
        self.hs = hs
        self.session = session
        self.base = f"http://127.0.0.1:{hs.ports['client']}"
        self._count = 0

    async def user(self, name: str, *, admin: bool = False, password: str | None = None) -> Api:
        return await register(
            self.session,
            self.base,
            name,
            admin=admin,
            secret=SHARED_SECRET,
            password=password or f"pw-{name}-secret",
        )

    def anonymous(self) -> Api:
        return Api(self.session, self.base, "", None)


@pytest.fixture
async def admin_server(tmp_path: Path) -> AsyncIterator[AdminServer]:
    hs = await start_server(
        tmp_path / "hs",
        # A small message burst, so that the rate-limit override test needs few messages to pass it.
        rate_limits={"message": {"per_second": 1, "burst": MESSAGE_BURST}},
        extra={
            # Synapse's top-level key (register_new_matrix_user -c reads it), not registration.shared_secret.
            "registration_shared_secret": SHARED_SECRET,
            "admin_api": {"allow_login_as_user": True},
            "server_notices": {"system_mxid_localpart": "notices", "system_mxid_display_name": "Notices"},
        },
    )
    try:
        async with aiohttp.ClientSession() as session:
            yield AdminServer(hs, session)
    finally:
        await hs.stop()
