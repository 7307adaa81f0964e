"""A real Matrix client (matrix-nio) against a real Ranvier subprocess: the client API end to end."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from nio import (
    AsyncClient,
    JoinResponse,
    LoginResponse,
    RegisterResponse,
    RoomCreateResponse,
    RoomMessagesResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
)

from .ranvier_process import RanvierProcess


@pytest.fixture
def ranvier(tmp_path: Path) -> Iterator[RanvierProcess]:
    server = RanvierProcess.create(tmp_path)
    server.start()
    try:
        yield server
    finally:
        assert server.stop() == 0, server.log_tail()


async def _register(url: str, name: str) -> AsyncClient:
    client = AsyncClient(url, f"@{name}:ignored")
    resp = await client.register(name, "correct horse battery staple")
    assert isinstance(resp, RegisterResponse), resp
    return client


def _texts(sync: SyncResponse, room_id: str) -> list[str]:
    room = sync.rooms.join.get(room_id)
    if room is None:
        return []
    return [e.body for e in room.timeline.events if isinstance(e, RoomMessageText)]


async def test_two_users_chat_with_nio(ranvier: RanvierProcess) -> None:
    alice = await _register(ranvier.client_url, "alice")
    bob = await _register(ranvier.client_url, "bob")
    try:
        created = await alice.room_create(name="Tea", topic="first topic", invite=[bob.user_id])
        assert isinstance(created, RoomCreateResponse), created
        room_id = created.room_id

        first = await bob.sync(timeout=0)
        assert isinstance(first, SyncResponse), first
        assert room_id in first.rooms.invite
        joined = await bob.join(room_id)
        assert isinstance(joined, JoinResponse), joined

        bob_sync = await bob.sync(timeout=0)
        assert isinstance(bob_sync, SyncResponse)
        assert room_id in bob_sync.rooms.join

        sent = []
        for i in range(5):
            resp = await alice.room_send(
                room_id, "m.room.message", {"msgtype": "m.text", "body": f"hello {i}"}
            )
            assert isinstance(resp, RoomSendResponse), resp
            sent.append(resp.event_id)

        # Incremental sync: each message exactly once, even across several syncs.
        seen: list[str] = []
        for _ in range(3):
            s = await bob.sync(timeout=1000)
            assert isinstance(s, SyncResponse)
            seen += _texts(s, room_id)
        assert seen == [f"hello {i}" for i in range(5)]

        # Alice's long-poll wakes up with Bob's reply (it would otherwise wait 30 s).
        s = await alice.sync(timeout=0)
        assert isinstance(s, SyncResponse)
        poll = asyncio.create_task(alice.sync(timeout=30_000))
        await asyncio.sleep(0.5)
        reply = await bob.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "hi alice"})
        assert isinstance(reply, RoomSendResponse)
        woke = await asyncio.wait_for(poll, 20)
        assert isinstance(woke, SyncResponse)
        assert _texts(woke, room_id) == ["hi alice"]

        # Paginate back from the end of Bob's timeline.
        assert isinstance(await bob.sync(timeout=0), SyncResponse)
        messages = await bob.room_messages(room_id, start=bob.next_batch, limit=3)
        assert isinstance(messages, RoomMessagesResponse), messages
        bodies = [e.body for e in messages.chunk if isinstance(e, RoomMessageText)]
        assert bodies == ["hi alice", "hello 4", "hello 3"]
        older = await bob.room_messages(room_id, start=messages.end, limit=3)
        assert isinstance(older, RoomMessagesResponse)
        assert [e.body for e in older.chunk if isinstance(e, RoomMessageText)] == [
            "hello 2",
            "hello 1",
            "hello 0",
        ]

        # Topic and redaction.
        await alice.room_put_state(room_id, "m.room.topic", {"topic": "second topic"})
        topic = await bob.room_get_state_event(room_id, "m.room.topic")
        assert topic.content["topic"] == "second topic"
        redacted = await alice.room_redact(room_id, sent[0], reason="oops")
        assert redacted.event_id
        event = await bob.room_get_event(room_id, sent[0])
        assert event.event.source["content"] == {}

        # Log out: the token stops working.
        token = bob.access_token
        await bob.logout()
        async with aiohttp.ClientSession() as http:
            resp = await http.get(
                ranvier.client_url + "/_matrix/client/v3/account/whoami",
                headers={"Authorization": f"Bearer {token}"},
            )
            assert resp.status == 401
            assert (await resp.json())["errcode"] == "M_UNKNOWN_TOKEN"
    finally:
        await alice.close()
        await bob.close()


async def test_login_with_password(ranvier: RanvierProcess) -> None:
    alice = await _register(ranvier.client_url, "carol")
    await alice.close()
    client = AsyncClient(ranvier.client_url, "carol")
    try:
        resp = await client.login("correct horse battery staple")
        assert isinstance(resp, LoginResponse), resp
        assert client.user_id.startswith("@carol:")
        bad = AsyncClient(ranvier.client_url, "carol")
        assert not isinstance(await bad.login("wrong"), LoginResponse)
        await bad.close()
    finally:
        await client.close()
