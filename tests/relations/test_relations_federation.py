"""Relations received over federation (two in-process Ranvier servers): a thread reply, an edit and a
reference sent on B are aggregated on A (/event, /relations, /threads), and A's thread reply on B; a
redaction arriving over federation takes the child out of A's aggregation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from ranvier.app import Homeserver
from tests.scenarios.servers import Client, eventually, start_server

FED_TIMEOUT = 20.0


async def _send(
    client: Client, room: str, txn: str, content: dict[str, Any], etype: str = "m.room.message"
) -> str:
    return str((await client.ok("PUT", f"/rooms/{room}/send/{etype}/{txn}", content))["event_id"])


async def _v1(client: Client, path: str) -> Any:
    async with client.session.get(
        client.base.replace("/v3", "/v1") + path, headers={"Authorization": f"Bearer {client.token}"}
    ) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def _relations(client: Client, room: str, event_id: str) -> dict[str, Any]:
    status, event = await client.call("GET", f"/rooms/{room}/event/{event_id}")
    return dict(event["unsigned"].get("m.relations", {})) if status == 200 else {}


async def test_relations_from_another_server_are_aggregated(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a = await start_server(tmp_path / "a")
    b = await start_server(tmp_path / "b")
    servers += [a, b]
    alice = await Client.register(session, a, "alice")
    bob = await Client.register(session, b, "bob")
    room = await alice.create_room(name="Federated threads")
    await bob.ok("POST", f"/join/{room}", {}, server_name=a.server_name)
    root = await alice.send_text(room, "federated root")

    async def bob_has_root() -> bool:
        return (await bob.call("GET", f"/rooms/{room}/event/{root}"))[0] == 200

    await eventually(bob_has_root, timeout=FED_TIMEOUT)
    thread = {"rel_type": "m.thread", "event_id": root}
    reply = await _send(bob, room, "r1", {"msgtype": "m.text", "body": "from B", "m.relates_to": thread})
    ref = await _send(
        bob, room, "f1", {"m.relates_to": {"rel_type": "m.reference", "event_id": root}}, "m.key.done"
    )
    edit = await _send(
        bob,
        room,
        "e1",
        {
            "msgtype": "m.text",
            "body": "* from B, edited",
            "m.new_content": {"msgtype": "m.text", "body": "from B, edited"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": reply},
        },
    )

    async def a_aggregates() -> bool:
        bundle = await _relations(alice, room, root)
        return "m.thread" in bundle and "m.reference" in bundle

    await eventually(a_aggregates, timeout=FED_TIMEOUT)
    bundle = await _relations(alice, room, root)
    assert bundle["m.thread"]["count"] == 1 and bundle["m.thread"]["current_user_participated"] is True
    latest = bundle["m.thread"]["latest_event"]
    assert latest["event_id"] == reply and latest["sender"] == bob.user_id

    async def a_has_the_edit() -> bool:
        latest = (await _relations(alice, room, root))["m.thread"]["latest_event"]
        return latest["unsigned"].get("m.relations", {}).get("m.replace", {}).get("event_id") == edit

    await eventually(a_has_the_edit, timeout=FED_TIMEOUT)
    assert bundle["m.reference"] == {"chunk": [{"event_id": ref}]}
    listed = await _v1(alice, f"/rooms/{room}/relations/{root}")
    assert [e["event_id"] for e in listed["chunk"]] == [ref, reply]
    assert [e["event_id"] for e in (await _v1(alice, f"/rooms/{room}/threads"))["chunk"]] == [root]

    # A's reply in the thread is aggregated on B, with Bob's participation.
    mine = await _send(alice, room, "r2", {"msgtype": "m.text", "body": "from A", "m.relates_to": thread})

    async def b_sees_two() -> bool:
        summary = (await _relations(bob, room, root)).get("m.thread", {})
        return summary.get("count") == 2 and summary["latest_event"]["event_id"] == mine

    await eventually(b_sees_two, timeout=FED_TIMEOUT)
    assert (await _relations(bob, room, root))["m.thread"]["current_user_participated"] is True

    # Bob redacts his reply on B: A drops it from the thread.
    await bob.ok("PUT", f"/rooms/{room}/redact/{reply}/red1", {})

    async def a_counts_one() -> bool:
        return (await _relations(alice, room, root)).get("m.thread", {}).get("count") == 1

    await eventually(a_counts_one, timeout=FED_TIMEOUT)
