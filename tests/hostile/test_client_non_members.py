"""Users who are not in a room (never joined, left, kicked, banned, only invited), and rooms that do not
exist: every read and write of the room is refused (CS "Room membership", "Getting events for a room":
403, or 404 for a single event "you do not have permission to read"), an unknown room answers exactly as
a room one is not in (its existence is not told), and the room works for its members afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from .client_env import ClientEnv, User, register, report_outcomes, seg, start_env

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> AsyncIterator[ClientEnv]:
    async with start_env(tmp_path_factory.mktemp("non_members"), __name__) as e:
        yield e
    report_outcomes(request, __name__)


def _requests(room_id: str, event_id: str, victim: User, newcomer: User) -> list[tuple[str, str, Any, int]]:
    """(method, path, body, status) for every room endpoint, as refused to a user not in the room."""
    room = seg(room_id)
    event = seg(event_id)
    text = {"msgtype": "m.text", "body": "from outside"}
    return [
        ("GET", f"/rooms/{room}/messages", None, 403),
        ("GET", f"/rooms/{room}/messages?dir=f", None, 403),
        ("GET", f"/rooms/{room}/state", None, 403),
        ("GET", f"/rooms/{room}/state/m.room.name", None, 403),
        ("GET", f"/rooms/{room}/state/m.room.member/{seg(victim.user_id)}", None, 403),
        ("GET", f"/rooms/{room}/members", None, 403),
        ("GET", f"/rooms/{room}/joined_members", None, 403),
        ("GET", f"/rooms/{room}/event/{event}", None, 404),
        ("GET", f"/rooms/{room}/context/{event}", None, 403),
        ("PUT", f"/rooms/{room}/send/m.room.message/outside", text, 403),
        ("PUT", f"/rooms/{room}/send/org.example.custom/outside", {}, 403),
        ("PUT", f"/rooms/{room}/state/m.room.name", {"name": "taken over"}, 403),
        ("PUT", f"/rooms/{room}/state/m.room.topic", {"topic": "taken over"}, 403),
        ("PUT", f"/rooms/{room}/state/org.example.custom/key", {"x": 1}, 403),
        ("PUT", f"/rooms/{room}/redact/{event}/outside", {}, 403),
        ("POST", f"/rooms/{room}/invite", {"user_id": newcomer.user_id}, 403),
        ("POST", f"/rooms/{room}/kick", {"user_id": victim.user_id}, 403),
        ("POST", f"/rooms/{room}/ban", {"user_id": victim.user_id}, 403),
        ("POST", f"/rooms/{room}/unban", {"user_id": victim.user_id}, 403),
        ("PUT", f"/rooms/{room}/typing/{{me}}", {"typing": True, "timeout": 5000}, 403),
        ("POST", f"/rooms/{room}/receipt/m.read/{event}", {}, 403),
        ("POST", f"/rooms/{room}/read_markers", {"m.fully_read": event_id, "m.read": event_id}, 403),
    ]


async def _refused_everything(
    env: ClientEnv, category: str, who: User, room_id: str, event_id: str, victim: User, newcomer: User
) -> list[tuple[int, str | None]]:
    position = env.hs.storage.stream.current_position()
    answers = []
    for method, path, body, status in _requests(room_id, event_id, victim, newcomer):
        path = path.replace("{me}", seg(who.user_id))
        reply = await env.probe(category, who, method, path, body, expect=status)
        answers.append((reply.status, reply.errcode))
    assert env.hs.storage.stream.current_position() == position, "a refused request wrote an event"
    return answers


async def _invite_only_room(env: ClientEnv) -> tuple[str, str]:
    room_id = await env.create_room(env.alice, preset="private_chat", name="Private")
    await env.ok(env.alice, "POST", f"/rooms/{seg(room_id)}/invite", {"user_id": env.bob.user_id})
    await env.join(env.bob, room_id)
    return room_id, await env.send_text(env.alice, room_id, "for members only")


async def test_a_user_who_never_joined_is_refused_everything(env: ClientEnv) -> None:
    room_id, event_id = await _invite_only_room(env)
    dave = await register(env.http, env.base, "dave_nm1")
    await _refused_everything(env, "non-members: never joined", env.eve, room_id, event_id, env.bob, dave)
    # Nor may Eve let herself in.
    await env.probe("non-members: never joined", env.eve, "POST", f"/join/{seg(room_id)}", {}, expect=403)
    assert await env.hs.storage.state.get_membership(room_id, dave.user_id) is None
    await env.assert_room_works(room_id, env.alice, env.bob)


async def test_a_public_room_is_no_different_until_one_joins(env: ClientEnv) -> None:
    room_id = await env.create_room(env.alice, preset="public_chat")
    await env.join(env.bob, room_id)
    event_id = await env.send_text(env.alice, room_id, "public, but shared history")
    dave = await register(env.http, env.base, "dave_nm2")
    await _refused_everything(env, "non-members: public room", env.carol, room_id, event_id, env.bob, dave)
    await env.probe("non-members: public room", env.carol, "POST", f"/join/{seg(room_id)}", {}, expect=200)
    await env.assert_room_works(room_id, env.alice, env.bob, env.carol)


async def test_an_unknown_room_answers_as_a_room_one_is_not_in(env: ClientEnv) -> None:
    room_id, event_id = await _invite_only_room(env)
    dave = await register(env.http, env.base, "dave_nm3")
    known = await _refused_everything(
        env, "non-members: unknown room", env.eve, room_id, event_id, env.bob, dave
    )
    unknown_room = "!doesnotexist:authz.test:8448"
    unknown = await _refused_everything(
        env, "non-members: unknown room", env.eve, unknown_room, event_id, env.bob, dave
    )
    assert unknown == known


@pytest.mark.parametrize("how", ["left", "kicked", "banned", "invited"])
async def test_former_and_invited_members_may_not_write(env: ClientEnv, how: str) -> None:
    room_id = await env.create_room(env.alice, preset="private_chat")
    base = f"/rooms/{seg(room_id)}"
    await env.ok(env.alice, "POST", base + "/invite", {"user_id": env.carol.user_id})
    if how != "invited":
        await env.join(env.carol, room_id)
    event_id = await env.send_text(env.alice, room_id, "while carol was there")
    if how == "left":
        await env.ok(env.carol, "POST", base + "/leave", {})
    elif how == "kicked":
        await env.ok(env.alice, "POST", base + "/kick", {"user_id": env.carol.user_id})
    elif how == "banned":
        await env.ok(env.alice, "POST", base + "/ban", {"user_id": env.carol.user_id})
    category = f"non-members: {how}"
    position = env.hs.storage.stream.current_position()
    dave = await register(env.http, env.base, f"dave_{how}")
    writes: list[tuple[str, str, Any]] = [
        ("PUT", base + "/send/m.room.message/w1", {"msgtype": "m.text", "body": "still talking"}),
        ("PUT", base + "/state/m.room.name", {"name": "mine"}),
        ("PUT", f"{base}/redact/{seg(event_id)}/w2", {}),
        ("POST", base + "/invite", {"user_id": dave.user_id}),
        ("POST", base + "/kick", {"user_id": env.alice.user_id}),
        ("PUT", f"{base}/typing/{seg(env.carol.user_id)}", {"typing": True, "timeout": 1000}),
        ("POST", f"{base}/receipt/m.read/{seg(event_id)}", {}),
        ("GET", base + "/joined_members", None),
    ]
    for method, path, body in writes:
        await env.probe(category, env.carol, method, path, body, expect=403)
    assert env.hs.storage.stream.current_position() == position
    # Reading the state: former members see it as it was when they left (CS "GET /rooms/{roomId}/state":
    # 403 only for who "weren't previously a member"), not what changed since; the invited see nothing.
    await env.put_state(env.alice, room_id, "m.room.name", {"name": "renamed after carol"})
    await env.ok(env.alice, "POST", base + "/invite", {"user_id": dave.user_id})
    reads = [base + "/state", base + "/state/m.room.join_rules", base + "/members"]
    for path in reads:
        await env.probe(category, env.carol, "GET", path, expect=403 if how == "invited" else 200)
    if how != "invited":
        await env.probe(category, env.carol, "GET", base + "/state/m.room.name", expect=404)
        state = await env.ok(env.carol, "GET", base + "/state")
        assert "m.room.name" not in {e["type"] for e in state}
        members = {
            e["state_key"]: e["content"]["membership"]
            for e in (await env.ok(env.carol, "GET", base + "/members"))["chunk"]
        }
        assert members[env.carol.user_id] == {"left": "leave", "kicked": "leave", "banned": "ban"}[how]
        assert dave.user_id not in members
    # Banned users may not come back; the others may (invite-only room: only the invitee).
    status = 403 if how in ("banned", "left", "kicked") else 200
    await env.probe(category, env.carol, "POST", f"/join/{seg(room_id)}", {}, expect=status)
    await env.assert_room_works(room_id, env.alice)
