"""Everyday client operations with matrix-nio against a real Ranvier subprocess: typing, receipts, read
markers, account data, profile changes reaching the rooms, /forget, and capabilities; each checked as the
other client sees it through /sync, incremental sync included."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nio import (
    AsyncClient,
    FullyReadEvent,
    ReceiptEvent,
    RegisterResponse,
    RoomCreateResponse,
    RoomMemberEvent,
    RoomSendResponse,
    SyncResponse,
    TypingNoticeEvent,
    UnknownAccountDataEvent,
)

from .ranvier_process import RanvierProcess

V3 = "/_matrix/client/v3"


@pytest.fixture
def ranvier(tmp_path: Path) -> Iterator[RanvierProcess]:
    server = RanvierProcess.create(tmp_path)
    server.start()
    try:
        yield server
    finally:
        assert server.stop() == 0, server.log_tail()


class Pair:
    """Alice and Bob, both joined to one room Alice created."""

    def __init__(self, url: str, alice: AsyncClient, bob: AsyncClient, room_id: str) -> None:
        self.url, self.alice, self.bob, self.room_id = url, alice, bob, room_id
        self.http = aiohttp.ClientSession()

    async def request(self, client: AsyncClient, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {client.access_token}"}
        async with self.http.request(method, self.url + V3 + path, json=body, headers=headers) as resp:
            return resp.status, await resp.json()


async def _register(url: str, name: str) -> AsyncClient:
    client = AsyncClient(url, f"@{name}:ignored")
    resp = await client.register(name, "correct horse battery staple")
    assert isinstance(resp, RegisterResponse), resp
    return client


@pytest.fixture
async def pair(ranvier: RanvierProcess) -> AsyncIterator[Pair]:
    alice = await _register(ranvier.client_url, "alice")
    bob = await _register(ranvier.client_url, "bob")
    created = await alice.room_create(name="ops", invite=[bob.user_id])
    assert isinstance(created, RoomCreateResponse), created
    await bob.join(created.room_id)
    result = Pair(ranvier.client_url, alice, bob, created.room_id)
    try:
        yield result
    finally:
        await result.http.close()
        await alice.close()
        await bob.close()


async def _sync(client: AsyncClient, since: str | None, timeout: int = 0) -> SyncResponse:
    resp = await client.sync(timeout=timeout, since=since)
    assert isinstance(resp, SyncResponse), resp
    return resp


def _ephemeral(sync: SyncResponse, room_id: str) -> list[Any]:
    room = sync.rooms.join.get(room_id)
    return list(room.ephemeral) if room is not None else []


def _receipts(sync: SyncResponse, room_id: str) -> list[tuple[str, str, str]]:
    return [
        (r.user_id, r.receipt_type, r.event_id)
        for e in _ephemeral(sync, room_id)
        if isinstance(e, ReceiptEvent)
        for r in e.receipts
    ]


def _typing(sync: SyncResponse, room_id: str) -> list[list[str]]:
    return [sorted(e.users) for e in _ephemeral(sync, room_id) if isinstance(e, TypingNoticeEvent)]


async def test_typing_receipts_and_read_markers(pair: Pair) -> None:
    alice, bob, room_id = pair.alice, pair.bob, pair.room_id
    since = (await _sync(bob, None)).next_batch
    sent = await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "read me"})
    assert isinstance(sent, RoomSendResponse), sent
    event_id = sent.event_id
    since = (await _sync(bob, since)).next_batch

    # Typing: Bob's long-poll returns with Alice typing, and then with nobody once she stops.
    assert (await alice.room_typing(room_id, True, timeout=20_000)).transport_response.status == 200
    typing_sync = await _sync(bob, since, timeout=10_000)
    assert _typing(typing_sync, room_id) == [[alice.user_id]]
    await alice.room_typing(room_id, False)
    stopped = await _sync(bob, typing_sync.next_batch, timeout=10_000)
    assert _typing(stopped, room_id) == [[]]
    since = stopped.next_batch

    # A public read receipt reaches Bob; an incremental sync after it does not repeat it.
    resp = await alice.update_receipt_marker(room_id, event_id)
    assert resp.transport_response.status == 200
    receipt_sync = await _sync(bob, since, timeout=10_000)
    assert (alice.user_id, "m.read", event_id) in _receipts(receipt_sync, room_id)
    quiet = await _sync(bob, receipt_sync.next_batch)
    assert _receipts(quiet, room_id) == []

    # Bob's read markers: fully-read goes to his room account data, his private receipt to him only.
    resp = await bob.room_read_markers(room_id, fully_read_event=event_id, private_read_event=event_id)
    assert resp.transport_response.status == 200
    bob_sync = await _sync(bob, quiet.next_batch, timeout=10_000)
    assert (bob.user_id, "m.read.private", event_id) in _receipts(bob_sync, room_id)
    fully_read = [e for e in bob_sync.rooms.join[room_id].account_data if isinstance(e, FullyReadEvent)]
    assert [e.event_id for e in fully_read] == [event_id]
    alice_full = await _sync(alice, None)
    assert (bob.user_id, "m.read.private", event_id) not in _receipts(alice_full, room_id)
    assert (alice.user_id, "m.read", event_id) in _receipts(alice_full, room_id)

    # Receipts for unknown events, or rooms one is not in, are refused and store nothing.
    status, body = await pair.request(alice, "POST", f"/rooms/{room_id}/receipt/m.read/$nope", {})
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    outsider = await _register(pair.url, "carol")
    try:
        status, body = await pair.request(outsider, "POST", f"/rooms/{room_id}/receipt/m.read/{event_id}", {})
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
        status, body = await pair.request(
            outsider, "PUT", f"/rooms/{room_id}/typing/{outsider.user_id}", {"typing": True}
        )
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    finally:
        await outsider.close()
    after = await _sync(bob, bob_sync.next_batch)
    assert _receipts(after, room_id) == [] and _typing(after, room_id) == []


async def test_account_data_global_and_per_room(pair: Pair) -> None:
    alice, bob, room_id = pair.alice, pair.bob, pair.room_id
    first = await _sync(alice, None)
    status, _ = await pair.request(
        alice, "PUT", f"/user/{alice.user_id}/account_data/org.example.a", {"n": 1}
    )
    assert status == 200
    status, _ = await pair.request(
        alice, "PUT", f"/user/{alice.user_id}/rooms/{room_id}/account_data/m.tag", {"tags": {"u.work": {}}}
    )
    assert status == 200

    incremental = await _sync(alice, first.next_batch, timeout=10_000)
    unknown = {
        e.type: e.content for e in incremental.account_data_events if isinstance(e, UnknownAccountDataEvent)
    }
    assert unknown == {"org.example.a": {"n": 1}}
    tags = incremental.rooms.join[room_id].account_data
    assert any(getattr(e, "tags", None) == {"u.work": {}} for e in tags), tags
    # Nothing changed since: nothing again.
    quiet = await _sync(alice, incremental.next_batch)
    assert not quiet.account_data_events and room_id not in quiet.rooms.join

    # Reads, and what is refused without changing anything.
    assert await pair.request(alice, "GET", f"/user/{alice.user_id}/account_data/org.example.a") == (
        200,
        {"n": 1},
    )
    status, body = await pair.request(alice, "GET", f"/user/{alice.user_id}/account_data/org.example.none")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    status, body = await pair.request(bob, "GET", f"/user/{alice.user_id}/account_data/org.example.a")
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    status, body = await pair.request(
        bob, "PUT", f"/user/{alice.user_id}/account_data/org.example.a", {"n": 2}
    )
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    status, body = await pair.request(
        alice, "PUT", f"/user/{alice.user_id}/rooms/{room_id}/account_data/m.fully_read", {"event_id": "$x"}
    )
    assert (status, body["errcode"]) == (405, "M_BAD_JSON")
    status, body = await pair.request(
        alice, "GET", f"/user/{alice.user_id}/rooms/not-a-room/account_data/m.tag"
    )
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    unchanged = await _sync(alice, quiet.next_batch)
    assert not unchanged.account_data_events and room_id not in unchanged.rooms.join
    assert await pair.request(alice, "GET", f"/user/{alice.user_id}/account_data/org.example.a") == (
        200,
        {"n": 1},
    )

    # A client holding an old-style token (s<n>) gets the account data once more rather than never.
    old_style = first.next_batch.split("_")[0]
    again = await _sync(alice, old_style)
    assert any(
        isinstance(e, UnknownAccountDataEvent) and e.type == "org.example.a"
        for e in again.account_data_events
    )


async def test_profile_change_updates_membership_in_rooms(pair: Pair) -> None:
    alice, bob, room_id = pair.alice, pair.bob, pair.room_id
    since = (await _sync(bob, None)).next_batch
    assert (await alice.set_displayname("Alice in Wonderland")).transport_response.status == 200
    status, _ = await pair.request(
        alice, "PUT", f"/profile/{alice.user_id}/avatar_url", {"avatar_url": "mxc://x/y"}
    )
    assert status == 200
    seen = await _sync(bob, since, timeout=10_000)
    members = [e for e in seen.rooms.join[room_id].timeline.events if isinstance(e, RoomMemberEvent)]
    assert members and members[-1].state_key == alice.user_id and members[-1].membership == "join"
    status, joined = await pair.request(bob, "GET", f"/rooms/{room_id}/joined_members")
    assert joined["joined"][alice.user_id] == {
        "display_name": "Alice in Wonderland",
        "avatar_url": "mxc://x/y",
    }


async def test_forgotten_room_leaves_sync(pair: Pair) -> None:
    bob, room_id = pair.bob, pair.room_id
    before_leave = (await _sync(bob, None)).next_batch
    await bob.room_leave(room_id)
    assert room_id in (await _sync(bob, before_leave)).rooms.leave
    # Forgetting a joined room is refused; a left one is forgotten and gone from /sync's leave section.
    status, _ = await pair.request(pair.alice, "POST", f"/rooms/{room_id}/forget", {})
    assert status == 400
    assert (await bob.room_forget(room_id)).transport_response.status == 200
    assert room_id not in (await _sync(bob, before_leave)).rooms.leave
    status, _ = await pair.request(bob, "GET", f"/rooms/{room_id}/messages?dir=b")
    assert status == 403  # CS: a forgotten room's history can no longer be retrieved
    # Coming back (the room is invite-only) brings it back.
    assert (await pair.alice.room_invite(room_id, bob.user_id)).transport_response.status == 200
    assert (await bob.join(room_id)).transport_response.status == 200
    assert room_id in (await _sync(bob, before_leave)).rooms.join
    status, _ = await pair.request(bob, "GET", f"/rooms/{room_id}/messages?dir=b")
    assert status == 200


async def test_capabilities(pair: Pair) -> None:
    status, body = await pair.request(pair.alice, "GET", "/capabilities")
    assert status == 200
    caps = body["capabilities"]
    assert caps["m.room_versions"]["default"] == "12"
    assert caps["m.room_versions"]["available"] == {str(v): "stable" for v in range(1, 13)}
    assert caps["m.change_password"] == {"enabled": True}  # POST /account/password exists
    assert caps["m.set_displayname"] == {"enabled": True} and caps["m.set_avatar_url"] == {"enabled": True}
