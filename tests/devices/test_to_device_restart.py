"""E2EE federation is durable like PDUs (issue 15): a to-device message accepted with 200 while the
destination is down is queued in the outbox, survives a restart of the sending server and of the receiving
one, and is delivered exactly once; a device change whose update was lost in a crash still reaches the
other server after the restart."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from ranvier.app import Homeserver
from tests.scenarios.servers import Client, eventually, fed_port_of, start_server

from .helpers import TestDevice
from .test_e2ee_federation import _login


async def test_to_device_survives_restarts_of_both_servers(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a = await start_server(tmp_path / "a")
    b = await start_server(tmp_path / "b")
    servers += [a, b]
    await Client.register(session, a, "alice")
    await Client.register(session, b, "bob")
    alice, _ = await _login(session, a, "alice")
    bob, bdev = await _login(session, b, "bob")
    room_id = await alice.create_room()
    await bob.ok("POST", f"/join/{room_id}", {}, server_name=a.server_name)
    await bob.sync()

    # B goes down; Alice's message is accepted (queued), then A restarts too.
    b_port = fed_port_of(b)
    await b.stop()
    body = {"messages": {bob.user_id: {bdev.device_id: {"secret": "kept"}}}}
    await alice.ok("PUT", "/sendToDevice/m.test/once", body)
    assert await a.storage.outbox.pending_count(b.server_name) == 1
    a_port = fed_port_of(a)
    await a.stop()
    a2 = await start_server(tmp_path / "a", fed_port=a_port)
    servers.append(a2)
    alice = Client(session, a2, alice.user_id, alice.token)
    await alice.ok("PUT", "/sendToDevice/m.test/once", body)  # a client retry after the restart: a no-op
    b2 = await start_server(tmp_path / "b", fed_port=b_port)
    servers.append(b2)
    a2.federation_sender.mark_reachable(b2.server_name)
    bob = Client(session, b2, bob.user_id, bob.token)

    received: list[dict[str, object]] = []

    async def delivered() -> bool:
        received.extend((await bob.sync(2_000))["to_device"]["events"])
        return bool(received)

    await eventually(delivered, timeout=60)
    await eventually(lambda: _drained(a2, b2.server_name), timeout=20)
    received.extend((await bob.sync(1_000))["to_device"]["events"])
    assert received == [{"type": "m.test", "sender": alice.user_id, "content": {"secret": "kept"}}]


async def _drained(hs: Homeserver, destination: str) -> bool:
    return bool(await hs.storage.outbox.pending_count(destination) == 0)


async def test_a_device_change_whose_update_was_lost_in_a_crash_reaches_the_other_server(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a = await start_server(tmp_path / "a")
    b = await start_server(tmp_path / "b")
    servers += [a, b]
    await Client.register(session, a, "alice")
    await Client.register(session, b, "bob")
    alice, _ = await _login(session, a, "alice")
    bob, bdev = await _login(session, b, "bob")
    room_id = await alice.create_room()
    await bob.ok("POST", f"/join/{room_id}", {}, server_name=a.server_name)
    await bob.ok("POST", "/keys/upload", {"device_keys": bdev.device_keys()})
    await alice.ok("POST", "/keys/query", {"device_keys": {bob.user_id: []}})  # A caches Bob's list

    # The crash window: a new device's keys are committed on B, and B dies before telling A.
    lost = TestDevice(bob.user_id, "LOSTUPDATE")
    await b.storage.devices.create_device(bob.user_id, lost.device_id)
    await b.storage.e2e_keys.set_device_keys(bob.user_id, lost.device_id, lost.device_keys())
    port = fed_port_of(b)
    await b.stop()
    b2 = await start_server(tmp_path / "b", fed_port=port)
    servers.append(b2)

    # B's start sends an update citing the lost one; A sees the gap and fetches Bob's whole list.
    async def a_knows_the_device() -> bool:
        devices = await a.storage.device_lists.get_remote_devices(bob.user_id)
        return lost.device_id in {d.device_id for d in devices if d.keys}

    await eventually(a_knows_the_device, timeout=30)
    answer = await alice.ok("POST", "/keys/query", {"device_keys": {bob.user_id: []}})
    assert sorted(answer["device_keys"][bob.user_id]) == sorted([bdev.device_id, lost.device_id])
