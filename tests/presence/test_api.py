"""Presence through the client API of one in-process server (CS "Presence", "/sync"): GET/PUT
/presence/{userId}/status and who may read it, the ``presence`` section of /sync (initial, incremental,
long-polling, filters, ``set_presence``), the idle and offline timeouts run by the service's timer (on a
clock the test moves), activity bringing an idle user back, and ``presence.enabled: false``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp

from ranvier.app import Homeserver
from ranvier.clock import now_ms
from tests.scenarios.servers import Client, fed_port_of, start_server


def presence_of(body: dict[str, Any], user_id: str) -> list[dict[str, Any]]:
    return [e["content"] for e in body["presence"]["events"] if e["sender"] == user_id]


async def sync(client: Client, **params: str) -> dict[str, Any]:
    """A sync that does not change the syncing user's own presence, continuing from ``client.since``."""
    query = {"timeout": "0", "set_presence": "offline", **params}
    if client.since and "since" not in params:
        query["since"] = client.since
    body = await client.ok("GET", "/sync", **query)
    client.since = body["next_batch"]
    return dict(body)


async def test_status_endpoints_and_who_may_read(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    hs = await start_server(tmp_path / "a")
    servers.append(hs)
    alice = await Client.register(session, hs, "alice")
    bob = await Client.register(session, hs, "bob")
    carol = await Client.register(session, hs, "carol")  # shares no room with alice
    room = await alice.create_room()
    await bob.ok("POST", f"/join/{room}", {})

    status = f"/presence/{alice.user_id}/status"
    assert await alice.ok("PUT", status, {"presence": "online", "status_msg": "at lunch"}) == {}
    seen = await bob.ok("GET", status)
    assert seen["presence"] == "online" and seen["status_msg"] == "at lunch"
    assert seen["currently_active"] is True and seen["last_active_ago"] >= 0
    assert (await alice.ok("GET", status))["presence"] == "online"
    code, err = await carol.call("GET", status)
    assert code == 403 and err["errcode"] == "M_FORBIDDEN"
    # A user who never set anything reads as offline (to those who may see them).
    assert await alice.ok("GET", f"/presence/{bob.user_id}/status") == {"presence": "offline"}

    # Only one's own; the spec's states only; a string status.
    code, err = await alice.call("PUT", f"/presence/{bob.user_id}/status", {"presence": "online"})
    assert code == 403 and err["errcode"] == "M_FORBIDDEN"
    for body, errcode in (
        ({}, "M_MISSING_PARAM"),
        ({"presence": "away"}, "M_INVALID_PARAM"),
        ({"presence": 1}, "M_INVALID_PARAM"),
        ({"presence": "online", "status_msg": 5}, "M_BAD_JSON"),
        ({"presence": "online", "status_msg": "x" * 5000}, "M_INVALID_PARAM"),
    ):
        code, err = await alice.call("PUT", status, body)
        assert (code, err["errcode"]) == (400, errcode), body
    code, err = await alice.call("GET", "/presence/not-a-user/status")
    assert (code, err["errcode"]) == (400, "M_INVALID_PARAM")
    code, _ = await alice.call("PUT", status, None)
    assert code == 400

    # Clearing the status message: a PUT without one replaces it.
    await alice.ok("PUT", status, {"presence": "unavailable"})
    seen = await bob.ok("GET", status)
    assert seen["presence"] == "unavailable" and "status_msg" not in seen and "currently_active" not in seen


async def test_sync_presence_section(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    hs = await start_server(tmp_path / "a")
    servers.append(hs)
    alice = await Client.register(session, hs, "alice")
    bob = await Client.register(session, hs, "bob")
    carol = await Client.register(session, hs, "carol")
    room = await alice.create_room()
    await bob.ok("POST", f"/join/{room}", {})
    await alice.ok("PUT", f"/presence/{alice.user_id}/status", {"presence": "online", "status_msg": "hi"})
    await carol.ok("PUT", f"/presence/{carol.user_id}/status", {"presence": "online"})

    # Initial sync: those sharing a room (not carol); offline users are left out.
    first = await sync(bob)
    assert [c["presence"] for c in presence_of(first, alice.user_id)] == ["online"]
    assert presence_of(first, alice.user_id)[0]["status_msg"] == "hi"
    assert presence_of(first, carol.user_id) == [] and presence_of(first, bob.user_id) == []

    # Incremental: only what changed since the token.
    assert (await sync(bob))["presence"]["events"] == []
    await carol.ok("PUT", f"/presence/{carol.user_id}/status", {"presence": "unavailable"})
    await alice.ok("PUT", f"/presence/{alice.user_id}/status", {"presence": "unavailable"})
    changed = await sync(bob)
    assert [c["presence"] for c in presence_of(changed, alice.user_id)] == ["unavailable"]
    assert presence_of(changed, carol.user_id) == []

    # A long-poll wakes for a presence change.
    waiting = asyncio.create_task(sync(bob, timeout="20000"))
    await asyncio.sleep(0.2)
    await alice.ok("PUT", f"/presence/{alice.user_id}/status", {"presence": "online"})
    woken = await asyncio.wait_for(waiting, 15)
    assert [c["presence"] for c in presence_of(woken, alice.user_id)] == ["online"]

    # The filter's presence part (inline, or uploaded and named by id).
    hidden = await sync(bob, since="", filter=json.dumps({"presence": {"not_types": ["m.presence"]}}))
    assert hidden["presence"]["events"] == []
    uploaded = await bob.ok("POST", f"/user/{bob.user_id}/filter", {"presence": {"senders": [carol.user_id]}})
    assert (await sync(bob, since="", filter=uploaded["filter_id"]))["presence"]["events"] == []
    kept = await sync(bob, since="", filter=json.dumps({"presence": {"senders": [alice.user_id]}}))
    assert len(presence_of(kept, alice.user_id)) == 1

    # Users newly sharing a room: their state comes with the sync that shows the join (as Synapse), even
    # though it changed before (when the syncing user was not allowed to see it).
    erin = await Client.register(session, hs, "erin")
    await erin.ok("PUT", f"/presence/{erin.user_id}/status", {"presence": "online", "status_msg": "new"})
    assert presence_of(await sync(bob), erin.user_id) == []
    await erin.ok("POST", f"/join/{room}", {})
    joined = await sync(bob)
    assert [c.get("status_msg") for c in presence_of(joined, erin.user_id)] == ["new"]
    other_room = await erin.create_room()
    await sync(bob)
    await bob.ok("POST", f"/join/{other_room}", {})
    assert [c["presence"] for c in presence_of(await sync(bob), erin.user_id)] == ["online"]

    # set_presence on /sync: the syncing user's own state, in their own sync too.
    dave = await Client.register(session, hs, "dave")
    await dave.ok("POST", f"/join/{room}", {})
    own = await dave.ok("GET", "/sync", timeout="0", set_presence="unavailable")
    assert [c["presence"] for c in presence_of(own, dave.user_id)] == ["unavailable"]
    assert (await bob.ok("GET", f"/presence/{dave.user_id}/status"))["presence"] == "unavailable"
    await dave.ok("GET", "/sync", timeout="0")  # the default is online
    assert (await bob.ok("GET", f"/presence/{dave.user_id}/status"))["presence"] == "online"
    code, err = await dave.call("GET", "/sync", timeout="0", set_presence="away")
    assert (code, err["errcode"]) == (400, "M_INVALID_PARAM")


async def test_idle_and_offline_timeouts(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    hs = await start_server(tmp_path / "a")
    servers.append(hs)
    clock = [now_ms()]
    hs.presence._clock_ms = lambda: clock[0]
    alice = await Client.register(session, hs, "alice")
    bob = await Client.register(session, hs, "bob")
    room = await alice.create_room()
    await bob.ok("POST", f"/join/{room}", {})
    await sync(bob)

    async def state_of(user: str) -> str:
        return str((await bob.ok("GET", f"/presence/{user}/status"))["presence"])

    # Alice's client keeps long-polling (which makes her online) while she does nothing for five minutes.
    # Each poll returns when something changes for her (her own presence too) and the client polls again.
    await alice.sync()
    polling: asyncio.Task[Any] | None = None

    async def keep_polling() -> None:
        nonlocal polling
        if polling is not None and polling.done():
            alice.since = (await polling)["next_batch"]
            polling = None
        if polling is None:
            polling = asyncio.create_task(alice.ok("GET", "/sync", timeout="60000", since=alice.since))
        for _ in range(200):
            if alice.user_id in hs.presence._syncing:
                return
            await asyncio.sleep(0.02)
        raise AssertionError("alice's /sync did not start")

    async def tick(ms: int) -> None:
        await keep_polling()
        clock[0] += ms
        await hs.presence.handle_timeouts()
        await asyncio.sleep(0.1)  # her poll may return with the change; the client polls again
        await keep_polling()

    await keep_polling()
    assert await state_of(alice.user_id) == "online"
    await tick(4 * 60_000)
    assert await state_of(alice.user_id) == "online"  # still not idle
    await tick(60_001)
    # CS "Idle timeout"; polling on with set_presence=online is not activity (CS "Last active ago").
    assert await state_of(alice.user_id) == "unavailable"
    await tick(1000)
    assert await state_of(alice.user_id) == "unavailable"
    # Sending a message is activity: online again.
    await alice.send_text(room, "back")
    assert await state_of(alice.user_id) == "online"
    assert polling is not None
    await asyncio.wait_for(polling, 15)

    # Her sync has ended; thirty seconds later she is offline.
    clock[0] += 30_000
    await hs.presence.handle_timeouts()
    assert await state_of(alice.user_id) == "online"
    clock[0] += 1
    await hs.presence.handle_timeouts()
    assert await state_of(alice.user_id) == "offline"
    seen = [c["presence"] for c in presence_of(await sync(bob), alice.user_id)]
    assert seen == ["offline"]  # the latest state of each user since the token


async def test_presence_disabled(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    hs = await start_server(tmp_path / "a", extra={"presence": {"enabled": False}})
    servers.append(hs)
    alice = await Client.register(session, hs, "alice")
    bob = await Client.register(session, hs, "bob")
    room = await alice.create_room()
    await bob.ok("POST", f"/join/{room}", {})
    assert await alice.ok("PUT", f"/presence/{alice.user_id}/status", {"presence": "online"}) == {}
    code, _ = await alice.call("PUT", f"/presence/{alice.user_id}/status", {"presence": "away"})
    assert code == 400  # still checked
    assert await bob.ok("GET", f"/presence/{alice.user_id}/status") == {"presence": "offline"}
    await alice.ok("GET", "/sync", timeout="0", set_presence="online")
    assert (await sync(bob))["presence"]["events"] == []
    assert await hs.presence_store.max_position() == 0  # nothing was stored


async def test_states_survive_a_restart(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    hs = await start_server(tmp_path / "a")
    alice = await Client.register(session, hs, "alice")
    bob = await Client.register(session, hs, "bob")
    room = await alice.create_room()
    await bob.ok("POST", f"/join/{room}", {})
    await alice.ok("PUT", f"/presence/{alice.user_id}/status", {"presence": "unavailable", "status_msg": "x"})
    await bob.ok("PUT", f"/presence/{bob.user_id}/status", {"presence": "online"})
    await hs.stop()
    again = await start_server(tmp_path / "a", fed_port=fed_port_of(hs))
    servers.append(again)
    alice.hs = bob.hs = again
    alice.base = bob.base = f"http://127.0.0.1:{again.ports['client']}/_matrix/client/v3"
    seen = await bob.ok("GET", f"/presence/{alice.user_id}/status")
    assert seen["presence"] == "unavailable" and seen["status_msg"] == "x"
    # Loaded for the timer: Bob, online with no client syncing since the restart, goes offline after the
    # sync timeout (the restart counts as his last sync).
    assert (await again.presence.get_state(bob.user_id)).state == "online"
    later = now_ms() + again.presence.timeouts.offline_ms + 1000
    again.presence._clock_ms = lambda: later
    await again.presence.handle_timeouts()
    assert (await alice.ok("GET", f"/presence/{bob.user_id}/status"))["presence"] == "offline"
