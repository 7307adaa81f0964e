"""Every room's events are persisted by its persister only, whichever process starts the work (issue 22).

One deployment for the module (main, a client reader, two event persisters; PostgreSQL and Redis) and one
single-process server elsewhere. Every process of the deployment *refuses* to persist a batch of a room it
does not own (``MultiWriterPositions.refuse_foreign``: the persist transaction rolls back), so each test
fails where a path still writes from the process that started it:

* ``createRoom`` on the reader and on main (room versions where we choose the id and where the create event
  derives it) is stored by the new room's persister, and ``/sync`` on the other process shows it;
* a join through another server's alias started on the reader is made by the room's persister, which
  also runs the partial-state resync; every process's set of partial rooms follows (partial after the
  join, complete after the resync), and a request waiting there for the full state is woken;
* ``/messages`` on the reader paging past our join backfills through the room's persister, and the
  older events read the same on main;
* a knock through another server's alias on the reader is made by the room's persister (kept as an
  out-of-band membership of the room), and main's ``/sync`` shows it;
* a hole the persister's intake leaves in a room's timeline (a backlog over the sender's catch-up cap) is
  filled in the background by that persister's gap filler;
* a room deleted through the admin API on main is purged by its persister, and no process keeps serving
  the room from its caches.
"""

from __future__ import annotations

import asyncio
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
from tests.ports import free_port
from tests.scenarios.catchup_helpers import Proxy, in_timeline, start, timeline_status
from tests.scenarios.servers import Client, eventually, fed_port_of, start_server
from tests.workers.configs import worker_config

PERSISTERS = ["persister1", "persister2"]
NAMES = ["main", *PERSISTERS, "reader1"]

pytestmark = pytest.mark.asyncio(loop_scope="module")


def _config(tmp: Path, pg_url: str, redis_url: str, prefix: str, fed_port: int) -> dict[str, Any]:
    instances = {
        "main": {"role": "main", "replication": {"port": free_port()}},
        "reader1": {
            "role": "client_reader",
            "listeners": {"client": {"port": 0}},
            "replication": {"port": free_port()},
        },
        **{p: {"role": "event_persister", "replication": {"port": free_port()}} for p in PERSISTERS},
    }
    workers = {"instances": instances, "event_persisters": PERSISTERS}
    return worker_config(tmp, pg_url, redis_url, prefix, fed_port, workers)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def deployment(
    tmp_path_factory: pytest.TempPathFactory, module_pg_url: str, module_redis_url: str
) -> AsyncIterator[dict[str, Homeserver]]:
    tmp = tmp_path_factory.mktemp("single_writer")
    prefix = f"test_{uuid.uuid4().hex[:12]}"
    config = parse_config(_config(tmp, module_pg_url, module_redis_url, prefix, free_port()))
    started: dict[str, Homeserver] = {}
    try:
        for name in NAMES:
            hs = Homeserver(config, name)
            await hs.start()
            assert hs.worker_runtime is not None and hs.worker_runtime.positions is not None
            # A batch of a room this process does not own rolls back instead of being stored.
            hs.worker_runtime.positions.refuse_foreign = True
            started[name] = hs
        yield started
    finally:
        for hs in reversed(list(started.values())):
            await hs.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def remote(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Homeserver]:
    hs = await start_server(tmp_path_factory.mktemp("remote"), rate_limits={"enabled": False})
    try:
        yield hs
    finally:
        await hs.stop()


def _name(base: str) -> str:
    return f"{base}{uuid.uuid4().hex[:6]}"


def _no_foreign_writes(deployment: dict[str, Homeserver]) -> None:
    for name, hs in deployment.items():
        assert hs.worker_runtime is not None and hs.worker_runtime.positions is not None
        assert not hs.worker_runtime.positions.foreign_writes, (
            name,
            hs.worker_runtime.positions.foreign_writes,
        )


async def _synced_room(client: Client, room_id: str, timeout: float = 30) -> dict[str, Any]:
    """The room's section of ``client``'s incremental /sync, once it has one (joined, invited, knocked)."""
    found: dict[str, Any] = {}

    async def has_it() -> bool:
        answer = await client.sync(timeout_ms=1000)
        for section in ("join", "invite", "knock"):
            room = answer.get("rooms", {}).get(section, {}).get(room_id)
            if room is not None:
                found.update(room, section=section)
                return True
        return False

    await eventually(has_it, timeout=timeout)
    return found


