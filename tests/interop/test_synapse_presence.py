"""Presence between Ranvier and a real Synapse (1.163.2, presence on by default), both ways (S2S
"Presence"): a Ranvier user's state and status reach a Synapse user in a shared room through m.presence
EDUs, and a Synapse user's reach Ranvier's GET /presence and /sync, also a state set before the join."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from ranvier.app import Homeserver
from tests.scenarios.servers import Client, eventually

from .peers import SynapseClient
from .synapse import SynapseServer

pytestmark = pytest.mark.interop

FED_TIMEOUT = 30.0


async def _state(client: Client, user_id: str) -> dict[str, Any]:
    status, answer = await client.call("GET", f"/presence/{user_id}/status")
    return dict(answer) if status == 200 else {}


async def test_presence_both_ways_with_synapse(
    synapse: SynapseServer, ranvier: Homeserver, session: aiohttp.ClientSession
) -> None:
    alice = await Client.register(session, ranvier, "alice")
    bob = await SynapseClient.register_on(session, synapse, "presence_bob")
    room_id = await alice.create_room(preset="public_chat", name="Presence")
    await bob.ok("POST", f"/join/{room_id}", {}, server_name=ranvier.server_name)

    async def alice_sees_bob_joined() -> bool:
        members = await alice.ok("GET", f"/rooms/{room_id}/joined_members")
        return bob.user_id in members["joined"]

    await eventually(alice_sees_bob_joined, timeout=FED_TIMEOUT)

    # Ranvier to Synapse.
    await alice.ok("PUT", f"/presence/{alice.user_id}/status", {"presence": "online", "status_msg": "on R"})

    async def bob_sees_alice() -> bool:
        seen = await _state(bob, alice.user_id)
        return seen.get("presence") == "online" and seen.get("status_msg") == "on R"

    await eventually(bob_sees_alice, timeout=FED_TIMEOUT)
    await alice.ok("PUT", f"/presence/{alice.user_id}/status", {"presence": "unavailable"})

    async def bob_sees_alice_away() -> bool:
        return (await _state(bob, alice.user_id)).get("presence") == "unavailable"

    await eventually(bob_sees_alice_away, timeout=FED_TIMEOUT)

    # Synapse to Ranvier: GET and Alice's /sync.
    await alice.sync()
    await bob.ok("PUT", f"/presence/{bob.user_id}/status", {"presence": "unavailable", "status_msg": "on S"})

    async def alice_sees_bob() -> bool:
        seen = await _state(alice, bob.user_id)
        return seen.get("presence") == "unavailable" and seen.get("status_msg") == "on S"

    await eventually(alice_sees_bob, timeout=FED_TIMEOUT)
    body = await alice.sync()
    synced = [e["content"] for e in body["presence"]["events"] if e["sender"] == bob.user_id]
    assert synced and synced[-1]["presence"] == "unavailable" and synced[-1]["status_msg"] == "on S"
    # Synapse leaves last_active_ago out of the EDU for a user never active (it only counts "online"
    # as activity), though S2S "Presence" marks it required; so do we then, rather than invent one.
    assert "currently_active" not in synced[-1]

    # On joining: a Synapse user online before sharing a room with anyone here (Synapse sends the states
    # of its users in a room to a server that joins it, and to the room's servers when one of them
    # joins); and Ranvier does the same for Alice (tests/scenarios/test_presence_federation.py covers
    # that direction between Ranvier servers).
    carol = await SynapseClient.register_on(session, synapse, "presence_carol")
    await carol.ok("PUT", f"/presence/{carol.user_id}/status", {"presence": "online", "status_msg": "early"})
    await carol.ok("POST", f"/join/{room_id}", {}, server_name=ranvier.server_name)

    async def alice_sees_carol() -> bool:
        seen = await _state(alice, carol.user_id)
        return seen.get("presence") == "online" and seen.get("status_msg") == "early"

    await eventually(alice_sees_carol, timeout=FED_TIMEOUT)
