"""Every power-gated client action, tried by members without the power (CS "Permissions" and
"m.room.power_levels"; S2S authorization rules), and by members with it as the control. After each refusal
nothing changed and the room still works for all of its members.

Redactions in particular (issue 12, defect 1): a member at power 0 redacting another user's message, the
room name or the m.room.server_acl (whose redacted content {} denies every server) is refused with 403, in
every room version; one's own events stay redactable; a moderator at the redact level may redact others.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from .client_env import ClientEnv, register, report_outcomes, seg, start_env, state_path

pytestmark = pytest.mark.asyncio(loop_scope="module")

ACL = {"allow": ["*"], "deny": ["evil.example"], "allow_ip_literals": True}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> AsyncIterator[ClientEnv]:
    async with start_env(tmp_path_factory.mktemp("power"), __name__) as e:
        yield e
    report_outcomes(request, __name__)


async def _room(env: ClientEnv, room_version: str | None = None) -> str:
    """Alice's public room, named, with an ACL; Bob and Carol joined at power 0."""
    body: dict[str, Any] = {"preset": "public_chat", "name": "Lobby"}
    if room_version is not None:
        body["room_version"] = room_version
    room_id = await env.create_room(env.alice, **body)
    await env.put_state(env.alice, room_id, "m.room.server_acl", ACL)
    await env.join(env.bob, room_id)
    await env.join(env.carol, room_id)
    return room_id


def _redact(room_id: str, event_id: str, txn: str) -> str:
    return f"/rooms/{seg(room_id)}/redact/{seg(event_id)}/{txn}"


async def _state_id(env: ClientEnv, room_id: str, event_type: str, key: str = "") -> str:
    return str(
        (await env.ok(env.alice, "GET", state_path(room_id, event_type, key), format="event"))["event_id"]
    )


@pytest.mark.parametrize("room_version", ["1", "2", "3", "6", "10", "11", "12"])
async def test_a_plain_member_cannot_redact_other_users_events(env: ClientEnv, room_version: str) -> None:
    room_id = await _room(env, room_version)
    by_alice = await env.send_text(env.alice, room_id, "alice's words")
    by_carol = await env.send_text(env.carol, room_id, "carol's words")  # same server as Bob
    targets = {
        "another user's message": by_alice,
        "another user of the same server's message": by_carol,
        "the room name": await _state_id(env, room_id, "m.room.name"),
        "the server ACL": await _state_id(env, room_id, "m.room.server_acl"),
        "the power levels": await _state_id(env, room_id, "m.room.power_levels"),
        "the join rules": await _state_id(env, room_id, "m.room.join_rules"),
        "the creator's membership": await _state_id(env, room_id, "m.room.member", env.alice.user_id),
        "an unknown event": "$" + "A" * 43,
    }
    for i, (what, event_id) in enumerate(targets.items()):
        reply = await env.probe(
            "power: redaction by power 0",
            env.bob,
            "PUT",
            _redact(room_id, event_id, f"r{room_version}-{i}"),
            {"reason": what},
            expect=403,
            errcode="M_FORBIDDEN",
        )
        assert "redact" in reply.body["error"], what
    # Nor through /send: since v11 "redacts" is in the content, before it a redaction sent there has none.
    await env.probe(
        "power: redaction by power 0",
        env.bob,
        "PUT",
        f"/rooms/{seg(room_id)}/send/m.room.redaction/s{room_version}",
        {"redacts": by_alice},
        expect=403,
        errcode="M_FORBIDDEN",
    )
    # Nothing was redacted: Alice still reads everything whole.
    assert (await env.get_event(env.alice, room_id, by_alice))["content"]["body"] == "alice's words"
    assert (await env.get_event(env.bob, room_id, by_carol))["content"]["body"] == "carol's words"
    assert await env.state(env.alice, room_id, "m.room.name") == {"name": "Lobby"}
    assert await env.state(env.alice, room_id, "m.room.server_acl") == ACL
    # The control: Bob's own message is his to redact, and it is redacted for everyone.
    own = await env.send_text(env.bob, room_id, "bob's words")
    await env.probe(
        "power: redaction by power 0",
        env.bob,
        "PUT",
        _redact(room_id, own, f"own{room_version}"),
        {},
        expect=200,
    )
    assert (await env.get_event(env.alice, room_id, own))["content"] == {}
    await env.assert_room_works(room_id, env.alice, env.bob, env.carol)


