"""``GET /rooms/{roomId}/timestamp_to_event`` for clients (CS v1.6): the local lookup in both directions,
the errors, and, on a server that joined late, the answer asked of the room's other server and the event
backfilled so the client can read it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from ranvier.app import Homeserver
from ranvier.rooms import timestamps
from tests.scenarios.servers import Client, start_server

PATH = "/_matrix/client/v1/rooms/{}/timestamp_to_event"


async def _lookup(client: Client, room_id: str, **params: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    async with client.session.get(
        f"http://127.0.0.1:{client.hs.ports['client']}" + PATH.format(room_id),
        params=params,
        headers={"Authorization": f"Bearer {client.token}"},
    ) as resp:
        return resp.status, await resp.json()


async def _ts(client: Client, room_id: str, event_id: str) -> int:
    return int((await client.ok("GET", f"/rooms/{room_id}/event/{event_id}"))["origin_server_ts"])


async def test_timestamp_to_event_locally_and_from_the_other_server(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a = await start_server(tmp_path / "a")
    b = await start_server(tmp_path / "b")
    servers += [a, b]
    alice = await Client.register(session, a, "alice")
    bob = await Client.register(session, b, "bob")
    carol = await Client.register(session, a, "carol")
    room_id = await alice.create_room(name="Times")
    ids = []
    for text in ("one", "two", "three"):
        ids.append(await alice.send_text(room_id, text))
        await asyncio.sleep(0.01)  # distinct timestamps
    times = [await _ts(alice, room_id, e) for e in ids]

    assert await _lookup(alice, room_id, ts=str(times[1]), dir="f") == (
        200,
        {"event_id": ids[1], "origin_server_ts": times[1]},
    )
    assert (await _lookup(alice, room_id, ts=str(times[1] + 1), dir="f"))[1]["event_id"] == ids[2]
    assert (await _lookup(alice, room_id, ts=str(times[1] + 1), dir="b"))[1]["event_id"] == ids[1]
    status, body = await _lookup(alice, room_id, ts=str(times[2] + 60_000), dir="f")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND"), body
    for params, errcode in (
        ({"dir": "f"}, "M_MISSING_PARAM"),
        ({"ts": "1"}, "M_MISSING_PARAM"),
        ({"ts": "1", "dir": "x"}, "M_INVALID_PARAM"),
        ({"ts": "soon", "dir": "f"}, "M_INVALID_PARAM"),
    ):
        status, body = await _lookup(alice, room_id, **params)
        assert (status, body["errcode"]) == (400, errcode), (params, body)
    # Not a member (and the history is not world_readable): 403.
    status, body = await _lookup(carol, room_id, ts=str(times[0]), dir="f")
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN"), body

    # Bob's server joins after the messages: it holds none of them, asks a, and backfills the answer.
    await bob.ok("POST", f"/join/{room_id}", {}, server_name=a.server_name)
    status, body = await _lookup(bob, room_id, ts=str(times[1]), dir="b")
    assert (status, body) == (200, {"event_id": ids[1], "origin_server_ts": times[1]})
    event = await bob.ok("GET", f"/rooms/{room_id}/event/{ids[1]}")
    assert event["content"]["body"] == "two"


async def test_both_walks_of_the_timeline(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The walk from the end answers recent times; a time further back than its pages is found by the
    walk from the beginning. With pages of 2 events and one page per walk, the last two messages are the
    first walk's and the room's first two events (its create event and the creator's join) the second's."""
    monkeypatch.setattr(timestamps, "PAGE_SIZE", 2)
    monkeypatch.setattr(timestamps, "MAX_TIMESTAMP_PAGES", 1)
    a = await start_server(tmp_path / "a")
    servers.append(a)
    alice = await Client.register(session, a, "alice")
    room_id = await alice.create_room(name="Long")
    await asyncio.sleep(0.01)
    ids = []
    for i in range(6):
        ids.append(await alice.send_text(room_id, f"m{i}"))
        await asyncio.sleep(0.01)
    times = [await _ts(alice, room_id, e) for e in ids]
    for i in (4, 5):
        for direction in ("f", "b"):
            status, body = await _lookup(alice, room_id, ts=str(times[i]), dir=direction)
            assert (status, body.get("event_id")) == (200, ids[i]), (i, direction, body)
        assert (await _lookup(alice, room_id, ts=str(times[i] - 1), dir="f"))[1]["event_id"] == ids[i]
        assert (await _lookup(alice, room_id, ts=str(times[i] + 1), dir="b"))[1]["event_id"] == ids[i]

    state = {e["type"]: e for e in await alice.ok("GET", f"/rooms/{room_id}/state")}
    create = state["m.room.create"]
    status, body = await _lookup(alice, room_id, ts=str(create["origin_server_ts"]), dir="f")
    assert (status, body.get("event_id")) == (200, create["event_id"]), body
    status, body = await _lookup(alice, room_id, ts=str(create["origin_server_ts"]), dir="b")
    assert status == 200 and body["origin_server_ts"] == create["origin_server_ts"], body
