"""Two real Ranvier servers on loopback, shared by the account tests of this package: ``a`` with every
account option turned on (expiring tokens with refresh, login tokens, TURN, support contacts), ``b`` with
the defaults. They federate, for deactivation and profiles across servers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest_asyncio

from ranvier.app import Homeserver
from tests.scenarios.servers import Client, start_server

TURN_SECRET = "turn-secret-for-tests"
A_CONFIG: dict[str, Any] = {
    "accounts": {
        "access_token_lifetime": 600,
        "login_get_token": True,
        "support_contacts": [{"role": "m.role.admin", "matrix_id": "@admin:example.org"}],
        "support_page": "https://example.org/support",
    },
    "voip": {
        "turn_uris": ["turn:turn.example.org:3478?transport=udp"],
        "turn_shared_secret": TURN_SECRET,
        "turn_user_lifetime": 3600,
    },
}


@dataclass
class Pair:
    a: Homeserver
    b: Homeserver
    session: aiohttp.ClientSession

    def base(self, hs: Homeserver) -> str:
        return f"http://127.0.0.1:{hs.ports['client']}"

    async def register(self, hs: Homeserver, name: str) -> Client:
        return await Client.register(self.session, hs, name)

    async def request(
        self, hs: Homeserver, method: str, path: str, body: Any = None, token: str | None = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.request(method, self.base(hs) + path, json=body, headers=headers) as resp:
            return resp.status, await resp.json()


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def pair(tmp_path_factory: Any) -> AsyncIterator[Pair]:
    root: Path = tmp_path_factory.mktemp("accounts")
    a = await start_server(root / "a", extra=A_CONFIG)
    b = await start_server(root / "b")
    try:
        async with aiohttp.ClientSession() as session:
            yield Pair(a, b, session)
    finally:
        await a.stop()
        await b.stop()
