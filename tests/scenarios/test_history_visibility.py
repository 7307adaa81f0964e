"""History visibility applied (CS module "Room History Visibility"): what a user may read through /messages,
/context and /event, and what another server gets through /backfill."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ranvier.app import Homeserver

from .servers import Client, start_server
from .test_backfill import history


def hv(setting: str) -> dict[str, Any]:
    return {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": setting}}


def bodies(events: list[dict[str, Any]]) -> list[str]:
    return [e["content"].get("body") for e in events if e["type"] == "m.room.message"]


async def status_of(client: Client, path: str, **params: Any) -> int:
    return (await client.call("GET", path, **params))[0]


@pytest.mark.parametrize("setting", ["joined", "shared"])
async def test_history_before_joining_is_seen_per_the_setting(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession, setting: str
) -> None:
    a = await start_server(tmp_path / "a")
    servers.append(a)
    alice = await Client.register(session, a, "alice")
    bob = await Client.register(session, a, "bob")
    room_id = await alice.create_room(initial_state=[hv(setting)])
    early = [await alice.send_text(room_id, f"before {i}") for i in range(3)]
    await bob.ok("POST", f"/join/{room_id}", {})
    late = await alice.send_text(room_id, "after")

    # A page size smaller than the hidden stretch: paging on must still get past it.
    seen = bodies(await history(bob, room_id, limit=2))
    hidden = setting == "joined"
    assert seen == (["after"] if hidden else ["before 0", "before 1", "before 2", "after"])
    expected = 404 if hidden else 200
    for event_id in early:
        assert await status_of(bob, f"/rooms/{room_id}/event/{event_id}") == expected
        assert await status_of(bob, f"/rooms/{room_id}/context/{event_id}") == expected
    assert await status_of(bob, f"/rooms/{room_id}/event/{late}") == 200
    context = await bob.ok("GET", f"/rooms/{room_id}/context/{late}", limit="10")
    assert bodies(context["events_before"]) == ([] if hidden else ["before 2", "before 1", "before 0"])
    # Bob's own join is his to see either way (own membership: "before *or* after").
    assert any(
        e["type"] == "m.room.member" and e["state_key"] == bob.user_id for e in await bob.messages(room_id)
    )
    # Alice was there all along.
    assert bodies(await history(alice, room_id, limit=50)) == ["before 0", "before 1", "before 2", "after"]


async def test_after_leaving_nothing_after_the_leave(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a = await start_server(tmp_path / "a")
    servers.append(a)
    alice = await Client.register(session, a, "alice")
    bob = await Client.register(session, a, "bob")
    room_id = await alice.create_room(initial_state=[hv("shared")])
    await alice.send_text(room_id, "before bob")
    await bob.ok("POST", f"/join/{room_id}", {})
    await alice.send_text(room_id, "while bob is here")
    await bob.ok("POST", f"/rooms/{room_id}/leave", {})
    gone = await alice.send_text(room_id, "after bob left")

    # What he could see before he left stays visible (shared: he joined after "before bob").
    assert bodies(await history(bob, room_id, limit=3)) == ["before bob", "while bob is here"]
    assert await status_of(bob, f"/rooms/{room_id}/event/{gone}") == 404
    assert await status_of(bob, f"/rooms/{room_id}/context/{gone}") == 404


async def test_world_readable_room_is_read_without_joining(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a = await start_server(tmp_path / "a")
    servers.append(a)
    alice = await Client.register(session, a, "alice")
    carol = await Client.register(session, a, "carol")
    room_id = await alice.create_room(initial_state=[hv("joined")])
    await alice.send_text(room_id, "members only")
    await alice.ok(
        "PUT", f"/rooms/{room_id}/state/m.room.history_visibility", {"history_visibility": "world_readable"}
    )
    public = await alice.send_text(room_id, "for everyone")

    # CS "Room Previews": a non-member reads only what was world_readable when it was sent.
    assert bodies(await carol.messages(room_id)) == ["for everyone"]
    assert await status_of(carol, f"/rooms/{room_id}/event/{public}") == 200


async def test_backfill_redacts_what_the_asking_server_may_not_see(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a = await start_server(tmp_path / "a")
    b = await start_server(tmp_path / "b")
    servers += [a, b]
    alice = await Client.register(session, a, "alice")
    bob = await Client.register(session, b, "bob")
    room_id = await alice.create_room(initial_state=[hv("joined")])
    secrets = [await alice.send_text(room_id, f"secret {i}") for i in range(3)]
    await bob.ok("POST", f"/join/{room_id}", {}, server_name=a.server_name)
    await alice.send_text(room_id, "hello bob")

    # a answers b's /backfill with the events before Bob joined redacted: the DAG stays whole.
    latest = (await a.storage.events.get_forward_extremities(room_id))[0]
    answer = await a.federation_reads.backfill(b.server_name, room_id, [latest], 100)
    messages = [p["content"] for p in answer["pdus"] if p["type"] == "m.room.message"]
    assert sorted(messages, key=len) == [{}, {}, {}, {"msgtype": "m.text", "body": "hello bob"}]
    # /event and /get_missing_events answer the same way.
    single = await a.federation_reads.get_event(b.server_name, secrets[0])
    assert single["pdus"][0]["content"] == {}
    missing = await a.federation_reads.missing_events(b.server_name, room_id, [], [latest], 20, 0)
    assert [p["content"] for p in missing["events"] if p["type"] == "m.room.message"][:3] == [{}, {}, {}]
    # The m.room.create event and the like are visible (membership-independent content is kept anyway).
    create = next(p for p in answer["pdus"] if p["type"] == "m.room.create")
    assert create["content"]

    # End to end: Bob pages back past his join; b backfills and keeps only the redacted copies.
    assert bodies(await history(bob, room_id, limit=3)) == ["hello bob"]
    for event_id in secrets:
        held = await b.storage.events.get_event(event_id)
        assert held is not None and held.content == {}