async def test_rooms_created_on_processes_that_do_not_own_them_are_stored_by_their_persister(
    deployment: dict[str, Homeserver],
) -> None:
    main, reader = deployment["main"], deployment["reader1"]
    async with aiohttp.ClientSession() as session:
        alice = await Client.register(session, main, _name("alice"))
        bob = await Client.register(session, main, _name("bob"))
        # Room version 10: the id is ours to choose; 12: derived from the create event.
        for where, other, version in ((reader, main, "10"), (main, reader, "12"), (reader, main, "12")):
            creator = Client(session, where, alice.user_id, alice.token)
            watcher = Client(session, other, alice.user_id, alice.token)
            invitee = Client(session, other, bob.user_id, bob.token)
            await watcher.sync()
            await invitee.sync()
            assert where.replication_client is not None
            before = where.replication_client.counts["built"]
            room_id = await creator.create_room(
                name=f"made on {where.plan.name}", room_version=version, invite=[bob.user_id]
            )
            owner = main.plan.persister_of(room_id)
            assert owner in PERSISTERS and owner != where.plan.name
            # The creation batch was handed to the owner (one request), which stored it.
            assert where.replication_client.counts["built"] == before + 1
            row = await deployment[owner].storage.db.fetchone(
                "SELECT COUNT(*) FROM events WHERE room_id = ? AND type = 'm.room.create'", (room_id,)
            )
            assert row is not None and row[0] == 1
            # /sync on another process: the creator's room with its name, the invitee's invite.
            room = await _synced_room(watcher, room_id)
            events = [*room.get("state", {}).get("events", []), *room.get("timeline", {}).get("events", [])]
            names = [e["content"].get("name") for e in events if e["type"] == "m.room.name"]
            assert names == [f"made on {where.plan.name}"]
            assert (await _synced_room(invitee, room_id))["section"] == "invite"
            # And the room works: bob joins through the process that did not create it.
            await invitee.ok("POST", f"/rooms/{quote(room_id)}/join", {})
            assert (
                bob.user_id in (await creator.ok("GET", f"/rooms/{quote(room_id)}/joined_members"))["joined"]
            )
    _no_foreign_writes(deployment)


async def test_a_join_through_another_servers_alias_on_the_reader_is_made_and_resynced_by_the_persister(
    deployment: dict[str, Homeserver], remote: Homeserver
) -> None:
    main, reader = deployment["main"], deployment["reader1"]
    async with aiohttp.ClientSession() as session:
        carol = await Client.register(session, remote, _name("carol"))
        local = _name("lobby")
        room_id = await carol.create_room(name="elsewhere", room_alias_name=local)
        alias = f"#{local}:{remote.server_name}"
        owner_name = main.plan.persister_of(room_id)
        owner = deployment[owner_name]
        # The resync is held until the test has seen the partial state everywhere.
        release = asyncio.Event()

        async def hold(held_room: str, _server: str) -> None:
            if held_room == room_id:
                await release.wait()

        owner.partial_resync.before_attempt = hold
        try:
            # Every process has loaded its set of partial rooms before the join (a cached set must learn).
            for hs in deployment.values():
                assert not await hs.storage.partial_state.is_partial(room_id)
            alice = await Client.register(session, main, _name("alice"))
            at_reader = Client(session, reader, alice.user_id, alice.token)
            at_main = Client(session, main, alice.user_id, alice.token)
            await at_main.sync()
            assert reader.replication_client is not None
            before = reader.replication_client.counts["remote_membership"]
            answer = await at_reader.ok("POST", f"/join/{quote(alias)}", {})
            assert answer["room_id"] == room_id
            assert reader.replication_client.counts["remote_membership"] == before + 1
            # Joined with partial state, by the owner, which runs the resync; every process knows.
            assert await owner.storage.partial_state.is_partial(room_id)
            for hs in deployment.values():

                async def partial(hs: Homeserver = hs) -> bool:
                    return await hs.storage.partial_state.is_partial(room_id)

                await eventually(partial, timeout=10)
                running = hs.partial_resync._tasks.get(room_id)
                assert (running is not None and not running.done()) == (hs is owner), hs.plan.name
            # A request on the reader that needs the full membership waits for the owner's resync.
            members_task = asyncio.create_task(at_reader.ok("GET", f"/rooms/{quote(room_id)}/joined_members"))
            await asyncio.sleep(0.3)
            assert not members_task.done()
        finally:
            release.set()
        members = await asyncio.wait_for(members_task, 30)
        assert set(members["joined"]) == {alice.user_id, carol.user_id}
        for hs in deployment.values():

            async def complete(hs: Homeserver = hs) -> bool:
                return not await hs.storage.partial_state.is_partial(room_id)

            await eventually(complete, timeout=30)
        owner.partial_resync.before_attempt = None
        # The room lives on: carol's message reaches alice's /sync on main.
        event_id = await carol.send_text(room_id, "welcome")

        async def seen_on_main() -> bool:
            answer = await at_main.sync(timeout_ms=1000)
            timeline = answer.get("rooms", {}).get("join", {}).get(room_id, {}).get("timeline", {})
            return event_id in [e["event_id"] for e in timeline.get("events", [])]

        await eventually(seen_on_main, timeout=30)
    _no_foreign_writes(deployment)


