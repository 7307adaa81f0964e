"""Knocking, space hierarchies, room summaries and upgrades between Ranvier and a real Synapse (issue 16).

Knocks: a Ranvier user knocks on a Synapse room (our make_knock/send_knock as the knocking server, the
``knock_room_state`` Synapse answers, /sync's ``rooms.knock``), is invited and joins; a Synapse user knocks
on a Ranvier room (our make_knock/send_knock as the resident). Hierarchies: each server's client walks a
space whose child room only the other server is in, so each asks the other's S2S ``/hierarchy``.
Upgrades: a Synapse member of a Ranvier room sees the tombstone and joins the v12 replacement.
"""

from __future__ import annotations

import aiohttp
import pytest

from ranvier.app import Homeserver
from tests.scenarios.servers import Client, eventually

from .peers import SynapseClient, SyncReader
from .synapse import SynapseServer

pytestmark = pytest.mark.interop

FED_TIMEOUT = 30.0
KNOCK_RULES = {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}


async def test_ranvier_user_knocks_on_a_synapse_room_then_joins(
    synapse: SynapseServer, ranvier: Homeserver, session: aiohttp.ClientSession
) -> None:
    carol = await SynapseClient.register_on(session, synapse, "knock_carol")
    dave = await Client.register(session, ranvier, "dave")
    room_id = await carol.create_room(preset="private_chat", name="Knock here", initial_state=[KNOCK_RULES])

    assert await dave.ok("POST", f"/knock/{room_id}", {"reason": "hi"}, via=synapse.server_name) == {
        "room_id": room_id
    }
    sync = await dave.sync()
    shown = {e["type"]: e for e in sync["rooms"]["knock"][room_id]["knock_state"]["events"]}
    assert shown["m.room.name"]["content"]["name"] == "Knock here"
    assert shown["m.room.join_rules"]["content"]["join_rule"] == "knock"
    assert shown["m.room.member"]["content"]["membership"] == "knock"

    async def synapse_sees_the_knock() -> bool:
        status, member = await carol.call("GET", f"/rooms/{room_id}/state/m.room.member/{dave.user_id}")
        return status == 200 and member.get("membership") == "knock" and member.get("reason") == "hi"

    await eventually(synapse_sees_the_knock, timeout=FED_TIMEOUT)
    await carol.ok("POST", f"/rooms/{room_id}/invite", {"user_id": dave.user_id})
    dave_sync = SyncReader(dave)
    await eventually(lambda: dave_sync.is_invited(room_id), timeout=FED_TIMEOUT)
    await dave.ok("POST", f"/join/{room_id}", {})
    await eventually(lambda: dave_sync.is_joined(room_id), timeout=FED_TIMEOUT)
    members = await carol.ok("GET", f"/rooms/{room_id}/joined_members")
    assert set(members["joined"]) == {carol.user_id, dave.user_id}


async def test_synapse_user_knocks_on_a_ranvier_room(
    synapse: SynapseServer, ranvier: Homeserver, session: aiohttp.ClientSession
) -> None:
    alice = await Client.register(session, ranvier, "alice")
    bob = await SynapseClient.register_on(session, synapse, "knock_bob")
    room_id = await alice.create_room(preset="private_chat", name="Ranvier door", initial_state=[KNOCK_RULES])

    answer = await bob.ok("POST", f"/knock/{room_id}", {"reason": "me too"}, via=ranvier.server_name)
    assert answer == {"room_id": room_id}
    member = await alice.ok("GET", f"/rooms/{room_id}/state/m.room.member/{bob.user_id}")
    assert member["membership"] == "knock" and member["reason"] == "me too"

    async def synapse_shows_the_knock() -> bool:
        sync = await bob.ok("GET", "/sync", timeout="0")
        knocked = sync.get("rooms", {}).get("knock", {}).get(room_id)
        if knocked is None:
            return False
        names = [e for e in knocked["knock_state"]["events"] if e["type"] == "m.room.name"]
        return bool(names) and names[0]["content"]["name"] == "Ranvier door"

    await eventually(synapse_shows_the_knock, timeout=FED_TIMEOUT)
    await alice.ok("POST", f"/rooms/{room_id}/invite", {"user_id": bob.user_id})
    bob_sync = SyncReader(bob)
    await eventually(lambda: bob_sync.is_invited(room_id), timeout=FED_TIMEOUT)


