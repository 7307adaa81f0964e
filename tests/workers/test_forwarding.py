"""Several real ``Homeserver`` processes' worth in one test process, on one PostgreSQL database and Redis:
main, a client reader and two event persisters.

* room writes that reach the reader are persisted by the room's persister (stable hash), and the answer
  comes after the commit: the event is in the database when the client gets its id;
* a long-polling ``/sync`` on the reader wakes on a write persisted by another process;
* with both persisters writing concurrently, every acknowledged event reaches the reader's ``/sync`` and
  the reader's tokens never skip one (the multi-writer positions);
* typing set on one process shows in the reader's ``/sync`` (typing is replicated, not stored).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import pytest_asyncio

from ranvier.app import Homeserver
from ranvier.config import parse_config
from ranvier.workers.event_forwarding import MEMBERSHIP_PATH, SEND_EVENT_PATH
from ranvier.workers.presence import PRESENCE_PATH
from ranvier.workers.replication_http import PDUS_PATH
from ranvier.workers.roles import pick
from tests.ports import free_port
from tests.scenarios.servers import Client, eventually
from tests.workers.configs import worker_config

PERSISTERS = ["persister1", "persister2"]


def _config(tmp: Path, pg_url: str, redis_url: str, prefix: str, fed_port: int) -> dict[str, Any]:
    instances = {
        "main": {"role": "main", "replication": {"port": free_port()}},
        "reader1": {"role": "client_reader", "listeners": {"client": {"port": 0}}},
        **{p: {"role": "event_persister", "replication": {"port": free_port()}} for p in PERSISTERS},
    }
    workers = {"instances": instances, "event_persisters": PERSISTERS}
    return worker_config(tmp, pg_url, redis_url, prefix, fed_port, workers)


pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def deployment(
    tmp_path_factory: pytest.TempPathFactory, module_pg_url: str, module_redis_url: str
) -> AsyncIterator[dict[str, Homeserver]]:
    """One deployment for the module (starting four processes' worth takes seconds); each test registers
    its own users."""
    tmp = tmp_path_factory.mktemp("workers")
    prefix = f"test_{uuid.uuid4().hex[:12]}"
    config = parse_config(_config(tmp, module_pg_url, module_redis_url, prefix, free_port()))
    started: dict[str, Homeserver] = {}
    try:
        # The signing key is created by the first process; the others read the same file.
        for name in ["main", *PERSISTERS, "reader1"]:
            hs = Homeserver(config, name)
            await hs.start()
            started[name] = hs
        yield started
    finally:
        for hs in reversed(list(started.values())):
            await hs.stop()


def _name(base: str) -> str:
    return f"{base}{uuid.uuid4().hex[:6]}"


async def _rooms_on_both_persisters(client: Client) -> list[str]:
    """Rooms created until each persister owns at least one (the hash decides; usually two or three)."""
    rooms: list[str] = []
    while {pick(PERSISTERS, r) for r in rooms} != set(PERSISTERS):
        assert len(rooms) < 40, "the hash never chose one of the persisters"
        rooms.append(await client.create_room(name=f"room {len(rooms)}"))
    return rooms


def _room_for(persister: str, rooms: list[str]) -> str:
    return next(r for r in rooms if pick(PERSISTERS, r) == persister)


async def test_writes_go_to_the_rooms_persister_and_sync_wakes_across_processes(
    deployment: dict[str, Homeserver],
) -> None:
    main, reader = deployment["main"], deployment["reader1"]
    async with aiohttp.ClientSession() as session:
        alice = await Client.register(session, main, _name("alice"))
        rooms = await _rooms_on_both_persisters(alice)
        at_reader = Client(session, reader, alice.user_id, alice.token)
        for _ in range(3):  # past the presence change the first /sync itself causes
            await at_reader.sync(timeout_ms=300)

        async def until_seen(room_id: str, event_id: str) -> None:
            # Long-polls of a minute: only a wake-up from the bus brings the event within the test's wait.
            while True:
                answer = await at_reader.sync(timeout_ms=60_000)
                room = answer.get("rooms", {}).get("join", {}).get(room_id, {})
                if event_id in [e["event_id"] for e in room.get("timeline", {}).get("events", [])]:
                    return

        for persister in PERSISTERS:
            room_id = _room_for(persister, rooms)
            sent: asyncio.Future[str] = asyncio.get_running_loop().create_future()

            async def parked(room_id: str, sent: asyncio.Future[str]) -> None:
                await until_seen(room_id, await sent)

            waiting = asyncio.create_task(parked(room_id, sent))
            await asyncio.sleep(0.2)  # the long-poll is parked
            sent_at = time.monotonic()
            event_id = await at_reader.send_text(room_id, f"to {persister}")
            sent.set_result(event_id)
            # Acknowledged means committed, by the persister: the row is there.
            row = await deployment[persister].storage.db.fetchone(
                "SELECT room_id FROM events WHERE event_id = ?", (event_id,)
            )
            assert row is not None and row[0] == room_id
            await asyncio.wait_for(waiting, 30)
            woke_after = time.monotonic() - sent_at
            # Figures go to bench/, not assertions: printed for the curious.
            print(f"{persister}: /sync on the reader returned {woke_after * 1000:.1f} ms after the send")
        assert reader.replication_client is not None and reader.replication_client.counts["request"] >= 2
        # Reads on the reader see what the persisters wrote.
        for persister in PERSISTERS:
            assert f"to {persister}" in await at_reader.texts(_room_for(persister, rooms))


async def test_concurrent_writers_every_acknowledged_event_reaches_sync_in_order(
    deployment: dict[str, Homeserver],
) -> None:
    main, reader = deployment["main"], deployment["reader1"]
    async with aiohttp.ClientSession() as session:
        alice = await Client.register(session, main, _name("alice"))
        rooms = await _rooms_on_both_persisters(alice)
        room_a, room_b = _room_for("persister1", rooms), _room_for("persister2", rooms)
        at_reader = Client(session, reader, alice.user_id, alice.token)
        await at_reader.sync()
        seen: list[str] = []
        tokens: list[int] = []
        acknowledged: list[str] = []
        done = asyncio.Event()

        async def follow() -> None:
            while not done.is_set() or not set(acknowledged) <= set(seen):
                answer = await at_reader.sync(timeout_ms=2_000)
                tokens.append(int(answer["next_batch"].split("_")[0].lstrip("s")))
                for room in answer.get("rooms", {}).get("join", {}).values():
                    seen.extend(e["event_id"] for e in room["timeline"]["events"])

        async def send(room_id: str, n: int) -> None:
            for i in range(n):
                acknowledged.append(await at_reader.send_text(room_id, f"m{i}"))

        follower = asyncio.create_task(follow())
        await asyncio.gather(send(room_a, 15), send(room_b, 15), send(room_a, 10), send(room_b, 10))
        done.set()
        await asyncio.wait_for(follower, 30)
        assert set(acknowledged) <= set(seen)
        assert len(seen) == len(set(seen)), "an event came twice"
        assert tokens == sorted(tokens)


async def test_typing_on_one_process_shows_in_the_readers_sync(deployment: dict[str, Homeserver]) -> None:
    main, reader = deployment["main"], deployment["reader1"]
    async with aiohttp.ClientSession() as session:
        alice = await Client.register(session, main, _name("alice"))
        room_id = await alice.create_room()
        at_reader = Client(session, reader, alice.user_id, alice.token)
        await at_reader.sync()
        await alice.ok("PUT", f"/rooms/{room_id}/typing/{alice.user_id}", {"typing": True, "timeout": 30_000})

        async def typing_seen() -> bool:
            answer = await at_reader.sync(timeout_ms=1_000)
            room = answer.get("rooms", {}).get("join", {}).get(room_id, {})
            return any(
                e["type"] == "m.typing" and alice.user_id in e["content"]["user_ids"]
                for e in room.get("ephemeral", {}).get("events", [])
            )

        await eventually(typing_seen, timeout=15)


async def test_presence_set_on_a_reader_is_applied_by_the_owner(deployment: dict[str, Homeserver]) -> None:
    main, reader = deployment["main"], deployment["reader1"]
    assert main.plan.background and not reader.plan.background  # main owns presence here
    async with aiohttp.ClientSession() as session:
        alice = await Client.register(session, main, _name("alice"))
        at_reader = Client(session, reader, alice.user_id, alice.token)
        path = f"/presence/{alice.user_id}/status"
        await at_reader.ok("PUT", path, {"presence": "unavailable", "status_msg": "lunch"})
        # Applied by the owner before the PUT was answered, as in one process.
        answer = await alice.ok("GET", path)
        assert answer["presence"] == "unavailable" and answer.get("status_msg") == "lunch"
        # A /sync on the reader (online by default) counts with the owner before it runs.
        await at_reader.sync()
        for client in (alice, at_reader):
            assert (await client.ok("GET", path))["presence"] == "online"
        # The facts behind it (devices' states, who is syncing) are the owner's alone: timeouts run there.
        assert alice.user_id in main.presence._devices
        assert not reader.presence._devices and not reader.presence._states


async def test_account_data_written_on_main_wakes_a_sync_parked_on_the_reader(
    deployment: dict[str, Homeserver],
) -> None:
    main, reader = deployment["main"], deployment["reader1"]
    async with aiohttp.ClientSession() as session:
        alice = await Client.register(session, main, _name("alice"))
        at_reader = Client(session, reader, alice.user_id, alice.token)
        for _ in range(3):  # past the presence change the first /sync itself causes
            await at_reader.sync(timeout_ms=300)

        async def until_settings() -> dict[str, Any]:
            # Long-polls of a minute: only a wake-up from the bus brings the change within the test's wait.
            while True:
                answer = await at_reader.sync(timeout_ms=60_000)
                for event in answer.get("account_data", {}).get("events", []):
                    if event["type"] == "org.example.settings":
                        return dict(event["content"])

        parked = asyncio.create_task(until_settings())
        await asyncio.sleep(0.3)
        await alice.ok("PUT", f"/user/{alice.user_id}/account_data/org.example.settings", {"theme": "dark"})
        assert await asyncio.wait_for(parked, 30) == {"theme": "dark"}


async def test_member_events_of_a_profile_change_on_main_are_sent_by_the_rooms_persisters(
    deployment: dict[str, Homeserver],
) -> None:
    main, reader = deployment["main"], deployment["reader1"]
    async with aiohttp.ClientSession() as session:
        alice = await Client.register(session, main, _name("alice"))
        rooms = [await alice.create_room(name=f"room {i}") for i in range(4)]
        assert main.replication_client is not None
        before = main.replication_client.counts["event"]
        # Main persists no room here: each room's new member event is handed to the room's persister.
        await alice.ok("PUT", f"/profile/{alice.user_id}/displayname", {"displayname": "Alice B."})
        assert main.replication_client.counts["event"] - before == len(rooms)
        at_reader = Client(session, reader, alice.user_id, alice.token)
        for room_id in rooms:
            state = await at_reader.ok("GET", f"/rooms/{room_id}/state/m.room.member/{alice.user_id}")
            assert state["displayname"] == "Alice B."


async def test_a_join_by_one_of_our_aliases_on_the_reader_goes_to_the_rooms_persister(
    deployment: dict[str, Homeserver],
) -> None:
    main, reader = deployment["main"], deployment["reader1"]
    async with aiohttp.ClientSession() as session:
        alice = await Client.register(session, main, _name("alice"))
        bob = await Client.register(session, main, _name("bob"))
        local = _name("lobby")
        room_id = await alice.create_room(room_alias_name=local)
        alias = f"#{local}:{main.server_name}"
        assert reader.replication_client is not None
        before = reader.replication_client.counts["request"]
        at_reader = Client(session, reader, bob.user_id, bob.token)
        answer = await at_reader.ok("POST", f"/join/{quote(alias)}", {})
        assert answer["room_id"] == room_id
        assert reader.replication_client.counts["request"] == before + 1  # handed to the persister
        members = await alice.ok("GET", f"/rooms/{room_id}/joined_members")
        assert bob.user_id in members["joined"]


async def test_internal_routes_want_the_secret_and_a_json_object(deployment: dict[str, Homeserver]) -> None:
    """Every route between our processes refuses a caller without ``workers.secret`` (403) and a body that
    is not a JSON object (400), and changes nothing then."""
    main = deployment["main"]
    workers = main.config.workers
    assert workers is not None
    secret = workers.secret

    def url(instance: str, path: str) -> str:
        listener = workers.instances[instance].replication
        assert listener is not None
        return f"http://127.0.0.1:{listener.port}{path}"

    targets = [
        url("persister1", PDUS_PATH),
        url("persister1", SEND_EVENT_PATH),
        url("persister1", MEMBERSHIP_PATH),
        url("main", PRESENCE_PATH),
    ]
    async with aiohttp.ClientSession() as session:
        for target in targets:
            for headers in ({}, {"Authorization": "Bearer " + "0" * len(secret)}):
                async with session.post(target, json={"origin": "x", "pdus": []}, headers=headers) as resp:
                    assert resp.status == 403, target
                    assert (await resp.json())["errcode"] == "M_FORBIDDEN"
            good = {"Authorization": f"Bearer {secret}"}
            async with session.post(target, data=b"{not json", headers=good) as resp:
                assert resp.status == 400 and (await resp.json())["errcode"] == "M_NOT_JSON", target
            async with session.post(target, json=["a", "list"], headers=good) as resp:
                assert resp.status == 400 and (await resp.json())["errcode"] == "M_BAD_JSON", target