async def test_history_before_our_join_is_backfilled_by_the_rooms_persister(
    deployment: dict[str, Homeserver], remote: Homeserver
) -> None:
    main, reader = deployment["main"], deployment["reader1"]
    async with aiohttp.ClientSession() as session:
        carol = await Client.register(session, remote, _name("carol"))
        local = _name("archive")
        room_id = await carol.create_room(name="old news", room_alias_name=local)
        old = [f"old {i}" for i in range(30)]
        for text in old:
            await carol.send_text(room_id, text)
        alice = await Client.register(session, main, _name("alice"))
        at_reader = Client(session, reader, alice.user_id, alice.token)
        # Joined through main this time (main owns no room either).
        await Client(session, main, alice.user_id, alice.token).ok(
            "POST", f"/join/{quote(f'#{local}:{remote.server_name}')}", {}
        )
        assert reader.replication_client is not None
        before = reader.replication_client.counts["backfill"]

        async def history_on_reader() -> bool:
            texts = await at_reader.texts(room_id)
            return all(t in texts for t in old)

        await eventually(history_on_reader, timeout=60, interval=0.5)
        assert reader.replication_client.counts["backfill"] > before  # paging on the reader: handed over
        at_main = Client(session, main, alice.user_id, alice.token)
        assert [t for t in await at_main.texts(room_id) if t.startswith("old ")] == old
    _no_foreign_writes(deployment)


async def test_a_knock_through_another_servers_alias_on_the_reader_is_kept_by_the_rooms_persister(
    deployment: dict[str, Homeserver], remote: Homeserver
) -> None:
    main, reader = deployment["main"], deployment["reader1"]
    async with aiohttp.ClientSession() as session:
        carol = await Client.register(session, remote, _name("carol"))
        local = _name("door")
        room_id = await carol.create_room(
            name="knock first",
            room_alias_name=local,
            preset="private_chat",
            room_version="10",
            initial_state=[{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}],
        )
        alice = await Client.register(session, main, _name("alice"))
        at_reader = Client(session, reader, alice.user_id, alice.token)
        at_main = Client(session, main, alice.user_id, alice.token)
        await at_main.sync()
        assert reader.replication_client is not None
        before = reader.replication_client.counts["remote_membership"]
        answer = await at_reader.ok(
            "POST", f"/knock/{quote(f'#{local}:{remote.server_name}')}", {"reason": "hi"}
        )
        assert answer["room_id"] == room_id
        assert reader.replication_client.counts["remote_membership"] == before + 1
        assert (await _synced_room(at_main, room_id))["section"] == "knock"
        # The resident has the knock too.
        state = await carol.ok("GET", f"/rooms/{quote(room_id)}/state/m.room.member/{alice.user_id}")
        assert state["membership"] == "knock"
    _no_foreign_writes(deployment)


async def test_a_hole_left_by_the_persisters_intake_is_filled_by_its_gap_filler(
    deployment: dict[str, Homeserver], tmp_path: Path
) -> None:
    main, reader = deployment["main"], deployment["reader1"]
    # A server that reaches us through a proxy that can refuse it, and sends at most 50 events of a
    # room's backlog when it catches up (the receiver fetches 20 more, the rest is a hole).
    proxy = Proxy(free_port(), fed_port_of(main))
    await proxy.open()
    far = await start(
        tmp_path / "far",
        catchup_max_per_room=50,
        host_overrides={main.server_name: f"127.0.0.1:{proxy.port}"},
    )
    try:
        async with aiohttp.ClientSession() as session:
            dave = await Client.register(session, far, _name("dave"))
            room_id = await dave.create_room(name="backlog")
            owner = deployment[main.plan.persister_of(room_id)]
            alice = await Client.register(session, main, _name("alice"))
            at_reader = Client(session, reader, alice.user_id, alice.token)
            await at_reader.ok("POST", f"/join/{quote(room_id)}", {}, server_name=far.server_name)

            async def complete() -> bool:
                return not await owner.storage.partial_state.is_partial(room_id)

            await eventually(complete, timeout=30)
            await proxy.refuse()
            sent = [await dave.send_text(room_id, f"while cut off {i}") for i in range(150)]

            async def far_backs_off() -> bool:
                return await far.storage.outbox.get_retry(main.server_name) is not None

            await eventually(far_backs_off, timeout=20)
            await proxy.heal()
            # Our message reaches the far server, which then knows we are back and sends its backlog.
            await at_reader.send_text(room_id, "back")

            async def all_in() -> bool:
                return await in_timeline(owner, sent)

            await eventually(all_in, timeout=60, interval=0.5)
            statuses = await timeline_status(owner, sent)
            assert list(statuses.values()).count("backfilled") > 0  # there was a hole, and it was filled
            assert await owner.storage.events.get_timeline_gaps(room_id) == {}
    finally:
        await far.stop()
        await proxy.refuse()
    _no_foreign_writes(deployment)


