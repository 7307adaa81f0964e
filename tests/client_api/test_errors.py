"""Every errcode of the client API, each produced by a request that deserves it, against a whole in-process
Ranvier (real storage, real HTTP on loopback). After each refusal nothing has changed: no event persisted,
no user, alias, account data or receipt written (CS "Standard error response", "Common error codes")."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ranvier.app import Homeserver
from ranvier.config import parse_config

V3 = "/_matrix/client/v3"


@dataclass
class Env:
    hs: Homeserver
    http: aiohttp.ClientSession
    base: str
    alice: str  # tokens
    bob: str
    alice_id: str
    room_id: str  # Alice's invite-only room, Bob not in it
    public_room_id: str  # Alice's public room, Bob joined

    async def call(
        self, method: str, path: str, body: Any = None, *, token: str | None = None, raw: bytes | None = None
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        kwargs: dict[str, Any] = {"data": raw} if raw is not None else {"json": body}
        async with self.http.request(method, self.base + path, headers=headers, **kwargs) as resp:
            return resp.status, await resp.json()

    async def snapshot(self) -> tuple[Any, ...]:
        """Everything a refused request must leave alone."""
        storage = self.hs.storage
        rooms = await storage.rooms.get_all_rooms()
        return (
            storage.stream.current_position(),
            await storage.users.count_users(),
            len(rooms),
            await storage.account_data.max_position(),
            await storage.receipts.max_position(),
            await storage.aliases.get_alias(f"#taken:{self.hs.server_name}"),
        )


async def _register(http: aiohttp.ClientSession, base: str, name: str) -> tuple[str, str]:
    body = {"username": name, "password": "pw-" + name * 3, "auth": {"type": "m.login.dummy"}}
    async with http.post(base + V3 + "/register", json=body) as resp:
        answer = await resp.json()
        assert resp.status == 200, answer
    return answer["access_token"], answer["user_id"]


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    config = parse_config(
        {
            "server_name": "errors.test",
            "data_dir": str(tmp_path),
            "signing_key_path": str(tmp_path / "signing.key"),
            "database": {"url": f"sqlite:///{tmp_path / 'homeserver.db'}"},
            "listeners": {"client": {"bind": "127.0.0.1", "port": 0}},
            "registration": {"enabled": True},
            "federation": {"enabled": False},
        }
    )
    hs = Homeserver(config)
    await hs.start()
    http = aiohttp.ClientSession()
    base = f"http://127.0.0.1:{hs.ports['client']}"
    try:
        alice, alice_id = await _register(http, base, "alice")
        bob, _ = await _register(http, base, "bob")
        e = Env(hs, http, base, alice, bob, alice_id, "", "")
        status, created = await e.call("POST", V3 + "/createRoom", {"room_alias_name": "taken"}, token=alice)
        assert status == 200, created
        e.room_id = created["room_id"]
        status, public = await e.call("POST", V3 + "/createRoom", {"preset": "public_chat"}, token=alice)
        e.public_room_id = public["room_id"]
        status, _ = await e.call("POST", V3 + f"/join/{e.public_room_id}", {}, token=bob)
        assert status == 200
        yield e
    finally:
        await http.close()
        await hs.stop()


async def _refused(
    env: Env, status: int, errcode: str, method: str, path: str, body: Any = None, **kwargs: Any
) -> dict[str, Any]:
    before = await env.snapshot()
    got_status, answer = await env.call(method, path, body, **kwargs)
    assert (got_status, answer.get("errcode")) == (status, errcode), answer
    assert isinstance(answer.get("error"), str)
    assert await env.snapshot() == before, f"{method} {path} changed something"
    return answer


def _send(room_id: str, txn: str, event_type: str = "m.room.message") -> str:
    return V3 + f"/rooms/{room_id}/send/{event_type}/{txn}"


async def test_body_errors(env: Env) -> None:
    path = _send(env.public_room_id, "t1")
    await _refused(env, 400, "M_NOT_JSON", "PUT", path, raw=b'{"body": "no closing brace"', token=env.alice)
    await _refused(env, 400, "M_BAD_JSON", "PUT", path, raw=b"[1, 2, 3]", token=env.alice)
    # Floats are not canonical JSON, which events must be.
    await _refused(env, 400, "M_BAD_JSON", "PUT", path, raw=b'{"body": "x", "n": 1.5}', token=env.alice)
    invite = V3 + f"/rooms/{env.room_id}/invite"
    await _refused(env, 400, "M_MISSING_PARAM", "POST", invite, {}, token=env.alice)
    await _refused(env, 400, "M_INVALID_PARAM", "POST", invite, {"user_id": "not-a-user"}, token=env.alice)
    await _refused(env, 400, "M_INVALID_PARAM", "GET", V3 + "/sync?since=garbage", token=env.alice)
    # CS "Size limits": an event over 65,536 bytes as federated is refused.
    big = {"msgtype": "m.text", "body": "x" * 70_000}
    await _refused(env, 413, "M_TOO_LARGE", "PUT", _send(env.public_room_id, "big"), big, token=env.alice)
    # The control: the same request made valid does change the snapshot.
    before = await env.snapshot()
    status, _ = await env.call("PUT", path, {"msgtype": "m.text", "body": "fine"}, token=env.alice)
    assert status == 200 and await env.snapshot() != before


async def test_forbidden(env: Env) -> None:
    text = {"msgtype": "m.text", "body": "hi"}
    # Not joined: Bob writing into, or reading, a room he is not in.
    await _refused(env, 403, "M_FORBIDDEN", "PUT", _send(env.room_id, "f1"), text, token=env.bob)
    await _refused(env, 403, "M_FORBIDDEN", "GET", V3 + f"/rooms/{env.room_id}/messages?dir=b", token=env.bob)
    await _refused(env, 403, "M_FORBIDDEN", "POST", V3 + f"/join/{env.room_id}", {}, token=env.bob)
    # No power: Bob is joined to the public room but at power level 0.
    state = V3 + f"/rooms/{env.public_room_id}/state/m.room.power_levels"
    await _refused(env, 403, "M_FORBIDDEN", "PUT", state, {"users": {}}, token=env.bob)
    kick = V3 + f"/rooms/{env.public_room_id}/kick"
    await _refused(env, 403, "M_FORBIDDEN", "POST", kick, {"user_id": env.alice_id}, token=env.bob)
    # Someone else's account data.
    await _refused(
        env, 403, "M_FORBIDDEN", "PUT", V3 + f"/user/{env.alice_id}/account_data/x", {}, token=env.bob
    )


async def test_not_found(env: Env) -> None:
    room = env.public_room_id
    await _refused(
        env, 404, "M_NOT_FOUND", "GET", V3 + f"/rooms/{room}/event/$no-such-event", token=env.alice
    )
    await _refused(
        env, 404, "M_NOT_FOUND", "GET", V3 + "/directory/room/%23nowhere:errors.test", token=env.alice
    )
    await _refused(env, 404, "M_NOT_FOUND", "GET", V3 + f"/rooms/{room}/state/m.room.topic", token=env.alice)
    receipt = V3 + f"/rooms/{room}/receipt/m.read/$no-such-event"
    await _refused(env, 404, "M_NOT_FOUND", "POST", receipt, {}, token=env.alice)


async def test_tokens(env: Env) -> None:
    await _refused(env, 401, "M_MISSING_TOKEN", "GET", V3 + "/account/whoami")
    answer = await _refused(env, 401, "M_UNKNOWN_TOKEN", "GET", V3 + "/account/whoami", token="rvt_forged")
    assert answer.get("soft_logout") is False
    await _refused(env, 401, "M_MISSING_TOKEN", "PUT", _send(env.public_room_id, "n1"), {"body": "x"})


async def test_unrecognized(env: Env) -> None:
    await _refused(env, 404, "M_UNRECOGNIZED", "GET", V3 + "/no/such/endpoint", token=env.alice)
    await _refused(env, 405, "M_UNRECOGNIZED", "DELETE", V3 + "/createRoom", token=env.alice)


async def test_room_creation_errors(env: Env) -> None:
    create = V3 + "/createRoom"
    await _refused(
        env, 400, "M_UNSUPPORTED_ROOM_VERSION", "POST", create, {"room_version": "99"}, token=env.bob
    )
    await _refused(env, 400, "M_ROOM_IN_USE", "POST", create, {"room_alias_name": "taken"}, token=env.bob)


async def test_registration_errors(env: Env) -> None:
    register = V3 + "/register"
    auth = {"type": "m.login.dummy"}
    taken = {"username": "alice", "password": "another one", "auth": auth}
    await _refused(env, 400, "M_USER_IN_USE", "POST", register, taken)
    bad = {"username": "no spaces allowed", "password": "whatever123", "auth": auth}
    await _refused(env, 400, "M_INVALID_USERNAME", "POST", register, bad)


async def test_public_rooms_limit_is_clamped(env: Env) -> None:
    # A limit of 0 used to hand out a next_batch equal to the request's own position (clients paged forever).
    status, _ = await env.call("POST", V3 + "/createRoom", {"visibility": "public"}, token=env.alice)
    assert status == 200
    await env.call("POST", V3 + "/createRoom", {"visibility": "public"}, token=env.alice)
    status, page = await env.call("POST", V3 + "/publicRooms", {"limit": 0}, token=env.alice)
    assert status == 200 and len(page["chunk"]) == 1
    status, second = await env.call(
        "POST", V3 + "/publicRooms", {"limit": 0, "since": page["next_batch"]}, token=env.bob
    )
    assert status == 200 and len(second["chunk"]) == 1 and second["chunk"] != page["chunk"]


async def test_cors_on_every_response_and_preflight_without_logic(env: Env) -> None:
    before = await env.snapshot()
    # A pre-flight of a write, unauthenticated: answered with the headers, and nothing is sent.
    async with env.http.options(env.base + _send(env.public_room_id, "preflight")) as resp:
        assert resp.status == 200
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
        assert "PUT" in resp.headers["Access-Control-Allow-Methods"]
    assert await env.snapshot() == before
    for path, token in (
        (V3 + "/account/whoami", env.alice),
        (V3 + "/account/whoami", None),
        (V3 + "/nope", None),
    ):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with env.http.get(env.base + path, headers=headers) as resp:
            assert resp.headers.get("Access-Control-Allow-Origin") == "*", (path, resp.status)
