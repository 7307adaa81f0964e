"""Room upgrades (CS "Room Upgrades", server behaviour) on an in-process Ranvier server with a second
server in the room: the new room's create event and copied state, bans, aliases, the tombstone, the old
room's restricted power levels, local members invited, the errors, and upgrades into and out of v12."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import aiohttp

from ranvier.app import Homeserver
from tests.scenarios.servers import Client, eventually, start_server


async def _state(client: Client, room_id: str) -> dict[tuple[str, str], dict]:  # type: ignore[type-arg]
    events = await client.ok("GET", f"/rooms/{room_id}/state")
    return {(e["type"], e["state_key"]): e for e in events}


async def test_upgrade_copies_state_moves_aliases_and_tombstones(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a = await start_server(tmp_path / "a")
    b = await start_server(tmp_path / "b")
    servers += [a, b]
    alice = await Client.register(session, a, "alice")
    carol = await Client.register(session, a, "carol")
    bob = await Client.register(session, b, "bob")
    old = await alice.create_room(
        preset="private_chat", name="Old", topic="the topic", room_version="10", room_alias_name="club"
    )
    alias = f"#club:{a.server_name}"
    for user in (carol, bob):
        await alice.ok("POST", f"/rooms/{old}/invite", {"user_id": user.user_id})
    await carol.ok("POST", f"/join/{old}", {})
    await bob.ok("POST", f"/join/{old}", {}, server_name=a.server_name)
    await alice.ok("PUT", f"/rooms/{old}/state/m.room.canonical_alias", {"alias": alias})
    spammer = f"@spammer:{b.server_name}"
    await alice.ok("POST", f"/rooms/{old}/ban", {"user_id": spammer, "reason": "spam"})
    await alice.ok("PUT", f"/rooms/{old}/state/org.example.custom", {"not": "copied"})

    tags = {"tags": {"u.work": {}}}
    await carol.ok("PUT", f"/user/{quote(carol.user_id)}/rooms/{old}/account_data/m.tag", tags)

    # Carol (power 0) may not upgrade; unknown versions are refused.
    status, body = await carol.call("POST", f"/rooms/{old}/upgrade", {"new_version": "11"})
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN"), body
    status, body = await alice.call("POST", f"/rooms/{old}/upgrade", {"new_version": "999"})
    assert (status, body["errcode"]) == (400, "M_UNSUPPORTED_ROOM_VERSION"), body
    status, body = await alice.call("POST", f"/rooms/{old}/upgrade", {})
    assert (status, body["errcode"]) == (400, "M_MISSING_PARAM"), body

    new = (await alice.ok("POST", f"/rooms/{old}/upgrade", {"new_version": "11"}))["replacement_room"]
    state = await _state(alice, new)
    create = state[("m.room.create", "")]
    assert create["content"]["room_version"] == "11"
    predecessor = create["content"]["predecessor"]
    old_state = await _state(alice, old)
    tombstone = old_state[("m.room.tombstone", "")]
    assert predecessor == {"room_id": old, "event_id": tombstone["event_id"]}
    assert tombstone["content"]["replacement_room"] == new
    assert state[("m.room.name", "")]["content"] == {"name": "Old"}
    assert state[("m.room.topic", "")]["content"]["topic"] == "the topic"
    assert state[("m.room.join_rules", "")]["content"]["join_rule"] == "invite"
    assert (
        state[("m.room.history_visibility", "")]["content"]
        == old_state[("m.room.history_visibility", "")]["content"]
    )
    assert ("org.example.custom", "") not in state
    ban = state[("m.room.member", spammer)]["content"]
    assert ban == {"membership": "ban", "reason": "spam"}
    # The new room's power levels are the old room's (the lent power given back).
    levels = state[("m.room.power_levels", "")]["content"]
    assert levels["users"] == old_state[("m.room.power_levels", "")]["content"]["users"]
    # Aliases moved, canonical alias too.
    assert (await alice.ok("GET", f"/directory/room/{quote(alias)}"))["room_id"] == new
    assert state[("m.room.canonical_alias", "")]["content"] == {"alias": alias}
    assert "alias" not in old_state[("m.room.canonical_alias", "")]["content"]
    # The old room: ordinary users may no longer speak or invite.
    old_levels = old_state[("m.room.power_levels", "")]["content"]
    assert old_levels["events_default"] == 50 and old_levels["invite"] == 50
    status, body = await carol.call(
        "PUT", f"/rooms/{old}/send/m.room.message/t1", {"msgtype": "m.text", "body": "hello?"}
    )
    assert status == 403, body
    # Local members are invited to the (invite-only) new room; bob's server sees the tombstone.
    assert state[("m.room.member", carol.user_id)]["content"]["membership"] == "invite"
    await carol.ok("POST", f"/join/{new}", {})
    # Carol's tags followed her.
    assert await carol.ok("GET", f"/user/{quote(carol.user_id)}/rooms/{new}/account_data/m.tag") == tags

    async def bob_sees_tombstone() -> bool:
        status, event = await bob.call("GET", f"/rooms/{old}/state/m.room.tombstone")
        return status == 200 and event.get("replacement_room") == new

    await eventually(bob_sees_tombstone)
    # The old room is not a member's any more to upgrade: carol was never allowed, and bob is remote.
    status, body = await bob.call("POST", f"/rooms/{old}/upgrade", {"new_version": "11"})
    assert status == 403, body


async def test_upgrade_into_and_out_of_v12_and_spaces(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a = await start_server(tmp_path / "a")
    servers.append(a)
    alice = await Client.register(session, a, "alice")
    space = await alice.create_room(name="Space", creation_content={"type": "m.space"}, room_version="10")
    child = await alice.create_room(name="Child")
    await alice.ok("PUT", f"/rooms/{space}/state/m.space.child/{child}", {"via": [a.server_name]})
    await alice.ok("PUT", f"/rooms/{space}/state/m.space.child/!removed:x", {})

    # Into v12: the room id is the create event's hash, so the predecessor names the room only.
    v12 = (await alice.ok("POST", f"/rooms/{space}/upgrade", {"new_version": "12"}))["replacement_room"]
    state = await _state(alice, v12)
    create = state[("m.room.create", "")]
    assert create["content"]["predecessor"] == {"room_id": space}
    assert create["content"]["type"] == "m.space"
    assert ("m.space.child", child) in state and ("m.space.child", "!removed:x") not in state
    # v12 creators have unlimited power and are not listed in the power levels.
    assert alice.user_id not in state[("m.room.power_levels", "")]["content"].get("users", {})
    old_state = await _state(alice, space)
    assert old_state[("m.room.tombstone", "")]["content"]["replacement_room"] == v12

    # Out of v12 again: the creator keeps her power (100) in a version without unlimited creators.
    back = (await alice.ok("POST", f"/rooms/{v12}/upgrade", {"new_version": "11"}))["replacement_room"]
    state = await _state(alice, back)
    assert state[("m.room.power_levels", "")]["content"]["users"][alice.user_id] == 100
    await alice.ok("PUT", f"/rooms/{back}/state/m.room.topic", {"topic": "still in charge"})
