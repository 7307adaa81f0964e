"""A real client-API app (aiohttp test server on loopback) over real storage, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from ranvier.client_api.account import AccountHandlers
from ranvier.client_api.auth import Authenticator
from ranvier.client_api.errors import matrix_error_middleware
from ranvier.client_api.versions import VersionsHandlers
from ranvier.storage.sql.engine import Database
from ranvier.storage.sql.storage import SqlStorage

# The storage suite's database fixtures (db_spec -> raw_db -> db), parametrized over both engines.
from tests.storage.conftest import db, db_spec, raw_db  # noqa: F401

SERVER_NAME = "test.example"
SHARED_SECRET = "s3cret-for-tests"


class AccountApp:
    """The running app plus what tests inspect: the storage and the profile hook's calls."""

    def __init__(self, client: TestClient[Any, Any], storage: Any, profile_changes: list[str]) -> None:
        self.client = client
        self.storage = storage
        self.profile_changes = profile_changes


async def _start(database: Database, *, registration_enabled: bool, shared_secret: str | None) -> AccountApp:
    # The real storage object the server builds: the room/event stores plus the auxiliary ones.
    storage = await SqlStorage.open(database)
    profile_changes: list[str] = []

    async def on_profile_changed(user_id: str) -> None:
        profile_changes.append(user_id)

    authenticator = Authenticator(storage)  # type: ignore[arg-type]
    account = AccountHandlers(
        storage,  # type: ignore[arg-type]
        SERVER_NAME,
        registration_enabled,
        shared_secret,
        authenticator,
        on_profile_changed,
    )
    app = web.Application(middlewares=[matrix_error_middleware])
    app.add_routes(account.routes())
    app.add_routes(VersionsHandlers("https://matrix.test.example/").routes())
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    return AccountApp(client, storage, profile_changes)


@pytest.fixture
async def account_app(db: Database) -> AsyncIterator[AccountApp]:  # noqa: F811
    running = await _start(db, registration_enabled=True, shared_secret=SHARED_SECRET)
    try:
        yield running
    finally:
        await running.client.close()


@pytest.fixture
async def closed_app(db: Database) -> AsyncIterator[AccountApp]:  # noqa: F811
    running = await _start(db, registration_enabled=False, shared_secret=None)
    try:
        yield running
    finally:
        await running.client.close()
