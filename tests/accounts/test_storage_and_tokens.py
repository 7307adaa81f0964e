"""On SQLite and PostgreSQL: the account-lifecycle storage (erasure marks, refresh and OpenID tokens,
access token expiry, lock and suspension flags) and token-gated registration over the real stores."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from ranvier.client_api.account import AccountHandlers
from ranvier.client_api.auth import Authenticator
from ranvier.client_api.errors import matrix_error_middleware
from ranvier.client_api.registration_tokens import VALIDITY_PATH, RegistrationTokenValidity
from ranvier.clock import now_ms
from ranvier.storage.sql.admin import AdminStore
from ranvier.storage.sql.engine import Database
from ranvier.storage.sql.storage import SqlStorage
from tests.storage.conftest import db, db_spec, raw_db  # noqa: F401


@pytest.fixture
async def storage(db: Database) -> Any:  # noqa: F811
    return await SqlStorage.open(db)


async def test_account_tokens_and_flags(storage: Any) -> None:
    tokens = storage.account_tokens
    await storage.users.create_user("@a:x", "pw")
    await storage.devices.create_device("@a:x", "D1")
    await storage.devices.create_access_token("@a:x", "D1", "acc-1", expires_ts=1000)
    await storage.devices.create_access_token("@a:x", "D1", "acc-other")  # a later login of the device
    assert await storage.devices.lookup_access_token("acc-1") == ("@a:x", "D1", 1000)
    await tokens.create_refresh_token("@a:x", "D1", "ref-1", "acc-1")
    assert await tokens.take_refresh_token("ref-1") == ("@a:x", "D1")
    assert await tokens.take_refresh_token("ref-1") is None  # single use
    assert await storage.devices.lookup_access_token("acc-1") is None  # the pair went together
    assert await storage.devices.lookup_access_token("acc-other") == ("@a:x", "D1", None)
    # Deleting the device takes its refresh tokens with it.
    await tokens.create_refresh_token("@a:x", "D1", "ref-2")
    await storage.devices.delete_device("@a:x", "D1")
    assert await tokens.take_refresh_token("ref-2") is None

    now = now_ms()
    await tokens.create_openid_token("@a:x", "oid", expires_ts=now + 60_000)
    assert await tokens.openid_token_owner("oid", now=now) == "@a:x"
    assert await tokens.openid_token_owner("oid", now=now + 60_001) is None

    await tokens.mark_erased("@a:x")
    await tokens.mark_erased("@a:x")  # twice is fine
    assert await tokens.erased_among(["@a:x", "@b:x"]) == {"@a:x"}

    await storage.users.set_locked("@a:x", True)
    await storage.users.set_suspended("@a:x", True)
    user = await storage.users.get_user("@a:x")
    assert user.locked and user.suspended
    await storage.users.set_locked("@a:x", False)
    assert not (await storage.users.get_user("@a:x")).locked


@pytest.fixture
async def token_app(db: Database, storage: Any) -> AsyncIterator[tuple[TestClient[Any, Any], AdminStore]]:  # noqa: F811
    admin_store = AdminStore(db)
    account = AccountHandlers(
        storage, "test.example", True, None, Authenticator(storage), registration_tokens=admin_store
    )
    app = web.Application(middlewares=[matrix_error_middleware])
    app.add_routes(account.routes())
    app.add_routes(RegistrationTokenValidity(admin_store, True).routes())
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield client, admin_store
    finally:
        await client.close()


async def test_token_gated_registration(token_app: tuple[TestClient[Any, Any], AdminStore]) -> None:
    client, admin_store = token_app
    await admin_store.create_token("once", uses_allowed=1, expiry_time=None)
    await admin_store.create_token("expired", uses_allowed=None, expiry_time=1)

    async def valid(token: str) -> Any:
        resp = await client.get(VALIDITY_PATH, params={"token": token})
        return (await resp.json())["valid"]

    assert (await valid("once"), await valid("expired"), await valid("nope")) == (True, False, False)
    assert (await client.get(VALIDITY_PATH)).status == 400

    async def register(name: str, auth: dict[str, Any] | None) -> tuple[int, Any]:
        body: dict[str, Any] = {"username": name, "password": "pw"}
        if auth is not None:
            body["auth"] = auth
        resp = await client.post("/_matrix/client/v3/register", json=body)
        return resp.status, await resp.json()

    status, challenge = await register("tok1", None)
    assert status == 401 and challenge["flows"] == [{"stages": ["m.login.registration_token"]}]
    session = challenge["session"]
    status, answer = await register("tok1", {"type": "m.login.dummy", "session": session})
    assert status == 401 and answer["errcode"] == "M_UNRECOGNIZED"
    kind = "m.login.registration_token"
    status, answer = await register("tok1", {"type": kind, "token": "expired", "session": session})
    assert status == 401 and answer["errcode"] == "M_FORBIDDEN"
    status, answer = await register("tok1", {"type": kind, "token": "once", "session": session})
    assert status == 200 and answer["user_id"] == "@tok1:test.example"
    # Used up.
    assert await valid("once") is False
    status, answer = await register("tok2", {"type": kind, "token": "once"})
    assert status == 401 and answer["errcode"] == "M_FORBIDDEN"