async def _hierarchy(client: Client, space: str) -> dict:  # type: ignore[type-arg]
    base = client.base.replace("/v3", "/v1")
    async with client.session.get(
        f"{base}/rooms/{space}/hierarchy", headers={"Authorization": f"Bearer {client.token}"}
    ) as resp:
        body = await resp.json()
        assert resp.status == 200, body
        return dict(body)


async def test_space_hierarchies_across_ranvier_and_synapse(
    synapse: SynapseServer, ranvier: Homeserver, session: aiohttp.ClientSession
) -> None:
    alice = await Client.register(session, ranvier, "spacer")
    carol = await SynapseClient.register_on(session, synapse, "spaces_carol")
    synapse_room = await carol.create_room(name="On Synapse", topic="hosted there")
    ranvier_room = await alice.create_room(name="On Ranvier", topic="hosted here")

    # A Ranvier space with a Synapse-only child: we ask Synapse's /hierarchy.
    space = await alice.create_room(name="Ranvier space", creation_content={"type": "m.space"})
    await alice.ok(
        "PUT", f"/rooms/{space}/state/m.space.child/{synapse_room}", {"via": [synapse.server_name]}
    )
    rooms = {r["room_id"]: r for r in (await _hierarchy(alice, space))["rooms"]}
    assert list(rooms) == [space, synapse_room]
    assert rooms[synapse_room]["name"] == "On Synapse" and rooms[synapse_room]["topic"] == "hosted there"
    assert rooms[synapse_room]["num_joined_members"] == 1

    # A Synapse space with a Ranvier-only child: Synapse asks ours.
    synapse_space = await carol.create_room(name="Synapse space", creation_content={"type": "m.space"})
    await carol.ok(
        "PUT", f"/rooms/{synapse_space}/state/m.space.child/{ranvier_room}", {"via": [ranvier.server_name]}
    )
    rooms = {r["room_id"]: r for r in (await _hierarchy(carol, synapse_space))["rooms"]}
    assert list(rooms) == [synapse_space, ranvier_room]
    assert rooms[ranvier_room]["name"] == "On Ranvier" and rooms[ranvier_room]["topic"] == "hosted here"
    assert rooms[ranvier_room]["join_rule"] == "public"

    # Room summaries (MSC3266) of the other server's room: ours asks Synapse's /hierarchy, and back.
    base = alice.base.replace("/v3", "/v1")
    async with session.get(
        f"{base}/room_summary/{synapse_room}",
        params={"via": synapse.server_name},
        headers={"Authorization": f"Bearer {alice.token}"},
    ) as resp:
        summary = await resp.json()
        assert resp.status == 200, summary
    assert summary["name"] == "On Synapse" and summary["membership"] == "leave"


async def test_synapse_member_follows_an_upgrade_of_a_ranvier_room(
    synapse: SynapseServer, ranvier: Homeserver, session: aiohttp.ClientSession
) -> None:
    alice = await Client.register(session, ranvier, "upgrader")
    bob = await SynapseClient.register_on(session, synapse, "upgrade_bob")
    old = await alice.create_room(name="Old room", room_version="10")
    await bob.ok("POST", f"/join/{old}", {}, server_name=ranvier.server_name)
    bob_sync = SyncReader(bob)
    await eventually(lambda: bob_sync.is_joined(old), timeout=FED_TIMEOUT)

    new = (await alice.ok("POST", f"/rooms/{old}/upgrade", {"new_version": "12"}))["replacement_room"]

    async def synapse_sees_the_tombstone() -> bool:
        status, tombstone = await bob.call("GET", f"/rooms/{old}/state/m.room.tombstone")
        return status == 200 and tombstone.get("replacement_room") == new

    await eventually(synapse_sees_the_tombstone, timeout=FED_TIMEOUT)
    await bob.ok("POST", f"/join/{new}", {}, server_name=ranvier.server_name)
    await eventually(lambda: bob_sync.is_joined(new), timeout=FED_TIMEOUT)
    create = await bob.ok("GET", f"/rooms/{new}/state/m.room.create")
    assert create["predecessor"] == {"room_id": old} and create["room_version"] == "12"
    assert (await bob.ok("GET", f"/rooms/{new}/state/m.room.name"))["name"] == "Old room"
