"""A real multi-process deployment (issue 22): main + 2 client readers + 2 event persisters + 2 federation
senders (the issue's), + 1 inbound federation worker + 1 media worker, as subprocesses on a fresh PostgreSQL
database and Redis, behind the routing proxy that routes by ranvier/workers/routing.py
(tests/workers/deployment.py). One deployment for the module:

- every route a Ranvier process registers is served by the process the routing table sends it to;
- the client flow through the proxy: register, create a room, join, send, /sync, /messages; a /sync
  long-poll parked on one reader wakes on a message written through the other reader;
- (the client test suites and federation scenarios run through deployments of their own:
  tests/workers/test_suites_through_workers.py);
- real nginx with the generated routing file sends each request to the process the table names;
- federation with a single-process Ranvier server (in this test process): joins and messages both ways;
- SIGKILL of one process of each of the issue's roles in turn (main, a reader, a persister, a sender) under a
  send load (the remote user sending as well, through the inbound worker): every acknowledged event is in
  every process's /messages and on the remote server, each exactly once, and /state and the timeline are the
  same on every process. ``RANVIER_LONG=1`` kills every instance, in three rounds.

PostgreSQL and Redis unreachable: skipped with the reason, except under CI, where that fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from ranvier.app import Homeserver
from ranvier.workers.roles import pick
from ranvier.workers.routing import instance_role, role_for
from tests.ports import free_port
from tests.scenarios.servers import start_single_server

from .deployment import ISSUE_LAYOUT, Deployment, services_problem, single_process, unrecognized

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(900)]

LONG = os.environ.get("RANVIER_LONG") == "1"
V3 = "/_matrix/client/v3"


@dataclass
class World:
    dep: Deployment
    remote: Homeserver
    session: aiohttp.ClientSession
    workdir: Path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    problem = await services_problem()
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    workdir = tmp_path_factory.mktemp("workers")
    # The issue's deployment, plus an inbound federation worker and a media worker so that every role that
    # takes outside requests is a process of its own here.
    dep = await Deployment.start(
        workdir / "deployment", {**ISSUE_LAYOUT, "federation_inbound": 1, "media": 1}
    )
    remote: Homeserver | None = None
    try:
        remote = await start_single_server(workdir / "remote", rate_limits={"enabled": False})
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            yield World(dep, remote, session, workdir)
    finally:
        if remote is not None:
            await remote.stop()
        await dep.stop()


@dataclass
class User:
    session: aiohttp.ClientSession
    base: str  # a client API root: the proxy, or one process directly
    user_id: str
    token: str
    txns: dict[str, str] = field(default_factory=dict)

    @classmethod
    async def register(cls, session: aiohttp.ClientSession, base: str, name: str) -> User:
        body = {"username": name, "password": "pw-" + name * 2, "auth": {"type": "m.login.dummy"}}
        async with session.post(f"{base}{V3}/register", json=body) as resp:
            answer = await resp.json()
            assert resp.status == 200, answer
        return cls(session, base, answer["user_id"], answer["access_token"])

    def at(self, base: str) -> User:
        return User(self.session, base, self.user_id, self.token)

    async def call(self, method: str, path: str, body: Any = None, **params: str) -> tuple[int, Any]:
        async with self.session.request(
            method,
            f"{self.base}{V3}{path}",
            json=body,
            params=params or None,
            headers={"Authorization": f"Bearer {self.token}"},
        ) as resp:
            return resp.status, await resp.json(content_type=None)

    async def ok(self, method: str, path: str, body: Any = None, **params: str) -> Any:
        status, answer = await self.call(method, path, body, **params)
        assert status == 200, (method, path, status, answer)
        return answer

    async def send(self, room_id: str, text: str, txn: str | None = None) -> str:
        txn = txn or secrets.token_hex(6)
        answer = await self.ok(
            "PUT", f"/rooms/{room_id}/send/m.room.message/{txn}", {"msgtype": "m.text", "body": text}
        )
        return str(answer["event_id"])

    async def timeline(self, room_id: str) -> list[dict[str, Any]]:
        """The whole room, oldest first, paging /messages backwards."""
        events: list[dict[str, Any]] = []
        params = {"dir": "b", "limit": "100"}
        while True:
            page = await self.ok("GET", f"/rooms/{room_id}/messages", **params)
            events += page["chunk"]
            if "end" not in page or not page["chunk"]:
                return list(reversed(events))
            params["from"] = page["end"]

    async def texts(self, room_id: str) -> list[str]:
        return [
            str(e["content"].get("body"))
            for e in await self.timeline(room_id)
            if e["type"] == "m.room.message"
        ]

    async def state(self, room_id: str) -> list[tuple[str, str, str]]:
        events = await self.ok("GET", f"/rooms/{room_id}/state")
        return sorted((e["type"], e["state_key"], e["event_id"]) for e in events)


async def eventually(check: Any, timeout: float = 30.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if await check():
            return
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not met within {timeout}s")
        await asyncio.sleep(0.1)


def _remote_url(hs: Homeserver) -> str:
    return f"http://127.0.0.1:{hs.ports['client']}"


# -- routing ---------------------------------------------------------------------------------------


async def test_every_registered_route_is_served_where_the_table_sends_it(world: World) -> None:
    """Each route of a single-process server, requested (without credentials) on every process of the role the
    table picks, reaches a handler there: no 404/405 "Unrecognized request" from the router where the single
    process answers otherwise (some handlers answer M_UNRECOGNIZED themselves, e.g. an unknown push rule
    attribute: those are the same on both)."""
    dep = world.dep
    client_ups, federation_ups = dep.layout.client_upstreams(), dep.layout.federation_upstreams()
    unserved = []
    checked: dict[str, int] = {}
    async with single_process(world.workdir / "routes") as (hs, routes):
        single = {
            "client": f"http://127.0.0.1:{hs.ports['client']}",
            "federation": f"https://{hs.server_name}",
        }
        for route in routes:
            if route.method == "HEAD" or route.template == "/health":
                continue  # HEAD is aiohttp's twin of each GET, checked through the GET
            if await unrecognized(world.session, route.method, single[route.listener] + route.sample_path):
                continue
            ups = client_ups if route.listener == "client" else federation_ups
            role = instance_role(role_for(route.method, route.sample_path), ups)
            scheme = "http" if route.listener == "client" else "https"
            for address in ups[role]:
                if await unrecognized(
                    world.session, route.method, f"{scheme}://{address}{route.sample_path}"
                ):
                    unserved.append((route.method, route.template, role, address))
                checked[role] = checked.get(role, 0) + 1
    assert not unserved, unserved
    assert checked.get("client_reader", 0) > 50 and checked.get("main", 0) > 50, checked


# -- clients ---------------------------------------------------------------------------------------


async def test_client_flow_through_the_proxy(world: World) -> None:
    dep, session = world.dep, world.session
    alice = await User.register(session, dep.client_url, "walice")
    bob = await User.register(session, dep.client_url, "wbob")
    room_id = (await alice.ok("POST", "/createRoom", {"preset": "public_chat", "name": "Workers"}))["room_id"]
    await bob.ok("POST", f"/join/{room_id}", {})
    sent = [await (alice if i % 2 else bob).send(room_id, f"hello {i}") for i in range(6)]
    # Read back through the proxy (a reader), from PostgreSQL: in order, each once.
    timeline = await bob.timeline(room_id)
    ids = [e["event_id"] for e in timeline if e["type"] == "m.room.message"]
    assert ids == sent
    first = await bob.ok("GET", "/sync", timeout="0")
    assert sent[-1] in [e["event_id"] for e in first["rooms"]["join"][room_id]["timeline"]["events"]]
    members = await alice.ok("GET", f"/rooms/{room_id}/joined_members")
    assert set(members["joined"]) == {alice.user_id, bob.user_id}
    # The reads went to the readers, the rest to main.
    routed = dep.routed()
    assert any(role == "client_reader" for role, _ in routed), routed
    assert any(role == "main" for role, _ in routed), routed

    # A /sync parked on reader1 wakes on a message written through reader2 (persisted by the room's persister,
    # announced over Redis): the first answer of the long-poll carries it.
    reader1, reader2 = (dep.instance_url(n) for n in dep.names_of("client_reader"))
    watcher, writer = bob.at(reader1), alice.at(reader2)
    since = (await watcher.ok("GET", "/sync", timeout="0"))["next_batch"]
    poll = asyncio.create_task(watcher.ok("GET", "/sync", since=since, timeout="25000"))
    await asyncio.sleep(0.5)
    assert not poll.done()
    event_id = await writer.send(room_id, "across processes")
    answer = await poll
    woke_with = [
        e["event_id"] for e in answer["rooms"]["join"].get(room_id, {}).get("timeline", {}).get("events", [])
    ]
    assert event_id in woke_with, answer

    # Every client-serving process answers the same history.
    for name in ["main", *dep.names_of("client_reader")]:
        assert [e["event_id"] for e in await bob.at(dep.instance_url(name)).timeline(room_id)] == [
            e["event_id"] for e in await bob.timeline(room_id)
        ], name


async def test_the_generated_nginx_routes_like_the_table(world: World) -> None:
    """Real nginx (Debian's nginx-light, installed by .ci/run) with the layout's generated file in front of
    the deployment: each request lands on the process of the role the table names (read from the processes'
    access logs, by a marker in the query string)."""
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        if os.environ.get("CI"):
            pytest.fail("nginx is not installed (.ci/run installs nginx-light)")
        pytest.skip("nginx is not installed")
    dep, session = world.dep, world.session
    prefix = world.workdir / "nginx"
    prefix.mkdir()
    layout = dataclasses.replace(
        dep.layout, public_client_port=free_port(), public_federation_port=free_port()
    )
    site = layout.nginx(
        str(dep.workdir / "tls.crt"), str(dep.workdir / "tls.key"), listen_address="127.0.0.1"
    )
    (prefix / "ranvier-workers.conf").write_text(site)
    # Started as root, nginx would run its workers as an unprivileged user, who cannot enter this test's
    # private directory to spill large bodies: keep them root then.
    run_as = "user root;\n" if os.geteuid() == 0 else ""
    (prefix / "nginx.conf").write_text(
        f"daemon off;\n{run_as}pid {prefix}/nginx.pid;\nerror_log {prefix}/error.log info;\nevents {{}}\n"
        f"http {{\n  access_log {prefix}/access.log;\n  client_body_temp_path {prefix}/body;\n"
        f"  proxy_temp_path {prefix}/proxy;\n  include {prefix}/ranvier-workers.conf;\n}}\n"
    )
    process = subprocess.Popen(
        [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{layout.public_client_port}"
    try:

        async def up() -> bool:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(f"{base}/_matrix/client/versions") as resp:
                    return resp.status == 200
            return process.poll() is not None  # exited: reported below

        await eventually(up, timeout=20, what="nginx answers")
        assert process.poll() is None, (prefix / "error.log").read_text()
        probe = secrets.token_hex(4)
        user = await User.register(session, base, f"nginx{probe}")
        room_id = (await user.ok("POST", "/createRoom", {"preset": "public_chat"}, probe=f"create{probe}"))[
            "room_id"
        ]
        await user.ok("PUT", f"/rooms/{room_id}/send/m.room.message/{probe}?probe=send{probe}", {"body": "x"})
        await user.ok("GET", "/sync", timeout="0", probe=f"sync{probe}")
        await user.ok("GET", f"/rooms/{room_id}/messages", dir="b", probe=f"messages{probe}")
        key_url = f"https://127.0.0.1:{layout.public_federation_port}/_matrix/key/v2/server?probe=key{probe}"
        async with session.get(key_url, ssl=False) as resp:
            assert resp.status == 200 and (await resp.json())["server_name"] == dep.server_name
        media_url = f"{base}/_matrix/client/v1/media/config?probe=media{probe}"
        async with session.get(media_url, headers={"Authorization": f"Bearer {user.token}"}) as resp:
            assert resp.status == 200 and (await resp.json())["m.upload.size"] > 0
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 10)

    def served_by(marker: str) -> set[str]:
        return {name for name in dep.layout.names if marker in (dep.workdir / f"{name}.log").read_text()}

    readers = set(dep.names_of("client_reader"))
    expected: dict[str, Callable[[set[str]], bool]] = {
        "create": lambda names: names == {"main"},
        "sync": lambda names: bool(names) and names <= readers,
        "messages": lambda names: bool(names) and names <= readers,
        # The send is taken by a reader, which forwards it to the room's persister (both log it).
        "send": lambda names: bool(names & readers),
        "key": lambda names: names == set(dep.names_of("federation_inbound")),
        "media": lambda names: names == set(dep.names_of("media")),
    }

    async def logged() -> bool:
        # A process writes its access line as the response goes out: poll rather than race it.
        return all(check(served_by(f"{what}{probe}")) for what, check in expected.items())

    try:
        await eventually(logged, timeout=15, what="each request in the log of the process the table names")
    except AssertionError as e:
        seen = {what: served_by(f"{what}{probe}") for what in expected}
        raise AssertionError(f"{e}: {seen}\n{(prefix / 'error.log').read_text()[-3000:]}") from None


# -- federation ------------------------------------------------------------------------------------


async def test_federation_with_a_single_process_server(world: World) -> None:
    dep, session, remote = world.dep, world.session, world.remote
    local = await User.register(session, dep.client_url, "fedlocal")
    far = await User.register(session, _remote_url(remote), "fedremote")
    # A room of the deployment, joined from the remote server (inbound federation through the proxy).
    room_a = (await local.ok("POST", "/createRoom", {"preset": "public_chat"}))["room_id"]
    await far.ok("POST", f"/join/{room_a}", {}, server_name=dep.server_name)
    # A room of the remote server, joined from the deployment (outbound, from the process the proxy picks).
    room_b = (await far.ok("POST", "/createRoom", {"preset": "public_chat"}))["room_id"]
    await local.ok("POST", f"/join/{room_b}", {}, server_name=remote.server_name)
    for room_id in (room_a, room_b):
        await local.send(room_id, f"from the deployment in {room_id}")
        await far.send(room_id, f"from the remote in {room_id}")

    async def both_have_all() -> bool:
        for user in (local, far):
            for room_id in (room_a, room_b):
                texts = await user.texts(room_id)
                if not {f"from the deployment in {room_id}", f"from the remote in {room_id}"} <= set(texts):
                    return False
        return True

    await eventually(both_have_all, what="both servers have every message")


# -- kills -----------------------------------------------------------------------------------------


@dataclass
class Load:
    users: list[User]
    rooms: list[str]
    acked: dict[str, tuple[str, str]] = field(default_factory=dict)  # event id -> (room, body)
    failures: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def sender(self, index: int) -> None:
        user, room_id = self.users[index], self.rooms[index % len(self.rooms)]
        n = 0
        while not self.stop.is_set():
            body, txn = f"load {index}-{n}", f"load{index}-{n}"
            # Retry with the same txn id until acknowledged: a retry after a crash must not duplicate. (At the
            # end of the test an unacknowledged send is abandoned: nothing is claimed about it.)
            while not self.stop.is_set():
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    status, answer = await user.call(
                        "PUT",
                        f"/rooms/{room_id}/send/m.room.message/{txn}",
                        {"msgtype": "m.text", "body": body},
                    )
                    if status == 200:
                        self.acked[answer["event_id"]] = (room_id, body)
                        break
                self.failures += 1
                await asyncio.sleep(0.2)
            n += 1
            await asyncio.sleep(0.05)


async def _rooms_on_every_persister(dep: Deployment, owner: User, count_each: int) -> list[str]:
    """Rooms created until every persister owns ``count_each`` of them (rooms hash to persisters)."""
    persisters = dep.names_of("event_persister")
    rooms: dict[str, list[str]] = {p: [] for p in persisters}
    while any(len(r) < count_each for r in rooms.values()):
        room_id = (await owner.ok("POST", "/createRoom", {"preset": "public_chat"}))["room_id"]
        rooms[pick(persisters, room_id)].append(room_id)
    return [r for p in persisters for r in rooms[p][:count_each]]


async def test_kill_each_role_under_load_loses_nothing_acknowledged(world: World) -> None:
    dep, session, remote = world.dep, world.session, world.remote
    users = [await User.register(session, dep.client_url, f"load{i}") for i in range(4)]
    rooms = await _rooms_on_every_persister(dep, users[0], 1)
    far = await User.register(session, _remote_url(remote), "loadremote")
    for room_id in rooms:
        for user in users[1:]:
            await user.ok("POST", f"/join/{room_id}", {})
        await far.ok("POST", f"/join/{room_id}", {}, server_name=dep.server_name)

    # Two users send through the proxy, one straight to each reader (so a dead reader is met for sure).
    readers = dep.names_of("client_reader")
    users[2], users[3] = (
        users[2].at(dep.instance_url(readers[0])),
        users[3].at(dep.instance_url(readers[1])),
    )
    # The remote user sends too (into rooms[0]): its events reach the deployment through the inbound worker.
    # One of each of the issue's roles: main, a reader, the persister of rooms[0] (users 0 and 2 send there),
    # the sender of the remote server's queue; RANVIER_LONG: every instance (inbound and media included),
    # three rounds. (The default suite's time allows four kills.)
    persister = pick(dep.names_of("event_persister"), rooms[0])
    sender = pick(dep.names_of("federation_sender"), remote.server_name)
    victims = ["main", readers[0], persister, sender]
    if LONG:
        victims = [name for _ in range(3) for name in dep.layout.names]
    load = Load([*users, far], rooms)
    senders = [asyncio.create_task(load.sender(i)) for i in range(len(load.users))]
    felt: dict[str, int] = {}
    try:
        for victim in victims:
            before, failures = len(load.acked), load.failures
            dep.kill(victim)
            await asyncio.sleep(0.5)  # the load meets the dead process
            await dep.restart(victim)
            await eventually(
                lambda b=before: _grew(load, b), what=f"sends acknowledged after {victim}'s restart"
            )
            felt[victim] = load.failures - failures
    finally:
        load.stop.set()
        await asyncio.gather(*senders, return_exceptions=True)
    assert len(load.acked) > len(victims), load.acked
    # The sends met the dead reader and the dead persister (refused or cut, then retried).
    assert felt[readers[0]] > 0 and felt[persister] > 0, felt

    # Every acknowledged event (the remote user's as well), once, in every process's timeline and on the
    # remote server; the same order on every process of the deployment (the remote server orders concurrent
    # events of the two servers by its own arrival), the same state everywhere.
    views = {name: users[0].at(dep.instance_url(name)) for name in ["main", *dep.names_of("client_reader")]}
    views["remote"] = far

    async def converged() -> bool:
        for room_id in rooms:
            expected = {body for r, body in load.acked.values() if r == room_id}
            timelines = [
                [
                    e.get("content", {}).get("body")
                    for e in await v.timeline(room_id)
                    if e["type"] == "m.room.message"
                ]
                for v in views.values()
            ]
            for texts in timelines:
                if not expected <= set(texts) or len(texts) != len(set(texts)):
                    return False
            if any(t != timelines[0] for t in timelines[1:-1]):  # the last is the remote's
                return False
        return True

    await eventually(converged, timeout=60, what="every process and the remote server have every acked event")
    for room_id in rooms:
        states = [await v.state(room_id) for v in views.values()]
        assert all(s == states[0] for s in states), room_id
        bodies = [b for r, b in load.acked.values() if r == room_id]
        assert len(bodies) == len(set(bodies)), (
            "an acknowledged body twice: a retried txn made a second event"
        )


async def _grew(load: Load, before: int) -> bool:
    return len(load.acked) > before
