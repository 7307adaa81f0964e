"""Access tokens after logout, after ``/logout/all`` and after their device is deleted, and tokens that were
never issued (CS "Using access tokens", "/logout", "/logout/all", "DELETE /devices/{deviceId}"): every
endpoint answers 401 with M_UNKNOWN_TOKEN (M_MISSING_TOKEN without one) and does nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from .client_env import PASSWORD, ClientEnv, User, report_outcomes, seg, start_env

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> AsyncIterator[ClientEnv]:
    async with start_env(tmp_path_factory.mktemp("tokens"), __name__) as e:
        yield e
    report_outcomes(request, __name__)


async def _login(env: ClientEnv, user: User) -> User:
    body = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user.name},
        "password": PASSWORD,
    }
    answer = await env.ok(user, "POST", "/login", body)
    return User(user.name, answer["user_id"], answer["access_token"], answer["device_id"])


def _requests(room_id: str, user: User) -> list[tuple[str, str, Any]]:
    """A request of each family that needs a token (reads and writes)."""
    room = seg(room_id)
    me = seg(user.user_id)
    return [
        ("GET", "/account/whoami", None),
        ("GET", "/sync", None),
        ("GET", "/joined_rooms", None),
        ("POST", "/createRoom", {}),
        ("PUT", f"/rooms/{room}/send/m.room.message/after-logout", {"msgtype": "m.text", "body": "ghost"}),
        ("PUT", f"/rooms/{room}/state/m.room.topic", {"topic": "ghost"}),
        ("GET", f"/rooms/{room}/messages", None),
        ("GET", f"/rooms/{room}/state", None),
        ("POST", f"/rooms/{room}/leave", {}),
        ("PUT", f"/rooms/{room}/typing/{me}", {"typing": True, "timeout": 1000}),
        ("PUT", f"/user/{me}/account_data/org.example.ghost", {"x": 1}),
        ("GET", f"/user/{me}/account_data/m.push_rules", None),
        ("POST", f"/user/{me}/filter", {}),
        ("GET", "/devices", None),
        ("PUT", f"/profile/{me}/displayname", {"displayname": "ghost"}),
        ("POST", "/logout", None),
        ("POST", "/logout/all", None),
    ]


async def _all_refused(env: ClientEnv, category: str, token: str | None, room_id: str, user: User) -> None:
    errcode = "M_MISSING_TOKEN" if token is None else "M_UNKNOWN_TOKEN"
    position = env.hs.storage.stream.current_position()
    for method, path, body in _requests(room_id, user):
        await env.probe(category, token, method, path, body, expect=401, errcode=errcode)
    assert env.hs.storage.stream.current_position() == position  # no event was written


async def test_a_logged_out_token_is_dead_and_the_others_live(env: ClientEnv) -> None:
    room_id = await env.create_room(env.bob, preset="public_chat")
    first, second = await _login(env, env.bob), await _login(env, env.bob)
    await env.probe("tokens: after logout", first, "POST", "/logout", None, expect=200)
    await _all_refused(env, "tokens: after logout", first.token, room_id, env.bob)
    # Bob's other sessions are untouched, and the logged-out device is gone.
    await env.probe("tokens: after logout", second, "GET", "/account/whoami", expect=200)
    await env.probe("tokens: after logout", env.bob, "GET", "/account/whoami", expect=200)
    devices = {d["device_id"] for d in (await env.ok(env.bob, "GET", "/devices"))["devices"]}
    assert first.device_id not in devices and second.device_id in devices
    await env.assert_room_works(room_id, env.bob)


async def test_logout_all_kills_every_token_of_the_user_only(env: ClientEnv) -> None:
    room_id = await env.create_room(env.carol, preset="public_chat")
    await env.join(env.alice, room_id)
    sessions = [await _login(env, env.carol) for _ in range(3)]
    await env.probe("tokens: after logout/all", sessions[0], "POST", "/logout/all", None, expect=200)
    for session in [*sessions, env.carol]:
        await _all_refused(env, "tokens: after logout/all", session.token, room_id, env.carol)
    # Alice, in the same room, is not affected; Carol logs in again and is still a member.
    await env.probe("tokens: after logout/all", env.alice, "GET", "/account/whoami", expect=200)
    carol = await _login(env, env.carol)
    await env.assert_room_works(room_id, env.alice, carol)


async def test_a_deleted_device_takes_its_token_with_it(env: ClientEnv) -> None:
    room_id = await env.create_room(env.alice, preset="public_chat")
    session = await _login(env, env.alice)
    auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": "alice"},
        "password": PASSWORD,
    }
    path = f"/devices/{seg(session.device_id)}"
    await env.probe("tokens: after device deletion", env.alice, "DELETE", path, {"auth": auth}, expect=200)
    await _all_refused(env, "tokens: after device deletion", session.token, room_id, env.alice)
    await env.assert_room_works(room_id, env.alice)


@pytest.mark.parametrize(
    "token",
    [None, "rvt_never_issued", "x" * 5000, "rvt_" + "\u00e9" * 10],
    ids=["none", "never issued", "huge", "non-ascii"],
)
async def test_tokens_never_issued_are_refused(env: ClientEnv, token: str | None) -> None:
    room_id = await env.create_room(env.eve, preset="public_chat")
    await _all_refused(env, "tokens: never issued", token, room_id, env.eve)
    await env.assert_room_works(room_id, env.eve)
