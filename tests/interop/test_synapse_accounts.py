"""Account lifecycle against a real Synapse (issue 16): profiles carried by joins and invites both ways, and a
Ranvier user's deactivation leaving a Synapse-hosted room and rejecting a Synapse invite."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from ranvier.app import Homeserver
from tests.scenarios.servers import Client, eventually

from .peers import SynapseClient
from .synapse import SynapseServer

pytestmark = pytest.mark.interop

FED_TIMEOUT = 30.0  # two processes on a shared machine: generous, never a timing assertion


async def member(client: Client, room_id: str, user_id: str) -> dict[str, Any]:
    status, content = await client.call("GET", f"/rooms/{room_id}/state/m.room.member/{user_id}")
    return content if status == 200 else {}


async def test_profiles_and_deactivation_with_synapse(
    synapse: SynapseServer, ranvier: Homeserver, session: aiohttp.ClientSession
) -> None:
    erin = await SynapseClient.register_on(session, synapse, "accounts_erin")
    await erin.ok("PUT", f"/profile/{erin.user_id}/displayname", {"displayname": "Erin on Synapse"})
    frank = await Client.register(session, ranvier, "frank")
    await frank.ok("PUT", f"/profile/{frank.user_id}/displayname", {"displayname": "Frank on Ranvier"})

    # Our invite of a Synapse user carries the profile Synapse tells us.
    ours = await frank.create_room()
    await frank.ok("POST", f"/rooms/{ours}/invite", {"user_id": erin.user_id})
    assert (await member(frank, ours, erin.user_id)).get("displayname") == "Erin on Synapse"

    # Frank joins a Synapse room: Synapse stores the join with his profile.
    theirs = await erin.create_room(preset="public_chat")
    await frank.ok("POST", f"/join/{theirs}", {}, server_name=synapse.server_name)

    async def frank_joined() -> bool:
        return (await member(erin, theirs, frank.user_id)).get("membership") == "join"

    await eventually(frank_joined, timeout=FED_TIMEOUT)
    assert (await member(erin, theirs, frank.user_id)).get("displayname") == "Frank on Ranvier"

    # A pending invite from Synapse, then deactivation: the join becomes a leave and the invite is rejected.
    pending = await erin.create_room(preset="private_chat")
    await erin.ok("POST", f"/rooms/{pending}/invite", {"user_id": frank.user_id})

    async def invited_here() -> bool:
        membership = await ranvier.storage.state.get_membership(pending, frank.user_id)
        return membership is not None and membership[0] == "invite"

    await eventually(invited_here, timeout=FED_TIMEOUT)
    status, challenge = await frank.call("POST", "/account/deactivate", {})
    assert status == 401
    auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": frank.user_id},
        "password": "pw-" + "frank" * 3,
        "session": challenge["session"],
    }
    await frank.ok("POST", "/account/deactivate", {"auth": auth})

    async def left_everywhere() -> bool:
        for room in (theirs, pending):
            if (await member(erin, room, frank.user_id)).get("membership") != "leave":
                return False
        return True

    await eventually(left_everywhere, timeout=FED_TIMEOUT)
