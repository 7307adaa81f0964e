"""A real Synapse joins a Ranvier room with partial state (it asks send_join with omit_members=true, and
Ranvier now answers with members omitted): the Synapse user talks at once, and Synapse's resync of the full
state from Ranvier (/state_ids, /state, /event) ends with every member known."""

from __future__ import annotations

import logging

import aiohttp
import pytest

from ranvier.app import Homeserver
from tests.scenarios.servers import Client, eventually
from tests.workers.target import workers_target

from .peers import SynapseClient, SyncReader
from .synapse import SynapseServer

pytestmark = pytest.mark.interop

FED_TIMEOUT = 60.0
LOCAL_MEMBERS = 8


async def test_synapse_joins_a_ranvier_room_with_partial_state(
    synapse: SynapseServer,
    ranvier: Homeserver,
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ranvier.access.federation")
    alice = await Client.register(session, ranvier, "alice")
    room_id = await alice.create_room(preset="public_chat")  # nameless: the heroes go in the answer
    locals_ = [alice.user_id]
    for i in range(LOCAL_MEMBERS - 1):
        member = await Client.register(session, ranvier, f"pmember{i}")
        await member.ok("POST", f"/join/{room_id}", {})
        locals_.append(member.user_id)
    await alice.send_text(room_id, "before the partial join")

    bob = await SynapseClient.register_on(session, synapse, "partial_bob")
    await bob.ok("POST", f"/join/{room_id}", {}, server_name=ranvier.server_name)
    lines = [r.getMessage() for r in caplog.records if r.name == "ranvier.access.federation"]
    if workers_target():  # the processes' own logs
        lines = ranvier.log_lines("ranvier.access.federation")  # type: ignore[attr-defined]
    assert any("/v2/send_join/" in line and "omit_members=true" in line for line in lines), lines

    # Bob talks at once; Alice hears him, and he hears her.
    await bob.send_text(room_id, "hello from a partial-state room")  # right away, resync or not
    alice_sync, bob_sync = SyncReader(alice), SyncReader(bob, lazy_load_members=True)
    await eventually(
        lambda: alice_sync.has_text(room_id, "hello from a partial-state room"), timeout=FED_TIMEOUT
    )
    await alice.send_text(room_id, "hello back")
    await eventually(lambda: bob_sync.has_text(room_id, "hello back"), timeout=FED_TIMEOUT)

    # Synapse's resync from Ranvier completes: its member list ends up whole.
    async def members_complete() -> bool:
        status, body = await bob.call("GET", f"/rooms/{room_id}/joined_members")
        return status == 200 and set(body.get("joined", {})) == {*locals_, bob.user_id}

    await eventually(members_complete, timeout=FED_TIMEOUT)
    later = [r.getMessage() for r in caplog.records]
    if workers_target():
        later = ranvier.log_lines("ranvier.access.federation")  # type: ignore[attr-defined]
    resync = [line for line in lines + later if "/state_ids/" in line]
    assert resync, "Synapse never asked for the full state"
