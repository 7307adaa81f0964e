"""Other users' data (CS "Client Config", "Filtering", "Device Management", "Profiles", "Typing"): Bob
cannot read or write Alice's account data (global or per room), filters, devices, profile or typing state,
and after every attempt Alice's data is as it was and her session still works."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from .client_env import PASSWORD, ClientEnv, report_outcomes, seg, start_env

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> AsyncIterator[ClientEnv]:
    async with start_env(tmp_path_factory.mktemp("other_users"), __name__) as e:
        yield e
    report_outcomes(request, __name__)


async def test_account_data_of_another_user(env: ClientEnv) -> None:
    alice = seg(env.alice.user_id)
    room_id = await env.create_room(env.alice, preset="public_chat")
    await env.join(env.bob, room_id)
    room = seg(room_id)
    secret = {"diary": "private"}
    await env.ok(env.alice, "PUT", f"/user/{alice}/account_data/org.example.diary", secret)
    await env.ok(env.alice, "PUT", f"/user/{alice}/rooms/{room}/account_data/org.example.notes", secret)
    category = "other users: account data"
    for method, body in (("GET", None), ("PUT", {"diary": "overwritten"})):
        for path in (
            f"/user/{alice}/account_data/org.example.diary",
            f"/user/{alice}/account_data/m.direct",
            f"/user/{alice}/rooms/{room}/account_data/org.example.notes",
            f"/user/{alice}/rooms/{room}/account_data/m.tag",
        ):
            await env.probe(category, env.bob, method, path, body, expect=403, errcode="M_FORBIDDEN")
    # Alice's data is untouched, and Bob's own reads do not see it.
    assert await env.ok(env.alice, "GET", f"/user/{alice}/account_data/org.example.diary") == secret
    path = f"/user/{alice}/rooms/{room}/account_data/org.example.notes"
    assert await env.ok(env.alice, "GET", path) == secret
    bob = seg(env.bob.user_id)
    await env.probe(category, env.bob, "GET", f"/user/{bob}/account_data/org.example.diary", expect=404)
    synced = await env.ok(env.bob, "GET", "/sync")
    assert "org.example.diary" not in {e["type"] for e in synced["account_data"]["events"]}


async def test_filters_of_another_user(env: ClientEnv) -> None:
    alice = seg(env.alice.user_id)
    mine = {"room": {"timeline": {"limit": 7}}, "org.example.private": "alice's"}
    filter_id = (await env.ok(env.alice, "POST", f"/user/{alice}/filter", mine))["filter_id"]
    category = "other users: filters"
    await env.probe(category, env.bob, "POST", f"/user/{alice}/filter", {}, expect=403, errcode="M_FORBIDDEN")
    await env.probe(category, env.bob, "GET", f"/user/{alice}/filter/{filter_id}", expect=404)
    # Bob's own filter ids are his: the same number names a different filter (or none).
    bob = seg(env.bob.user_id)
    reply = await env.call(env.bob, "GET", f"/user/{bob}/filter/{filter_id}")
    assert reply.status == 404 or reply.body != mine
    assert await env.ok(env.alice, "GET", f"/user/{alice}/filter/{filter_id}") == mine


async def test_devices_of_another_user(env: ClientEnv) -> None:
    category = "other users: devices"
    device = seg(env.alice.device_id)
    await env.probe(category, env.bob, "GET", f"/devices/{device}", expect=404, errcode="M_NOT_FOUND")
    await env.probe(category, env.bob, "PUT", f"/devices/{device}", {"display_name": "pwned"}, expect=404)
    bob_auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": "bob"},
        "password": PASSWORD,
    }
    # Bob authenticates as himself: whatever he deletes is his own (he has no device of that id).
    await env.probe(category, env.bob, "DELETE", f"/devices/{device}", {"auth": bob_auth}, expect=200)
    body = {"devices": [env.alice.device_id], "auth": bob_auth}
    await env.probe(category, env.bob, "POST", "/delete_devices", body, expect=200)
    # Alice's password does not let Bob act as Alice either.
    alice_auth = {**bob_auth, "identifier": {"type": "m.id.user", "user": "alice"}}
    await env.probe(category, env.bob, "DELETE", f"/devices/{device}", {"auth": alice_auth}, expect=401)
    listed = {d["device_id"] for d in (await env.ok(env.bob, "GET", "/devices"))["devices"]}
    assert env.alice.device_id not in listed
    # Alice's device and session are intact.
    assert (await env.ok(env.alice, "GET", f"/devices/{device}"))["device_id"] == env.alice.device_id
    assert (await env.ok(env.alice, "GET", "/account/whoami"))["device_id"] == env.alice.device_id


async def test_profile_and_typing_of_another_user(env: ClientEnv) -> None:
    alice = seg(env.alice.user_id)
    await env.ok(env.alice, "PUT", f"/profile/{alice}/displayname", {"displayname": "Alice"})
    category = "other users: profile and typing"
    await env.probe(
        category, env.bob, "PUT", f"/profile/{alice}/displayname", {"displayname": "Mallory"}, expect=403
    )
    await env.probe(
        category, env.bob, "PUT", f"/profile/{alice}/avatar_url", {"avatar_url": "mxc://x/y"}, expect=403
    )
    await env.probe(category, env.bob, "DELETE", f"/profile/{alice}/displayname", expect=403)
    assert (await env.ok(env.bob, "GET", f"/profile/{alice}"))["displayname"] == "Alice"
    room_id = await env.create_room(env.alice, preset="public_chat")
    await env.join(env.bob, room_id)
    path = f"/rooms/{seg(room_id)}/typing/{alice}"
    await env.probe(category, env.bob, "PUT", path, {"typing": True, "timeout": 10_000}, expect=403)
    assert env.hs.typing.typing_users(room_id) == []
    # Bob's own membership event is his, Alice's is not: no profile change of another member by state.
    member = f"/rooms/{seg(room_id)}/state/m.room.member/{alice}"
    body = {"membership": "join", "displayname": "Mallory"}
    await env.probe(category, env.bob, "PUT", member, body, expect=403)
    state = await env.state(env.alice, room_id, "m.room.member", env.alice.user_id)
    assert state.get("displayname") != "Mallory"
    await env.assert_room_works(room_id, env.alice, env.bob)
