"""End-to-end encryption with a real client: matrix-nio with its ``[e2e]`` extra (vodozemac) against a real
Ranvier subprocess. Two users upload keys, query and claim each other's, exchange a to-device message, and
each decrypts the other's Megolm-encrypted messages in a room created encrypted (the room keys travel as
Olm-encrypted to-device messages)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from nio import (
    AsyncClient,
    AsyncClientConfig,
    KeysClaimResponse,
    KeysQueryResponse,
    LoginResponse,
    MegolmEvent,
    RegisterResponse,
    RoomCreateResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
    ToDeviceMessage,
    ToDeviceResponse,
    UnknownToDeviceEvent,
)

from .ranvier_process import RanvierProcess

PASSWORD = "correct horse battery staple"
ENCRYPTION = {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}


@pytest.fixture
def ranvier(tmp_path: Path) -> Iterator[RanvierProcess]:
    server = RanvierProcess.create(tmp_path / "server")
    (tmp_path / "server").mkdir(exist_ok=True)
    server.start()
    try:
        yield server
    finally:
        assert server.stop() == 0, server.log_tail()


async def e2ee_client(url: str, name: str, store: Path) -> AsyncClient:
    """Register ``name``, then log in with an encrypting client (its Olm account lives in ``store``)."""
    registrar = AsyncClient(url, f"@{name}:ignored")
    registered = await registrar.register(name, PASSWORD)
    assert isinstance(registered, RegisterResponse), registered
    await registrar.close()
    store.mkdir(parents=True, exist_ok=True)
    client = AsyncClient(
        url, registered.user_id, store_path=str(store), config=AsyncClientConfig(encryption_enabled=True)
    )
    logged_in = await client.login(PASSWORD, device_name=f"{name}'s nio")
    assert isinstance(logged_in, LoginResponse), logged_in
    assert client.olm is not None, "matrix-nio[e2e] (vodozemac) is not installed"
    return client


async def sync_once(client: AsyncClient) -> SyncResponse:
    """One sync plus the key upkeep nio's sync_forever does between syncs."""
    response = await client.sync(timeout=500)
    assert isinstance(response, SyncResponse), response
    await client.send_to_device_messages()
    if client.should_upload_keys:
        await client.keys_upload()
    if client.should_query_keys:
        assert isinstance(await client.keys_query(), KeysQueryResponse)
    if client.should_claim_keys:
        assert isinstance(await client.keys_claim(client.get_users_for_key_claiming()), KeysClaimResponse)
    return response


async def wait_for_text(client: AsyncClient, room_id: str, body: str, rounds: int = 40) -> RoomMessageText:
    """Sync until ``body`` arrives decrypted (nio turns a decryptable m.room.encrypted into the event)."""
    undecrypted: list[MegolmEvent] = []
    for _ in range(rounds):
        response = await sync_once(client)
        room = response.rooms.join.get(room_id)
        for event in room.timeline.events if room is not None else []:
            if isinstance(event, RoomMessageText) and event.body == body:
                assert event.decrypted, "the message was not sent encrypted"
                return event
            if isinstance(event, MegolmEvent):
                undecrypted.append(event)
    raise AssertionError(f"{body!r} never decrypted; undecryptable events: {undecrypted}")


async def test_two_nio_users_exchange_encrypted_messages(ranvier: RanvierProcess, tmp_path: Path) -> None:
    alice = await e2ee_client(ranvier.client_url, "alice", tmp_path / "alice")
    bob = await e2ee_client(ranvier.client_url, "bob", tmp_path / "bob")
    try:
        for client in (alice, bob):
            await sync_once(client)  # uploads device keys and one-time keys
            assert not client.should_upload_keys

        created = await alice.room_create(name="secret", invite=[bob.user_id], initial_state=[ENCRYPTION])
        assert isinstance(created, RoomCreateResponse), created
        room_id = created.room_id
        await sync_once(bob)
        await bob.join(room_id)
        for client in (alice, bob):
            await sync_once(client)
        assert alice.rooms[room_id].encrypted and bob.rooms[room_id].encrypted
        # Keys queried: each sees the other's device with the identity keys its Olm account holds.
        alice_device = bob.device_store[alice.user_id][alice.device_id]
        assert alice_device.ed25519 == alice.olm.account.identity_keys["ed25519"]
        bob_device = alice.device_store[bob.user_id][bob.device_id]
        assert bob_device.ed25519 == bob.olm.account.identity_keys["ed25519"]

        # A plain to-device message, Alice's device to Bob's.
        sent = await alice.to_device(
            ToDeviceMessage("org.example.ping", bob.user_id, bob.device_id, {"n": 1})
        )
        assert isinstance(sent, ToDeviceResponse), sent
        pings = []
        for _ in range(10):
            response = await sync_once(bob)
            pings += [e for e in response.to_device_events if isinstance(e, UnknownToDeviceEvent)]
            if pings:
                break
        assert [(p.type, p.source["sender"], p.source["content"]) for p in pings] == [
            ("org.example.ping", alice.user_id, {"n": 1})
        ]

        # Megolm both ways: the room key goes out Olm-encrypted (claiming a one-time key of the other side).
        answer = await alice.room_send(
            room_id,
            "m.room.message",
            {"msgtype": "m.text", "body": "hello bob"},
            ignore_unverified_devices=True,
        )
        assert isinstance(answer, RoomSendResponse), answer
        received = await wait_for_text(bob, room_id, "hello bob")
        assert received.sender == alice.user_id

        answer = await bob.room_send(
            room_id,
            "m.room.message",
            {"msgtype": "m.text", "body": "hello alice"},
            ignore_unverified_devices=True,
        )
        assert isinstance(answer, RoomSendResponse), answer
        received = await wait_for_text(alice, room_id, "hello alice")
        assert received.sender == bob.user_id

        # What the server stored and serves is ciphertext (nio would decrypt /messages, so read it raw).
        async with aiohttp.ClientSession() as http:
            url = f"{ranvier.client_url}/_matrix/client/v3/rooms/{room_id}/messages"
            headers = {"Authorization": f"Bearer {alice.access_token}"}
            async with http.get(url, params={"dir": "b", "limit": "50"}, headers=headers) as resp:
                chunk = (await resp.json())["chunk"]
        encrypted = [e for e in chunk if e["type"] == "m.room.encrypted"]
        assert len(encrypted) == 2 and not any(e["type"] == "m.room.message" for e in chunk)
        assert {e["content"]["algorithm"] for e in encrypted} == {"m.megolm.v1.aes-sha2"}
    finally:
        await alice.close()
        await bob.close()
