"""Joins between Ranvier and a real Synapse, both ways, and messages from each side seen in both servers'
client ``/sync`` (issue 6's interop test)."""

from __future__ import annotations

import aiohttp
import pytest

from ranvier.app import Homeserver
from tests.scenarios.servers import Client, eventually

from .peers import SynapseClient, SyncReader
from .synapse import SynapseServer

pytestmark = pytest.mark.interop

# Federation between two processes on a shared 2-core machine: generous, never a timing assertion.
FED_TIMEOUT = 30.0


# 12: both servers' default; 10: 1.155's default and the last with domain room ids and create-event
# auth_events; 1: the oldest format (event ids with a domain, state resolution v1, `origin` on events).
ROOM_VERSIONS = ["12", "10", "1"]


@pytest.mark.parametrize("room_version", ROOM_VERSIONS)
async def test_synapse_user_joins_a_ranvier_room(
    synapse: SynapseServer, ranvier: Homeserver, session: aiohttp.ClientSession, room_version: str
) -> None:
    alice = await Client.register(session, ranvier, "alice")
    bob = await SynapseClient.register_on(session, synapse, f"joins_bob_v{room_version}")
    room_id = await alice.create_room(name="Ranvier hosted", room_version=room_version)
    await alice.send_text(room_id, "before bob")

    await bob.ok("POST", f"/join/{room_id}", {}, server_name=ranvier.server_name)
    alice_sync, bob_sync = SyncReader(alice), SyncReader(bob)
    # A plain (non-lazy-loading) sync: it only shows the room once Synapse considers the state complete,
    # which our full-state send_join answer (members_omitted: false) should make immediate.
    await eventually(lambda: bob_sync.is_joined(room_id), timeout=FED_TIMEOUT)
    await bob.send_text(room_id, "hello from synapse")
    await alice.send_text(room_id, "hello from ranvier")
    for reader in (alice_sync, bob_sync):
        for text in ("hello from synapse", "hello from ranvier"):
            await eventually(lambda r=reader, t=text: r.has_text(room_id, t), timeout=FED_TIMEOUT)
    members = await alice.ok("GET", f"/rooms/{room_id}/joined_members")
    assert set(members["joined"]) == {alice.user_id, bob.user_id}
    name = await bob.ok("GET", f"/rooms/{room_id}/state/m.room.name")
    assert name["name"] == "Ranvier hosted"
    # History from before the join: Synapse backfills it from us (/backfill, and /state_ids or
    # /event_auth if it needs them) when its user paginates back.
    await eventually(lambda: _has(bob, room_id, "before bob"), timeout=FED_TIMEOUT)


@pytest.mark.parametrize("room_version", ROOM_VERSIONS)
async def test_ranvier_user_joins_a_synapse_room(
    synapse: SynapseServer, ranvier: Homeserver, session: aiohttp.ClientSession, room_version: str
) -> None:
    carol = await SynapseClient.register_on(session, synapse, f"joins_carol_v{room_version}")
    dave = await Client.register(session, ranvier, "dave")
    room_id = await carol.create_room(name="Synapse hosted", room_version=room_version)
    await carol.send_text(room_id, "before dave")

    await dave.ok("POST", f"/join/{room_id}", {}, server_name=synapse.server_name)
    carol_sync, dave_sync = SyncReader(carol), SyncReader(dave)
    await eventually(lambda: dave_sync.is_joined(room_id), timeout=FED_TIMEOUT)
    await dave.send_text(room_id, "hello from ranvier")
    await carol.send_text(room_id, "hello from synapse")
    for reader in (carol_sync, dave_sync):
        for text in ("hello from synapse", "hello from ranvier"):
            await eventually(lambda r=reader, t=text: r.has_text(room_id, t), timeout=FED_TIMEOUT)
    members = await carol.ok("GET", f"/rooms/{room_id}/joined_members")
    assert set(members["joined"]) == {carol.user_id, dave.user_id}
    name = await dave.ok("GET", f"/rooms/{room_id}/state/m.room.name")
    assert name["name"] == "Synapse hosted"


async def _has(client: Client, room_id: str, text: str) -> bool:
    return text in await client.texts(room_id)
