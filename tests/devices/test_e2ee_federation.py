"""E2EE between two in-process Ranvier servers (S2S "Device Management", "End-to-End Encryption",
"Send-to-device messaging"): keys queried and claimed across servers, to-device messages both ways
(exactly once), device list updates pushed as EDUs with their prev_id chain, a resync on a gap, and
cross-signing keys pushed as m.signing_key_update."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import nacl.signing

from ranvier.app import Homeserver
from tests.scenarios.servers import Client, eventually, start_server

from .helpers import TestDevice, public, sign


async def _login(session: aiohttp.ClientSession, hs: Homeserver, name: str) -> tuple[Client, TestDevice]:
    async with session.post(
        f"http://127.0.0.1:{hs.ports['client']}/_matrix/client/v3/login",
        json={
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": name},
            "password": "pw-" + name * 3,
        },
    ) as resp:
        body = await resp.json()
        assert resp.status == 200, body
    return Client(session, hs, body["user_id"], body["access_token"]), TestDevice(
        body["user_id"], body["device_id"]
    )


async def _pair(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> tuple[Homeserver, Homeserver, Client, TestDevice, Client, TestDevice, str]:
    a = await start_server(tmp_path / "a")
    b = await start_server(tmp_path / "b")
    servers += [a, b]
    await Client.register(session, a, "alice")
    await Client.register(session, b, "bob")
    alice, adev = await _login(session, a, "alice")
    bob, bdev = await _login(session, b, "bob")
    room_id = await alice.create_room(name="E2EE")
    await bob.ok("POST", f"/join/{room_id}", {}, server_name=a.server_name)
    await alice.sync()
    await bob.sync()
    return a, b, alice, adev, bob, bdev, room_id


async def _events_until(client: Client, pick: Any, timeout: float = 20) -> list[Any]:
    seen: list[Any] = []

    async def check() -> bool:
        seen.extend(pick(await client.sync(2_000)))
        return bool(seen)

    await eventually(check, timeout=timeout)
    return seen


async def test_keys_and_to_device_across_servers(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a, b, alice, adev, bob, bdev, _ = await _pair(tmp_path, servers, session)
    await alice.ok(
        "POST", "/keys/upload", {"device_keys": adev.device_keys(), "one_time_keys": adev.one_time_keys(2)}
    )
    bob_keys = bdev.device_keys()
    await bob.ok("POST", "/keys/upload", {"device_keys": bob_keys, "one_time_keys": bdev.one_time_keys(2)})

    # Alice on A queries Bob on B: fetched from B (GET /user/devices, as they share a room) and cached.
    answer = await alice.ok("POST", "/keys/query", {"device_keys": {bob.user_id: []}})
    assert answer["failures"] == {}
    assert answer["device_keys"][bob.user_id][bdev.device_id]["keys"] == bob_keys["keys"]
    assert await a.storage.device_lists.get_remote_list(bob.user_id) is not None
    # A user who shares no room is asked for through /user/keys/query each time, and not cached.
    carol = await Client.register(session, b, "carol")
    answer = await alice.ok("POST", "/keys/query", {"device_keys": {carol.user_id: []}})
    assert answer["device_keys"][carol.user_id] == {} and answer["failures"] == {}
    assert await a.storage.device_lists.get_remote_list(carol.user_id) is None

    # Claims through /user/keys/claim: two one-time keys, then nothing.
    wanted = {"one_time_keys": {bob.user_id: {bdev.device_id: "signed_curve25519"}}}
    claimed = [await alice.ok("POST", "/keys/claim", wanted) for _ in range(3)]
    ids = [next(iter(c["one_time_keys"].get(bob.user_id, {}).get(bdev.device_id, {})), None) for c in claimed]
    assert ids[0] and ids[1] and ids[0] != ids[1] and ids[2] is None
    assert await b.storage.e2e_keys.count_one_time_keys(bob.user_id, bdev.device_id) == {}

    # To-device both ways, once each even though the sender retries with the same transaction id.
    body = {"messages": {bob.user_id: {bdev.device_id: {"hello": "bob"}}}}
    await alice.ok("PUT", "/sendToDevice/m.test/t1", body)
    await alice.ok("PUT", "/sendToDevice/m.test/t1", body)
    got = await _events_until(bob, lambda s: s["to_device"]["events"])
    assert got == [{"type": "m.test", "sender": alice.user_id, "content": {"hello": "bob"}}]
    await bob.ok("PUT", "/sendToDevice/m.test/t1", {"messages": {alice.user_id: {"*": {"hello": "alice"}}}})
    got = await _events_until(alice, lambda s: s["to_device"]["events"])
    assert [e["content"] for e in got] == [{"hello": "alice"}]
    later = await bob.sync(1_000)
    assert later["to_device"]["events"] == []


async def test_device_list_updates_and_resync(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a, b, alice, _, bob, bdev, _ = await _pair(tmp_path, servers, session)
    await bob.ok("POST", "/keys/upload", {"device_keys": bdev.device_keys()})
    first = await alice.ok("POST", "/keys/query", {"device_keys": {bob.user_id: []}})
    assert list(first["device_keys"][bob.user_id]) == [bdev.device_id]
    await alice.sync()

    # Bob's first update (his key upload) reaches A whenever it does, and resyncs if A had nothing
    # cached then. Once B's queue for A is empty, A has handled it (EDUs are applied before /send
    # answers), so any resync it caused has started and can be waited for.
    async def b_queue_empty() -> bool:
        return bool(await b.storage.outbox.pending_count(a.server_name) == 0)

    await eventually(b_queue_empty, timeout=10)
    await a.device_lists.wait_for_resyncs()
    resyncs_before = dict(a.device_lists._resyncs)

    # Bob adds a device on B: an m.device_list_update reaches A, Alice's sync says so, and the new device
    # is served from A's cache (no resync: the EDU's prev_id is one A has seen).
    bob2, bdev2 = await _login(session, b, "bob")
    await bob2.ok("POST", "/keys/upload", {"device_keys": bdev2.device_keys()})
    await _events_until(alice, lambda s: [u for u in s["device_lists"]["changed"] if u == bob.user_id])

    async def a_has_both() -> bool:
        devices = await a.storage.device_lists.get_remote_devices(bob.user_id)
        return sorted(d.device_id for d in devices if d.keys) == sorted([bdev.device_id, bdev2.device_id])

    await eventually(a_has_both, timeout=10)
    assert a.device_lists._resyncs == resyncs_before  # applied from the EDU: no resync this time
    answer = await alice.ok("POST", "/keys/query", {"device_keys": {bob.user_id: []}})
    assert sorted(answer["device_keys"][bob.user_id]) == sorted([bdev.device_id, bdev2.device_id])

    # A new name is a device list change, but the name itself stays home by default
    # (federation.allow_device_name_lookup_over_federation, off as in Synapse)...
    await bob.ok("PUT", f"/devices/{bdev.device_id}", {"display_name": "Bob's desk"})
    await _events_until(alice, lambda s: [u for u in s["device_lists"]["changed"] if u == bob.user_id])
    devices = await a.storage.device_lists.get_remote_devices(bob.user_id)
    assert [d.display_name for d in devices if d.device_id == bdev.device_id] == [None]
    answer = await alice.ok("POST", "/keys/query", {"device_keys": {bob.user_id: []}})
    assert "unsigned" not in answer["device_keys"][bob.user_id][bdev.device_id]
    # ...and travels when B's operator allows it.
    b.device_lists.share_device_names = True
    await bob.ok("PUT", f"/devices/{bdev.device_id}", {"display_name": "Bob's laptop"})

    async def a_has_the_name() -> bool:
        devices = await a.storage.device_lists.get_remote_devices(bob.user_id)
        return any(d.device_id == bdev.device_id and d.display_name == "Bob's laptop" for d in devices)

    await eventually(a_has_the_name, timeout=10)

    # Bob logs the new device out: it is deleted on A too.
    await bob2.ok("POST", "/logout", {})
    await _events_until(alice, lambda s: [u for u in s["device_lists"]["changed"] if u == bob.user_id])

    async def a_lost_it() -> bool:
        devices = await a.storage.device_lists.get_remote_devices(bob.user_id)
        return [d.device_id for d in devices if d.keys] == [bdev.device_id]

    await eventually(a_lost_it, timeout=10)

    # A gap: an update whose prev_id A never saw (an EDU lost) makes A fetch the whole list again.
    bob3, bdev3 = await _login(session, b, "bob")
    await b.storage.e2e_keys.set_device_keys(bob.user_id, bdev3.device_id, bdev3.device_keys())  # no EDU sent
    await a.device_lists.on_device_list_update(
        b.server_name,
        {"user_id": bob.user_id, "device_id": bdev3.device_id, "stream_id": 10**9, "prev_id": [10**9 - 1]},
    )
    assert (await a.storage.device_lists.get_remote_list(bob.user_id))[1] is True  # type: ignore[index]
    await a.device_lists.wait_for_resyncs()
    assert (await a.storage.device_lists.get_remote_list(bob.user_id))[1] is False  # type: ignore[index]
    devices = await a.storage.device_lists.get_remote_devices(bob.user_id)
    assert sorted(d.device_id for d in devices if d.keys) == sorted([bdev.device_id, bdev3.device_id])
    assert bob3


async def test_cross_signing_keys_reach_the_other_server(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a, _b, alice, _, bob, bdev, _ = await _pair(tmp_path, servers, session)
    await bob.ok("POST", "/keys/upload", {"device_keys": bdev.device_keys()})
    await alice.ok("POST", "/keys/query", {"device_keys": {bob.user_id: []}})  # A now tracks Bob
    master, ssk = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    uid = bob.user_id
    master_key = {"user_id": uid, "usage": ["master"], "keys": {f"ed25519:{public(master)}": public(master)}}
    ssk_key = sign(
        {"user_id": uid, "usage": ["self_signing"], "keys": {f"ed25519:{public(ssk)}": public(ssk)}},
        uid,
        f"ed25519:{public(master)}",
        master,
    )
    await bob.ok(
        "POST", "/keys/device_signing/upload", {"master_key": master_key, "self_signing_key": ssk_key}
    )

    async def a_knows() -> bool:
        return "master" in await a.storage.e2e_keys.get_cross_signing_keys(uid)

    await eventually(a_knows, timeout=10)
    answer = await alice.ok("POST", "/keys/query", {"device_keys": {uid: []}})
    assert answer["master_keys"][uid]["keys"] == master_key["keys"]
    assert answer["self_signing_keys"][uid] == ssk_key


async def test_joining_a_room_sends_the_devices_to_new_servers(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a = await start_server(tmp_path / "a")
    b = await start_server(tmp_path / "b")
    servers += [a, b]
    await Client.register(session, a, "alice")
    await Client.register(session, b, "bob")
    alice, _ = await _login(session, a, "alice")
    bob, bdev = await _login(session, b, "bob")
    await bob.ok("POST", "/keys/upload", {"device_keys": bdev.device_keys()})
    room_id = await alice.create_room()
    assert await a.storage.device_lists.get_remote_list(bob.user_id) is None
    # Bob's join brings B into a room with A for the first time: B sends A his devices, and A (tracking
    # Bob now) caches them without anyone asking.
    await bob.ok("POST", f"/join/{room_id}", {}, server_name=a.server_name)

    async def a_knows_bobs_device() -> bool:
        devices = await a.storage.device_lists.get_remote_devices(bob.user_id)
        return [d.device_id for d in devices if d.keys] == [bdev.device_id]

    await eventually(a_knows_bobs_device, timeout=20)
