"""End-to-end encryption between a Ranvier user and a Synapse user, both real matrix-nio[e2e] (vodozemac)
clients: device keys queried and one-time keys claimed across servers (S2S /user/devices,
/user/keys/query, /user/keys/claim), room keys sent as Olm-encrypted m.direct_to_device EDUs, and
Megolm messages each way decrypted by the other side, in a room created encrypted on each server."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import aiohttp
import nacl.signing
import pytest
from nio import (
    AsyncClient,
    AsyncClientConfig,
    LoginResponse,
    RoomCreateResponse,
    RoomSendResponse,
    ToDeviceMessage,
)

from ranvier.app import Homeserver
from tests.devices.helpers import TestDevice, public, sign
from tests.e2e.test_nio_e2ee import ENCRYPTION, PASSWORD, e2ee_client, sync_once, wait_for_text
from tests.scenarios.servers import Client, eventually, start_server

from .peers import SynapseClient
from .synapse import SynapseServer

pytestmark = pytest.mark.interop
JS_DIR = Path(__file__).resolve().parents[1] / "e2e" / "js"


async def synapse_client(synapse: SynapseServer, localpart: str, store: Path) -> AsyncClient:
    user_id, _ = synapse.register(localpart, password=PASSWORD)
    store.mkdir(parents=True, exist_ok=True)
    client = AsyncClient(
        synapse.client_url, user_id, store_path=str(store), config=AsyncClientConfig(encryption_enabled=True)
    )
    assert isinstance(await client.login(PASSWORD, device_name="nio on synapse"), LoginResponse)
    return client


async def sync_until(client: AsyncClient, condition, rounds: int = 60) -> None:  # type: ignore[no-untyped-def]
    for _ in range(rounds):
        await sync_once(client)
        if condition():
            return
    raise AssertionError("condition not reached")


def knows_device(client: AsyncClient, user_id: str, device_id: str):  # type: ignore[no-untyped-def]
    return lambda: any(d.id == device_id for d in client.device_store.active_user_devices(user_id))


async def encrypted_exchange(creator: AsyncClient, joiner: AsyncClient, label: str) -> list[float]:
    """``creator`` makes an encrypted room and invites ``joiner``; a message each way is decrypted by the
    other. Returns the seconds from each send to its decryption (sync loop included)."""
    created = await creator.room_create(name=label, invite=[joiner.user_id], initial_state=[ENCRYPTION])
    assert isinstance(created, RoomCreateResponse), created
    room_id = created.room_id
    await sync_until(joiner, lambda: room_id in joiner.invited_rooms)
    await joiner.join(room_id)
    await sync_until(
        joiner, lambda: room_id in joiner.rooms and joiner.user_id in joiner.rooms[room_id].users
    )
    await sync_until(creator, lambda: joiner.user_id in creator.rooms[room_id].users)
    await sync_once(joiner)
    assert creator.rooms[room_id].encrypted and joiner.rooms[room_id].encrypted
    timings = []
    for sender, receiver in ((creator, joiner), (joiner, creator)):
        body = f"{label}: hello from {sender.user_id}"
        start = time.monotonic()
        answer = await sender.room_send(
            room_id, "m.room.message", {"msgtype": "m.text", "body": body}, ignore_unverified_devices=True
        )
        assert isinstance(answer, RoomSendResponse), answer
        received = await wait_for_text(receiver, room_id, body, rounds=80)
        timings.append(time.monotonic() - start)
        assert received.sender == sender.user_id
    return timings


async def test_nio_users_on_ranvier_and_synapse_exchange_encrypted_messages(
    synapse: SynapseServer, ranvier: Homeserver, tmp_path: Path
) -> None:
    alice = await e2ee_client(f"http://127.0.0.1:{ranvier.ports['client']}", "alice", tmp_path / "alice")
    bob = await synapse_client(synapse, f"e2ee_bob_{int(time.time())}", tmp_path / "bob")
    try:
        for client in (alice, bob):
            await sync_once(client)
        # A to-device message each way (the plain kind; the room keys below are Olm-encrypted ones).
        await alice.to_device(
            ToDeviceMessage("org.example.ping", bob.user_id, bob.device_id, {"from": "ranvier"})
        )
        await bob.to_device(
            ToDeviceMessage("org.example.ping", alice.user_id, alice.device_id, {"from": "synapse"})
        )
        for client, expected in ((bob, "ranvier"), (alice, "synapse")):
            got: list[dict[str, object]] = []
            for _ in range(60):
                response = await sync_once(client)
                got += [
                    e.source["content"]
                    for e in response.to_device_events
                    if e.source.get("type") == "org.example.ping"
                ]
                if got:
                    break
            assert got == [{"from": expected}]

        ranvier_room = await encrypted_exchange(alice, bob, "created on Ranvier")
        synapse_room = await encrypted_exchange(bob, alice, "created on Synapse")
        print(f"send-to-decrypt seconds, room on Ranvier (R->S, S->R): {ranvier_room}")
        print(f"send-to-decrypt seconds, room on Synapse (S->R, R->S): {synapse_room}")

        # Device lists: each user adds a device; the other server's user sees the change in /sync and
        # the new device through /keys/query (m.device_list_update EDUs both ways).
        for owner, watcher, store in ((bob, alice, "bob2"), (alice, bob, "alice2")):
            second = AsyncClient(
                owner.homeserver,
                owner.user_id,
                store_path=str(tmp_path / store),
                config=AsyncClientConfig(encryption_enabled=True),
            )
            (tmp_path / store).mkdir()
            assert isinstance(await second.login(PASSWORD, device_name="second"), LoginResponse)
            try:
                await sync_once(second)  # uploads its keys
                # nio queries a user's keys again only when /sync lists them in device_lists.changed.
                await sync_until(watcher, knows_device(watcher, owner.user_id, second.device_id))
            finally:
                await second.close()
    finally:
        await alice.close()
        await bob.close()


async def test_send_to_decrypt_times_across_server_pairs(
    synapse: SynapseServer, ranvier: Homeserver, tmp_path: Path
) -> None:
    """The same encrypted exchange for Ranvier<->Ranvier, Ranvier<->Synapse and Synapse<->Synapse in one
    run; prints the seconds from each send to its decryption on the other side (a report figure, not
    asserted: each exchange asserts only that both messages were decrypted)."""
    other = await start_server(tmp_path / "ranvier2")
    stamp = int(time.time())
    clients: list[AsyncClient] = []
    try:
        r1 = await e2ee_client(f"http://127.0.0.1:{ranvier.ports['client']}", "rr_one", tmp_path / "r1")
        r2 = await e2ee_client(f"http://127.0.0.1:{other.ports['client']}", "rr_two", tmp_path / "r2")
        s1 = await synapse_client(synapse, f"ss_one_{stamp}", tmp_path / "s1")
        s2 = await synapse_client(synapse, f"ss_two_{stamp}", tmp_path / "s2")
        clients += [r1, r2, s1, s2]
        for client in clients:
            await sync_once(client)
        figures = {
            "Ranvier<->Ranvier": await encrypted_exchange(r1, r2, "rr"),
            "Ranvier<->Synapse": await encrypted_exchange(r1, s1, "rs"),
            "Synapse<->Synapse": await encrypted_exchange(s1, s2, "ss"),
        }
        for pair, (there, back) in figures.items():
            print(f"send-to-decrypt {pair}: {there * 1000:.0f} ms, {back * 1000:.0f} ms")
    finally:
        for client in clients:
            await client.close()
        await other.stop()


async def test_js_sdk_rust_crypto_between_ranvier_and_synapse(
    synapse: SynapseServer, ranvier: Homeserver, tmp_path: Path
) -> None:
    """matrix-js-sdk with initRustCrypto (Element's stack) in Node: a Ranvier user and a Synapse user
    exchange encrypted messages each way (tests/e2e/js/e2ee.mjs)."""
    if shutil.which("node") is None or not (JS_DIR / "node_modules" / "matrix-js-sdk").exists():
        pytest.skip("node and tests/e2e/js/node_modules (npm install there, see tests/e2e/test_js_sdk.py)")
    ranvier_url = f"http://127.0.0.1:{ranvier.ports['client']}"
    async with aiohttp.ClientSession() as http:
        body = {"username": "js_alice", "password": PASSWORD, "auth": {"type": "m.login.dummy"}}
        async with http.post(ranvier_url + "/_matrix/client/v3/register", json=body) as resp:
            assert resp.status == 200, await resp.text()
    bob_localpart = f"js_bob_{int(time.time())}"
    synapse.register(bob_localpart, password=PASSWORD)
    # The in-process Ranvier serves on this event loop: run Node without blocking it.
    proc = await asyncio.create_subprocess_exec(
        "node",
        "e2ee.mjs",
        ranvier_url,
        "js_alice",
        synapse.client_url,
        bob_localpart,
        PASSWORD,
        cwd=JS_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=240)
    assert proc.returncode == 0, err.decode()[-3000:]
    results = json.loads(out.decode().strip().splitlines()[-1])
    assert results["encrypted_alice"] is True
    assert results["bob_decrypted"] == f"hello from {results['alice']}"
    assert results["alice_decrypted"] == f"hello from {results['bob']}"
    print(f"js-sdk rust crypto send-to-decrypt (R->S, S->R): {results['timings_ms']} ms")


async def test_cross_signing_keys_between_ranvier_and_synapse(
    synapse: SynapseServer, ranvier: Homeserver, session: aiohttp.ClientSession
) -> None:
    """Cross-signing keys uploaded on each server are served to the other's user (/user/keys/query,
    GET /user/devices), and a replaced master key reaches the other server (m.signing_key_update)."""
    alice = await Client.register(session, ranvier, "xs_alice")
    bob = await SynapseClient.register_on(session, synapse, f"xs_bob_{int(time.time())}")
    room_id = await alice.create_room()
    await alice.ok("POST", f"/rooms/{room_id}/invite", {"user_id": bob.user_id})
    await bob.ok("POST", f"/join/{room_id}", {})
    uploaded = {}
    for client in (alice, bob):
        whoami = await client.ok("GET", "/account/whoami")
        device = TestDevice(client.user_id, whoami["device_id"])
        await client.ok("POST", "/keys/upload", {"device_keys": device.device_keys()})
        uploaded[client.user_id] = await upload_cross_signing(client)

    async def seen(by: Client, owner: str, master: str) -> bool:
        answer = await by.ok("POST", "/keys/query", {"device_keys": {owner: []}})
        keys = answer.get("master_keys", {}).get(owner, {}).get("keys", {})
        return f"ed25519:{master}" in keys and owner in answer.get("self_signing_keys", {})

    for by, owner in ((alice, bob.user_id), (bob, alice.user_id)):
        master = uploaded[owner]
        await eventually(lambda by=by, owner=owner, master=master: seen(by, owner, master), timeout=30)

    # Alice replaces her keys (with her password): Synapse, tracking her, learns of it from the EDU.
    new_master = await upload_cross_signing(alice, password="pw-" + "xs_alice" * 3)
    await eventually(lambda: seen(bob, alice.user_id, new_master), timeout=30)


async def upload_cross_signing(client: Client, password: str | None = None) -> str:
    """Upload fresh master and self-signing keys; returns the master public key."""
    master, ssk = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    uid = client.user_id
    body: dict[str, object] = {
        "master_key": {
            "user_id": uid,
            "usage": ["master"],
            "keys": {f"ed25519:{public(master)}": public(master)},
        },
        "self_signing_key": sign(
            {"user_id": uid, "usage": ["self_signing"], "keys": {f"ed25519:{public(ssk)}": public(ssk)}},
            uid,
            f"ed25519:{public(master)}",
            master,
        ),
    }
    status, answer = await client.call("POST", "/keys/device_signing/upload", body)
    if status == 401 and password is not None:
        body["auth"] = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": uid},
            "password": password,
            "session": answer["session"],
        }
        status, answer = await client.call("POST", "/keys/device_signing/upload", body)
    assert status == 200, answer
    return public(master)
