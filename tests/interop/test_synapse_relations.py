"""Threads, edits and references between Ranvier and a real Synapse (1.163.2): a Synapse user's thread
reply and edit are aggregated by Ranvier (/event, /relations, /threads, thread receipts), and a Ranvier
user's reply is aggregated by Synapse's own /relations and bundle, so the events we send are related the
way Synapse reads them."""

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


async def _v1(client: Client, path: str) -> tuple[int, Any]:
    async with client.session.get(
        client.base.replace("/v3", "/v1") + path, headers={"Authorization": f"Bearer {client.token}"}
    ) as resp:
        return resp.status, await resp.json()


async def _relations(client: Client, room: str, event_id: str) -> dict[str, Any]:
    status, event = await client.call("GET", f"/rooms/{room}/event/{event_id}")
    return dict(event.get("unsigned", {}).get("m.relations", {})) if status == 200 else {}


async def test_threads_and_edits_with_synapse(
    synapse: SynapseServer, ranvier: Homeserver, session: aiohttp.ClientSession
) -> None:
    alice = await Client.register(session, ranvier, "alice")
    bob = await SynapseClient.register_on(session, synapse, "relations_bob")
    room = await alice.create_room(preset="public_chat", name="Threads with Synapse")
    await bob.ok("POST", f"/join/{room}", {}, server_name=ranvier.server_name)
    root = await alice.send_text(room, "a root on Ranvier")

    async def bob_has_root() -> bool:
        return (await bob.call("GET", f"/rooms/{room}/event/{root}"))[0] == 200

    await eventually(bob_has_root, timeout=FED_TIMEOUT)
    thread = {"rel_type": "m.thread", "event_id": root}
    reply = (
        await bob.ok(
            "PUT",
            f"/rooms/{room}/send/m.room.message/s1",
            {"msgtype": "m.text", "body": "reply on Synapse", "m.relates_to": thread},
        )
    )["event_id"]
    edit = (
        await bob.ok(
            "PUT",
            f"/rooms/{room}/send/m.room.message/s2",
            {
                "msgtype": "m.text",
                "body": "* reply on Synapse, edited",
                "m.new_content": {"msgtype": "m.text", "body": "reply on Synapse, edited"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": reply},
            },
        )
    )["event_id"]

    async def ranvier_aggregates_the_edit() -> bool:
        summary = (await _relations(alice, room, root)).get("m.thread", {})
        latest = summary.get("latest_event", {})
        return latest.get("unsigned", {}).get("m.relations", {}).get("m.replace", {}).get("event_id") == edit

    await eventually(ranvier_aggregates_the_edit, timeout=FED_TIMEOUT)
    summary = (await _relations(alice, room, root))["m.thread"]
    assert summary["count"] == 1 and summary["latest_event"]["event_id"] == reply
    status, listed = await _v1(alice, f"/rooms/{room}/relations/{root}/m.thread")
    assert status == 200 and [e["event_id"] for e in listed["chunk"]] == [reply]
    status, threads = await _v1(alice, f"/rooms/{room}/threads")
    assert status == 200 and [e["event_id"] for e in threads["chunk"]] == [root]
    await alice.ok("POST", f"/rooms/{room}/receipt/m.read/{reply}", {"thread_id": root})

    # Ranvier's reply, aggregated by Synapse.
    mine = await alice.ok(
        "PUT",
        f"/rooms/{room}/send/m.room.message/r1",
        {"msgtype": "m.text", "body": "reply on Ranvier", "m.relates_to": thread},
    )

    async def synapse_aggregates_both() -> bool:
        summary = (await _relations(bob, room, root)).get("m.thread", {})
        return summary.get("count") == 2 and summary["latest_event"]["event_id"] == mine["event_id"]

    await eventually(synapse_aggregates_both, timeout=FED_TIMEOUT)
    status, on_synapse = await _v1(bob, f"/rooms/{room}/relations/{root}/m.thread")
    assert status == 200 and [e["event_id"] for e in on_synapse["chunk"]] == [mine["event_id"], reply]
