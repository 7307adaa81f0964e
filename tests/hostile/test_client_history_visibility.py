"""History visibility as a user probing for what they should not read (CS "Room History Visibility"):
each setting, the events from before the user's invite, while invited, while joined and after leaving,
through ``/messages``, ``/event`` and ``/context``; and someone who never joined."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from .client_env import ClientEnv, User, report_outcomes, seg, start_env

pytestmark = pytest.mark.asyncio(loop_scope="module")

PHASES = ["before the invite", "while invited", "while joined", "after leaving"]

# setting -> the phases Bob (invited, then joined, then left) may read
VISIBLE_TO_BOB = {
    "world_readable": set(PHASES),
    "shared": {"before the invite", "while invited", "while joined"},
    "invited": {"while invited", "while joined"},
    "joined": {"while joined"},
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> AsyncIterator[ClientEnv]:
    async with start_env(tmp_path_factory.mktemp("history"), __name__) as e:
        yield e
    report_outcomes(request, __name__)


async def _texts(env: ClientEnv, who: User, room_id: str) -> set[str]:
    texts: set[str] = set()
    token: str | None = None
    for _ in range(20):
        params = {"dir": "b", "limit": "3", **({"from": token} if token else {})}
        page = await env.ok(who, "GET", f"/rooms/{seg(room_id)}/messages", **params)
        texts |= {e["content"].get("body") for e in page["chunk"] if e["type"] == "m.room.message"}
        token = page.get("end")
        if not page["chunk"] or token is None:
            break
    return texts


@pytest.mark.parametrize("setting", list(VISIBLE_TO_BOB))
async def test_each_setting_shows_a_member_only_its_share(env: ClientEnv, setting: str) -> None:
    visibility = {"type": "m.room.history_visibility", "content": {"history_visibility": setting}}
    room_id = await env.create_room(env.alice, preset="private_chat", initial_state=[visibility])
    base = f"/rooms/{seg(room_id)}"
    sent = {PHASES[0]: await env.send_text(env.alice, room_id, PHASES[0])}
    await env.ok(env.alice, "POST", base + "/invite", {"user_id": env.bob.user_id})
    sent[PHASES[1]] = await env.send_text(env.alice, room_id, PHASES[1])
    await env.join(env.bob, room_id)
    sent[PHASES[2]] = await env.send_text(env.alice, room_id, PHASES[2])
    await env.ok(env.bob, "POST", base + "/leave", {})
    sent[PHASES[3]] = await env.send_text(env.alice, room_id, PHASES[3])

    category = f"history visibility: {setting}"
    visible = VISIBLE_TO_BOB[setting]
    assert await _texts(env, env.bob, room_id) == visible
    for phase, event_id in sent.items():
        status = 200 if phase in visible else 404
        await env.probe(category, env.bob, "GET", f"{base}/event/{seg(event_id)}", expect=status)
        await env.probe(category, env.bob, "GET", f"{base}/context/{seg(event_id)}", expect=status)
    # Someone who never joined reads a world_readable room and nothing else.
    if setting == "world_readable":
        assert await _texts(env, env.eve, room_id) == set(PHASES)
        await env.probe(category, env.eve, "GET", f"{base}/event/{seg(sent[PHASES[0]])}", expect=200)
        # A preview: the room's state too (CS "Room Previews"), but not the joined members.
        await env.probe(category, env.eve, "GET", f"{base}/state", expect=200)
        await env.probe(category, env.eve, "GET", f"{base}/state/m.room.history_visibility", expect=200)
        await env.probe(category, env.eve, "GET", f"{base}/joined_members", expect=403)
    else:
        await env.probe(category, env.eve, "GET", f"{base}/messages", expect=403)
        await env.probe(category, env.eve, "GET", f"{base}/state", expect=403)
        await env.probe(category, env.eve, "GET", f"{base}/event/{seg(sent[PHASES[0]])}", expect=404)
        await env.probe(category, env.eve, "GET", f"{base}/context/{seg(sent[PHASES[0]])}", expect=403)
    # Reading is not writing, whatever the setting.
    text = {"msgtype": "m.text", "body": "x"}
    for who in (env.bob, env.eve):
        await env.probe(category, who, "PUT", f"{base}/send/m.room.message/hv-{who.name}", text, expect=403)
    # Alice, there all along, sees everything.
    assert await _texts(env, env.alice, room_id) == set(PHASES)


async def test_a_forgotten_room_is_not_readable(env: ClientEnv) -> None:
    room_id = await env.create_room(env.alice, preset="public_chat")
    await env.join(env.carol, room_id)
    event_id = await env.send_text(env.alice, room_id, "while carol was there")
    base = f"/rooms/{seg(room_id)}"
    await env.ok(env.carol, "POST", base + "/leave", {})
    await env.probe("history visibility: forgotten", env.carol, "GET", f"{base}/messages", expect=200)
    await env.ok(env.carol, "POST", base + "/forget", {})
    await env.probe("history visibility: forgotten", env.carol, "GET", f"{base}/messages", expect=403)
    await env.probe(
        "history visibility: forgotten", env.carol, "GET", f"{base}/context/{seg(event_id)}", expect=403
    )
