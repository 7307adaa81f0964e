"""Login forms (CS "Login" and "Identifier types"): wrong types, missing fields, wrong passwords, unknown
users, and the user id written in full on a server whose name carries a port (issue 12, defect 8: the id
was split at its last colon, so ``@alice:authz.test:8448`` never logged in; mautrix and matrix-commander
log in that way)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from .client_env import PASSWORD, SERVER_NAME, ClientEnv, report_outcomes, start_env

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> AsyncIterator[ClientEnv]:
    async with start_env(tmp_path_factory.mktemp("login"), __name__) as e:
        yield e
    report_outcomes(request, __name__)


def _password_login(user: Any, password: Any = PASSWORD) -> dict[str, Any]:
    return {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": password,
    }


async def _login(env: ClientEnv, category: str, body: Any, expect: int, errcode: str | None = None) -> Any:
    reply = await env.probe(category, None, "POST", "/login", body, expect=expect, errcode=errcode)
    return reply.body


@pytest.mark.parametrize(
    "user",
    [
        f"@alice:{SERVER_NAME}",  # the full id, port included
        f"@ALICE:{SERVER_NAME}",  # localparts are matched case-insensitively
        "alice",
        "Alice",
    ],
)
async def test_the_user_may_be_named_by_localpart_or_full_id(env: ClientEnv, user: str) -> None:
    answer = await _login(env, "login: accepted forms", _password_login(user), 200)
    assert answer["user_id"] == env.alice.user_id == f"@alice:{SERVER_NAME}"
    assert answer["home_server"] == SERVER_NAME
    # The token works, and is Alice's.
    whoami = await env.probe(
        "login: accepted forms", answer["access_token"], "GET", "/account/whoami", expect=200
    )
    assert whoami.body["user_id"] == env.alice.user_id


async def test_the_deprecated_top_level_user_takes_the_full_id_too(env: ClientEnv) -> None:
    body = {"type": "m.login.password", "user": f"@alice:{SERVER_NAME}", "password": PASSWORD}
    assert (await _login(env, "login: accepted forms", body, 200))["user_id"] == env.alice.user_id


async def test_password_uia_takes_the_full_id(env: ClientEnv) -> None:
    # Deleting a device re-authenticates with the same identifier forms as login (CS "Password-based").
    second = await _login(env, "login: accepted forms", _password_login("alice"), 200)
    path = f"/devices/{second['device_id']}"
    auth = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": env.alice.user_id}}
    await env.probe(
        "login: accepted forms",
        env.alice,
        "DELETE",
        path,
        {"auth": {**auth, "password": PASSWORD}},
        expect=200,
    )
    await env.probe("login: accepted forms", second["access_token"], "GET", "/account/whoami", expect=401)


WRONG_CREDENTIALS: list[tuple[str, dict[str, Any]]] = [
    ("wrong password", _password_login("alice", "not the password")),
    ("wrong password, full id", _password_login(f"@alice:{SERVER_NAME}", "not the password")),
    ("empty password", _password_login("alice", "")),
    ("unknown user", _password_login("mallory")),
    ("unknown user, full id", _password_login(f"@mallory:{SERVER_NAME}")),
    ("another server's user", _password_login("@alice:elsewhere.example")),
    ("our name without the port", _password_login("@alice:authz.test")),
    ("our name with another port", _password_login("@alice:authz.test:9999")),
    ("server name as localpart", _password_login(f"alice:{SERVER_NAME}")),
    ("not a user id", _password_login("@alice")),
    ("an empty user", _password_login("")),
    ("a room id", _password_login(f"!room:{SERVER_NAME}")),
]


@pytest.mark.parametrize(("case", "body"), WRONG_CREDENTIALS, ids=[c for c, _ in WRONG_CREDENTIALS])
async def test_wrong_credentials_are_forbidden(env: ClientEnv, case: str, body: dict[str, Any]) -> None:
    # The same answer for an unknown user and a wrong password: which users exist is not told.
    await _login(env, "login: wrong credentials", body, 403, "M_FORBIDDEN")


BAD_FORMS: list[tuple[str, Any, str]] = [
    (
        "no type",
        {"identifier": {"type": "m.id.user", "user": "alice"}, "password": PASSWORD},
        "M_MISSING_PARAM",
    ),
    ("type not a string", {**_password_login("alice"), "type": 1}, "M_INVALID_PARAM"),
    ("unknown type", {**_password_login("alice"), "type": "m.login.magic"}, "M_UNKNOWN"),
    ("token type, unsupported", {"type": "m.login.token", "token": "x"}, "M_UNKNOWN"),
    ("no identifier", {"type": "m.login.password", "password": PASSWORD}, "M_MISSING_PARAM"),
    (
        "identifier a string",
        {"type": "m.login.password", "identifier": "alice", "password": PASSWORD},
        "M_INVALID_PARAM",
    ),
    (
        "identifier a list",
        {"type": "m.login.password", "identifier": ["alice"], "password": PASSWORD},
        "M_INVALID_PARAM",
    ),
    (
        "identifier of another type",
        {
            "type": "m.login.password",
            "identifier": {"type": "m.id.phone", "country": "GB", "phone": "1"},
            "password": PASSWORD,
        },
        "M_UNKNOWN",
    ),
    (
        "identifier without type",
        {"type": "m.login.password", "identifier": {"user": "alice"}, "password": PASSWORD},
        "M_UNKNOWN",
    ),
    (
        "identifier without user",
        {"type": "m.login.password", "identifier": {"type": "m.id.user"}, "password": PASSWORD},
        "M_MISSING_PARAM",
    ),
    ("user a number", _password_login(12), "M_INVALID_PARAM"),
    ("user an object", _password_login({"user": "alice"}), "M_INVALID_PARAM"),
    (
        "no password",
        {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}},
        "M_MISSING_PARAM",
    ),
    ("password a number", _password_login("alice", 12345), "M_INVALID_PARAM"),
    ("password null", _password_login("alice", None), "M_INVALID_PARAM"),
    ("device_id a number", {**_password_login("alice"), "device_id": 7}, "M_INVALID_PARAM"),
    (
        "display name a list",
        {**_password_login("alice"), "initial_device_display_name": ["x"]},
        "M_INVALID_PARAM",
    ),
]


@pytest.mark.parametrize(("case", "body", "errcode"), BAD_FORMS, ids=[c for c, _, _ in BAD_FORMS])
async def test_malformed_login_bodies_are_400(env: ClientEnv, case: str, body: Any, errcode: str) -> None:
    await _login(env, "login: malformed forms", body, 400, errcode)


@pytest.mark.parametrize(
    ("raw", "errcode"),
    [
        (b"", "M_NOT_JSON"),
        (b"{not json", "M_NOT_JSON"),
        (b"[1]", "M_BAD_JSON"),
        (b'"alice"', "M_BAD_JSON"),
        (b'{"type": "m.login.password", "password": 1.5}', "M_BAD_JSON"),
    ],
)
async def test_bodies_that_are_not_objects_are_400(env: ClientEnv, raw: bytes, errcode: str) -> None:
    await env.probe("login: malformed forms", None, "POST", "/login", raw=raw, expect=400, errcode=errcode)


async def test_refused_logins_issue_no_device(env: ClientEnv) -> None:
    before = await env.ok(env.alice, "GET", "/devices")
    for _, body in WRONG_CREDENTIALS:
        await _login(env, "login: wrong credentials", body, 403)
    assert await env.ok(env.alice, "GET", "/devices") == before
