"""/keys/claim for 100 devices of a user on another server: one /user/keys/claim request, every device's
key handed out once. Prints the time it took (a figure for the E2EE report; never asserted)."""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp

from ranvier.app import Homeserver
from ranvier.storage.sql.e2ee_keys import OneTimeKey
from tests.scenarios.servers import Client, start_server

from .helpers import TestDevice

DEVICES = 100


async def test_claim_for_100_remote_devices(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a = await start_server(tmp_path / "a")
    b = await start_server(tmp_path / "b")
    servers += [a, b]
    alice = await Client.register(session, a, "alice")
    bob = await Client.register(session, b, "bob")
    # Bob's devices, each with device keys and two one-time keys (set up through storage: the logins and
    # uploads themselves are covered elsewhere).
    device_ids = [f"DEV{i:03d}" for i in range(DEVICES)]
    for device_id in device_ids:
        device = TestDevice(bob.user_id, device_id)
        await b.storage.devices.create_device(bob.user_id, device_id)
        await b.storage.e2e_keys.set_device_keys(bob.user_id, device_id, device.device_keys())
        keys = [
            OneTimeKey("signed_curve25519", k.split(":")[1], v) for k, v in device.one_time_keys(2).items()
        ]
        await b.storage.e2e_keys.add_one_time_keys(bob.user_id, device_id, keys)

    wanted = {"one_time_keys": {bob.user_id: dict.fromkeys(device_ids, "signed_curve25519")}}
    timings = []
    claimed: list[tuple[str, str]] = []
    for _ in range(2):
        start = time.perf_counter()
        answer = await alice.ok("POST", "/keys/claim", wanted)
        timings.append(time.perf_counter() - start)
        got = answer["one_time_keys"][bob.user_id]
        assert sorted(got) == device_ids and answer["failures"] == {}
        claimed += [(device_id, key_id) for device_id, keys in got.items() for key_id in keys]
    assert len(set(claimed)) == 2 * DEVICES  # no key handed out twice
    for device_id in device_ids[:3]:
        assert await b.storage.e2e_keys.count_one_time_keys(bob.user_id, device_id) == {}
    print(f"/keys/claim of {DEVICES} remote devices: " + ", ".join(f"{t * 1000:.0f} ms" for t in timings))
