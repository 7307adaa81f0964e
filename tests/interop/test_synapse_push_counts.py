"""Notification counts on Ranvier for events a real Synapse user sends (issue 17): a direct chat started
from Synapse, a plain message (one-to-one rule), a mention (m.mentions) and a keyword of the Ranvier user's
own content rule, each counted in the Ranvier user's /sync, and cleared by a read receipt."""

from __future__ import annotations

import aiohttp
import pytest

from ranvier.app import Homeserver
from tests.push.test_counts import n, send, unread
from tests.scenarios.servers import Client, eventually

from .peers import SynapseClient
from .synapse import SynapseServer

pytestmark = pytest.mark.interop

FED_TIMEOUT = 60.0


async def test_counts_for_a_synapse_users_messages(
    synapse: SynapseServer, ranvier: Homeserver, session: aiohttp.ClientSession
) -> None:
    bob = await Client.register(session, ranvier, "bob")
    rule = {"pattern": "pineapple", "actions": ["notify", {"set_tweak": "highlight"}]}
    await bob.ok("PUT", "/pushrules/global/content/fruit", rule)
    carol = await SynapseClient.register_on(session, synapse, "push_carol")
    dm = await carol.create_room(invite=[bob.user_id], is_direct=True, preset="trusted_private_chat")

    async def invited() -> bool:
        body = await bob.ok("GET", "/sync", timeout="0")
        return dm in body.get("rooms", {}).get("invite", {})

    await eventually(invited, timeout=FED_TIMEOUT)
    await bob.ok("POST", f"/join/{dm}", {}, server_name=synapse.server_name)

    await send(carol, dm, {"msgtype": "m.text", "body": "hello there"})
    await send(carol, dm, {"msgtype": "m.text", "body": "bob?", "m.mentions": {"user_ids": [bob.user_id]}})
    last = await send(carol, dm, {"msgtype": "m.text", "body": "I brought a pineapple"})

    async def all_counted() -> bool:
        return (await unread(bob, dm))["room"] == n(3, 2)

    await eventually(all_counted, timeout=FED_TIMEOUT)
    # Bob reads up to the last one: nothing is unread any more.
    await bob.ok("POST", f"/rooms/{dm}/receipt/m.read/{last}", {})
    assert (await unread(bob, dm))["room"] == n(0, 0)