@pytest.mark.parametrize("room_version", ["1", "3", "11", "12"])
async def test_a_member_at_the_redact_level_may_redact_other_users_events(
    env: ClientEnv, room_version: str
) -> None:
    room_id = await _room(env, room_version)
    await env.set_power(room_id, env.carol, 50)  # the default redact level
    by_alice = await env.send_text(env.alice, room_id, "alice's words")
    by_bob = await env.send_text(env.bob, room_id, "bob's words")
    for i, event_id in enumerate([by_alice, by_bob]):
        await env.probe(
            "power: redaction at the redact level",
            env.carol,
            "PUT",
            _redact(room_id, event_id, f"m{room_version}-{i}"),
            {},
            expect=200,
        )
        assert (await env.get_event(env.bob, room_id, event_id))["content"] == {}
    await env.assert_room_works(room_id, env.alice, env.bob, env.carol)


async def test_the_server_acl_and_the_create_event_are_not_redacted_even_by_the_creator(
    env: ClientEnv,
) -> None:
    # As Synapse: a redacted ACL has no "allow" list and denies every server, the room's own included; a
    # redacted create event loses the room's settings. A new ACL is the way to change one.
    room_id = await _room(env)
    for i, event_type in enumerate(["m.room.server_acl", "m.room.create"]):
        await env.probe(
            "power: redaction at the redact level",
            env.alice,
            "PUT",
            _redact(room_id, await _state_id(env, room_id, event_type), f"c{i}"),
            {},
            expect=403,
            errcode="M_FORBIDDEN",
        )
    assert await env.state(env.alice, room_id, "m.room.server_acl") == ACL
    await env.assert_room_works(room_id, env.alice, env.bob)


# Each state type with content the room's creator could send; all need more than power 0.
STATE_CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("m.room.server_acl", "", {"allow": ["*"], "deny": ["*"]}),
    ("m.room.power_levels", "", {"users": {}}),  # replaced below by one raising Bob to 100
    ("m.room.name", "", {"name": "Bob's room now"}),
    ("m.room.topic", "", {"topic": "hijacked"}),
    ("m.room.avatar", "", {"url": "mxc://evil.example/x"}),
    ("m.room.canonical_alias", "", {}),
    ("m.room.tombstone", "", {"body": "gone", "replacement_room": "!elsewhere:evil.example"}),
    ("m.room.history_visibility", "", {"history_visibility": "world_readable"}),
    ("m.room.join_rules", "", {"join_rule": "invite"}),
    ("m.room.guest_access", "", {"guest_access": "can_join"}),
    ("m.room.encryption", "", {"algorithm": "m.megolm.v1.aes-sha2"}),
    ("m.room.pinned_events", "", {"pinned": []}),
    ("m.space.child", "!child:evil.example", {"via": ["evil.example"]}),
    ("org.example.custom", "", {"anything": True}),
    ("org.example.custom", "with a key", {"anything": True}),
]


@pytest.mark.parametrize("room_version", ["6", "12"])
async def test_state_changes_need_their_level(env: ClientEnv, room_version: str) -> None:
    room_id = await _room(env, room_version)
    before = await env.ok(env.alice, "GET", f"/rooms/{seg(room_id)}/state")
    for event_type, key, content in STATE_CASES:
        if event_type == "m.room.power_levels":
            content = await env.state(env.alice, room_id, event_type)
            content.setdefault("users", {})[env.bob.user_id] = 100
        await env.probe(
            "power: state events by power 0",
            env.bob,
            "PUT",
            state_path(room_id, event_type, key),
            content,
            expect=403,
            errcode="M_FORBIDDEN",
        )
    after = await env.ok(env.alice, "GET", f"/rooms/{seg(room_id)}/state")
    assert sorted(e["event_id"] for e in after) == sorted(e["event_id"] for e in before)

    # A moderator (50, the state default) may set what is at 50 and nothing above it.
    await env.set_power(room_id, env.carol, 50)
    expected = {
        "m.room.name": 200,
        "m.room.topic": 200,
        "m.room.avatar": 200,
        "m.room.join_rules": 200,
        "m.room.guest_access": 200,
        "org.example.custom": 200,
        "m.space.child": 200,
        "m.room.pinned_events": 200,
        "m.room.canonical_alias": 200,
        "m.room.power_levels": 403,
        "m.room.server_acl": 403,
        "m.room.tombstone": 403,
        "m.room.history_visibility": 403,
        "m.room.encryption": 403,
    }
    for event_type, key, content in STATE_CASES:
        if event_type == "m.room.power_levels":
            content = await env.state(env.alice, room_id, event_type)
            content["users"][env.carol.user_id] = 100
        if event_type == "m.room.join_rules":
            content = {"join_rule": "public"}  # as it was: Bob and Carol stay members either way
        await env.probe(
            "power: state events at the state level",
            env.carol,
            "PUT",
            state_path(room_id, event_type, key),
            content,
            expect=expected[event_type],
        )
    assert await env.state(env.alice, room_id, "m.room.server_acl") == ACL
    await env.assert_room_works(room_id, env.alice, env.bob, env.carol)