async def test_a_room_upgraded_on_main_is_written_by_both_rooms_persisters(
    deployment: dict[str, Homeserver],
) -> None:
    main, reader = deployment["main"], deployment["reader1"]
    async with aiohttp.ClientSession() as session:
        alice = await Client.register(session, main, _name("alice"))
        bob = await Client.register(session, main, _name("bob"))
        local = _name("upgraded")
        old = await alice.create_room(name="to upgrade", room_version="10", room_alias_name=local)
        await Client(session, main, bob.user_id, bob.token).ok("POST", f"/rooms/{quote(old)}/join", {})
        assert main.replication_client is not None
        before = main.replication_client.counts["built"]
        # Before v12 the tombstone is built before the new room exists (it names the new room's id): the
        # new room's creation and the tombstone are both handed over, each to its room's persister.
        new = (await alice.ok("POST", f"/rooms/{quote(old)}/upgrade", {"new_version": "11"}))[
            "replacement_room"
        ]
        assert main.replication_client.counts["built"] == before + 2
        at_reader = Client(session, reader, alice.user_id, alice.token)
        tombstone = await at_reader.ok("GET", f"/rooms/{quote(old)}/state/m.room.tombstone")
        assert tombstone["replacement_room"] == new
        create = await at_reader.ok("GET", f"/rooms/{quote(new)}/state/m.room.create")
        assert create["predecessor"]["room_id"] == old
        directory = await at_reader.ok("GET", f"/directory/room/{quote(f'#{local}:{main.server_name}')}")
        assert directory["room_id"] == new
    _no_foreign_writes(deployment)


async def test_a_room_deleted_on_main_is_purged_by_its_persister_and_forgotten_everywhere(
    deployment: dict[str, Homeserver],
) -> None:
    main, reader = deployment["main"], deployment["reader1"]
    async with aiohttp.ClientSession() as session:
        admin = await Client.register(session, main, _name("admin"))
        await main.storage.users.set_admin(admin.user_id, True)
        bob = await Client.register(session, main, _name("bob"))
        room_id = await admin.create_room(name="to be deleted", preset="public_chat")
        owner_name = main.plan.persister_of(room_id)
        assert owner_name in PERSISTERS
        at_reader = Client(session, reader, bob.user_id, bob.token)
        await at_reader.ok("POST", f"/rooms/{quote(room_id)}/join", {})
        event_id = await admin.send_text(room_id, "soon gone")
        # Every process caches the room: its current state and the message.
        for hs in deployment.values():
            assert await hs.storage.state.get_current_state_ids(room_id)
            assert await hs.storage.events.get_event(event_id) is not None
        assert main.replication_client is not None
        before = main.replication_client.counts["purge"]
        async with session.delete(
            f"http://127.0.0.1:{main.ports['client']}/_synapse/admin/v1/rooms/{quote(room_id)}",
            json={"purge": True},
            headers={"Authorization": f"Bearer {admin.token}"},
        ) as resp:
            answer = await resp.json()
            assert resp.status == 200, answer
        assert bob.user_id in answer["kicked_users"]
        # The purge was handed to the room's persister (one request), which deleted every row.
        assert main.replication_client.counts["purge"] == before + 1
        row = await main.storage.db.fetchone("SELECT COUNT(*) FROM events WHERE room_id = ?", (room_id,))
        assert row is not None and row[0] == 0
        # Every process forgot the room: nothing answers from a cache any more.
        for hs in deployment.values():

            async def forgotten(hs: Homeserver = hs) -> bool:
                state = await hs.storage.state.get_current_state_ids(room_id)
                return not state and await hs.storage.events.get_event(event_id) is None

            await eventually(forgotten, timeout=10)
    _no_foreign_writes(deployment)