async def test_membership_actions_need_their_level(env: ClientEnv) -> None:
    room_id = await _room(env)
    dave = await register(env.http, env.base, f"dave{id(room_id) % 10_000}")
    base = f"/rooms/{seg(room_id)}"
    category = "power: kick, ban, unban, invite"
    # Bob at 0 below kick (50) and ban (50).
    await env.probe(category, env.bob, "POST", base + "/kick", {"user_id": env.carol.user_id}, expect=403)
    await env.probe(category, env.bob, "POST", base + "/ban", {"user_id": env.carol.user_id}, expect=403)
    await env.probe(category, env.bob, "POST", base + "/ban", {"user_id": dave.user_id}, expect=403)
    await env.ok(env.alice, "POST", base + "/ban", {"user_id": env.eve.user_id})
    await env.probe(category, env.bob, "POST", base + "/unban", {"user_id": env.eve.user_id}, expect=403)
    # Kicking by changing the membership state directly is refused too.
    path = f"{base}/state/m.room.member/{seg(env.carol.user_id)}"
    await env.probe(category, env.bob, "PUT", path, {"membership": "leave"}, expect=403)
    await env.probe(category, env.bob, "PUT", path, {"membership": "ban"}, expect=403)
    # Invites: level 0 by default, then raised to 50.
    levels = await env.state(env.alice, room_id, "m.room.power_levels")
    await env.put_state(env.alice, room_id, "m.room.power_levels", {**levels, "invite": 50})
    await env.probe(category, env.bob, "POST", base + "/invite", {"user_id": dave.user_id}, expect=403)
    # Carol at 50 may kick and invite, but not act on Alice (100).
    await env.set_power(room_id, env.carol, 50)
    await env.probe(category, env.carol, "POST", base + "/invite", {"user_id": dave.user_id}, expect=200)
    await env.probe(category, env.carol, "POST", base + "/kick", {"user_id": env.alice.user_id}, expect=403)
    await env.probe(category, env.carol, "POST", base + "/ban", {"user_id": env.alice.user_id}, expect=403)
    await env.probe(category, env.carol, "POST", base + "/kick", {"user_id": env.bob.user_id}, expect=200)
    await env.join(env.bob, room_id)
    assert (await env.state(env.alice, room_id, "m.room.member", env.carol.user_id))["membership"] == "join"
    await env.assert_room_works(room_id, env.alice, env.bob, env.carol)


async def test_messages_and_own_redactions_need_their_level(env: ClientEnv) -> None:
    room_id = await _room(env)
    own = await env.send_text(env.bob, room_id, "before the change")
    levels = await env.state(env.alice, room_id, "m.room.power_levels")
    levels["events_default"] = 10
    levels["events"]["m.room.redaction"] = 10
    await env.put_state(env.alice, room_id, "m.room.power_levels", levels)
    category = "power: messages and own redactions"
    base = f"/rooms/{seg(room_id)}"
    text = {"msgtype": "m.text", "body": "muted"}
    await env.probe(category, env.bob, "PUT", base + "/send/m.room.message/muted", text, expect=403)
    reaction = {"m.relates_to": {"rel_type": "m.annotation", "event_id": own, "key": "x"}}
    await env.probe(category, env.bob, "PUT", base + "/send/m.reaction/r1", reaction, expect=403)
    await env.probe(category, env.bob, "PUT", _redact(room_id, own, "own"), {}, expect=403)
    assert (await env.get_event(env.alice, room_id, own))["content"]["body"] == "before the change"
    await env.set_power(room_id, env.bob, 10)
    await env.probe(category, env.bob, "PUT", base + "/send/m.room.message/unmuted", text, expect=200)
    await env.probe(category, env.bob, "PUT", _redact(room_id, own, "own2"), {}, expect=200)
    await env.assert_room_works(room_id, env.alice, env.bob)
