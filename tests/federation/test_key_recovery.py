"""Key-fetch recovery and time-boxing, with faults injected on real sockets (issue 13 item 4, issue 12
defect 6): a key server that refuses once then works, one that accepts TCP and never answers, and a
resident that dies in the middle of a join."""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from ranvier.app import Homeserver
from ranvier.config import parse_config
from ranvier.federation.client import FederationError
from ranvier.federation.key_routes import add_key_routes
from ranvier.federation.keys import Keyring
from ranvier.federation.tls import server_ssl_context
from ranvier.federation.x_matrix import sign_request
from ranvier.protocol.signing import SigningKey
from tests.ports import free_port
from tests.scenarios.servers import Client

from .fedserver import FedServer, start_fed_server
from .test_keys_and_auth import echo_routes

# -- fault injection ---------------------------------------------------------------------------------


async def relisten(server: FedServer, tmp_path: Path, routes: Any = None) -> None:
    """Serve ``server``'s keys (and ``routes``) again on its old port, after ``stop_listening``."""
    app = web.Application()
    add_key_routes(app, server.keyring, server.server_name)
    if routes is not None:
        routes(app, server.keyring)
    runner = web.AppRunner(app)
    await runner.setup()
    ctx = server_ssl_context(tmp_path / "fed.crt", tmp_path / "fed.key")
    await web.TCPSite(runner, "127.0.0.1", server.port, ssl_context=ctx).start()
    server.runner = runner


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target``; while down, nothing listens there (connection refused)."""

    def __init__(self, target: int) -> None:
        self.port = free_port()
        self.target = target
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._link, "127.0.0.1", self.port, reuse_address=True)

    async def down(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for w in list(self._links):
            w.transport.abort()

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        self._links |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self._links -= {writer, up_writer}


@asynccontextmanager
async def blackhole() -> AsyncIterator[int]:
    """A port whose kernel completes TCP handshakes that nobody ever reads or answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


async def start_hs(data_dir: Path, **extra: Any) -> Homeserver:
    data_dir.mkdir(parents=True, exist_ok=True)
    fed_port = free_port()
    federation = {"verify_tls": False, "allow_loopback": True, **extra.pop("federation", {})}
    config = parse_config(
        {
            "server_name": f"127.0.0.1:{fed_port}",
            "data_dir": str(data_dir),
            "signing_key_path": str(data_dir / "signing.key"),
            "database": {"url": f"sqlite:///{data_dir / 'homeserver.db'}"},
            "listeners": {
                "client": {"bind": "127.0.0.1", "port": 0},
                "federation": {"bind": "127.0.0.1", "port": fed_port, "tls": True},
            },
            "registration": {"enabled": True},
            "federation": federation,
            **extra,
        }
    )
    hs = Homeserver(config)
    await hs.start()
    return hs


class FakeClock:
    def __init__(self) -> None:
        self.now = int(time.time() * 1000)

    def __call__(self) -> int:
        return self.now


def watching_keyring(observer: FedServer, clock: Callable[[], int], retry_max: float = 30) -> Keyring:
    return Keyring(
        observer.server_name,
        [SigningKey.generate("w")],
        client=observer.client,
        clock_ms=clock,
        retry_max=retry_max,
        rng=random.Random(7),
    )


@pytest.fixture
async def fed(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    started: list[FedServer] = []

    async def start(**kw: Any) -> FedServer:
        server = await start_fed_server(tmp_path, **kw)
        started.append(server)
        return server

    yield start
    for s in started:
        await s.close()


# -- the keyring -------------------------------------------------------------------------------------


async def test_failed_fetch_is_retried_after_a_short_backoff(fed: Any, tmp_path: Path) -> None:
    origin, observer = await fed(), await fed()
    key_id = origin.keyring.signing_key.key_id
    clock = FakeClock()
    keyring = watching_keyring(observer, clock)
    await origin.stop_listening()
    assert await keyring.get_verify_key(origin.server_name, key_id) is None
    failure = keyring.fetch_failure(origin.server_name)
    assert failure is not None and origin.server_name in failure and "connection refused" in failure

    await relisten(origin, tmp_path)
    # Within the back-off nothing is fetched (no hammering) ...
    assert await keyring.get_verify_key(origin.server_name, key_id) is None
    # ... and one second later (not a minute) the key is fetched again and found.
    clock.now += 1000
    info = await keyring.get_verify_key(origin.server_name, key_id)
    assert info is not None and info.key == origin.keyring.signing_key.verify_key
    assert keyring.fetch_failure(origin.server_name) is None


async def test_backoff_is_bounded_and_cut_short_on_demand(fed: Any, tmp_path: Path) -> None:
    origin, observer = await fed(), await fed()
    key_id = origin.keyring.signing_key.key_id
    clock = FakeClock()
    keyring = watching_keyring(observer, clock, retry_max=20)
    await origin.stop_listening()
    for _ in range(8):  # eight failures in a row: the back-off has doubled up to its bound
        clock.now += 20_000
        assert await keyring.get_verify_key(origin.server_name, key_id) is None
    await relisten(origin, tmp_path)
    clock.now += 1500
    assert await keyring.get_verify_key(origin.server_name, key_id) is None  # still backing off
    # The server itself asking (a request it signed) fetches at once.
    assert await keyring.get_verify_key(origin.server_name, key_id, on_demand=True) is not None

    # And the bound holds: after retry_max seconds a plain lookup fetches again.
    other, observer2 = await fed(), await fed()
    keyring2 = watching_keyring(observer2, clock, retry_max=20)
    await other.stop_listening()
    for _ in range(8):
        clock.now += 20_000
        assert await keyring2.get_verify_key(other.server_name, other.keyring.signing_key.key_id) is None
    await relisten(other, tmp_path)
    clock.now += 20_000
    assert await keyring2.get_verify_key(other.server_name, other.keyring.signing_key.key_id) is not None


async def test_on_demand_fetches_are_at_most_one_a_second(fed: Any, tmp_path: Path) -> None:
    """Forged requests naming a server must not turn into a flood of fetches from it."""
    origin, observer = await fed(), await fed()
    key_id = origin.keyring.signing_key.key_id
    clock = FakeClock()
    keyring = watching_keyring(observer, clock)
    await origin.stop_listening()
    assert await keyring.get_verify_key(origin.server_name, key_id, on_demand=True) is None
    await relisten(origin, tmp_path)
    fetches = 0
    fetch_direct = keyring._fetch_direct

    async def counting(server: str) -> str | None:
        nonlocal fetches
        fetches += 1
        return await fetch_direct(server)

    keyring._fetch_direct = counting  # type: ignore[method-assign]
    clock.now += 500
    # Twenty requests signed by the server within the floor wait it out (rather than fail) and then
    # share one fetch between them.
    found = await asyncio.gather(
        *(keyring.get_verify_key(origin.server_name, key_id, on_demand=True) for _ in range(20))
    )
    assert all(info is not None for info in found)
    assert fetches == 1


async def test_request_from_a_server_whose_key_fetch_failed(fed: Any, tmp_path: Path) -> None:
    receiver = await fed(routes=echo_routes)
    origin = await fed()
    await origin.stop_listening()
    # The origin's key server is down: the 401 says so, naming it.
    with pytest.raises(FederationError) as e:
        await origin.client.request("GET", receiver.server_name, "/_matrix/federation/v1/echo/x")
    assert (e.value.status, e.value.errcode) == (401, "M_UNAUTHORIZED")
    assert origin.server_name in e.value.message and "connection refused" in e.value.message

    await relisten(origin, tmp_path)
    # At once: the request waits out the on-demand floor (one fetch a second per server) if need be.
    answer = await origin.client.request("GET", receiver.server_name, "/_matrix/federation/v1/echo/x")
    assert answer["origin"] == origin.server_name


async def test_dead_key_server_gets_a_clear_401_within_the_fetch_timeout(tmp_path: Path, fed: Any) -> None:
    hs = await start_hs(tmp_path / "hs", key_fetch={"timeout": 1})
    try:
        async with blackhole() as port:
            origin = f"127.0.0.1:{port}"
            path = "/_matrix/federation/v1/send/t1"
            body = {"origin": origin, "origin_server_ts": 1, "pdus": [], "edus": []}
            header = sign_request("PUT", path, origin, hs.server_name, body, SigningKey.generate("d"))
            async with (
                aiohttp.ClientSession() as session,
                session.put(
                    f"https://127.0.0.1:{hs.ports['federation']}{path}",
                    json=body,
                    headers={"Authorization": header},
                    ssl=False,
                ) as resp,
            ):
                answer = await resp.json()
            assert resp.status == 401, answer
            assert answer["errcode"] == "M_UNAUTHORIZED"
            assert origin in answer["error"] and "did not answer within 1s" in answer["error"]
    finally:
        await hs.stop()


# -- joins and invites -------------------------------------------------------------------------------


@asynccontextmanager
async def resident_behind_a_proxy(tmp_path: Path) -> AsyncIterator[tuple[Homeserver, Homeserver, TcpProxy]]:
    """Servers a and b; b reaches a through a proxy that is down at first, and b's first fetch of a's key
    has failed (connection refused) before the test begins."""
    a = await start_hs(tmp_path / "a")
    proxy = TcpProxy(int(a.server_name.rsplit(":", 1)[1]))
    b = await start_hs(
        tmp_path / "b", federation={"host_overrides": {a.server_name: f"127.0.0.1:{proxy.port}"}}
    )
    try:
        assert await b.keyring.get_verify_key(a.server_name, a.keyring.signing_key.key_id) is None
        assert "connection refused" in (b.keyring.fetch_failure(a.server_name) or "")
        await proxy.up()
        yield a, b, proxy
    finally:
        await proxy.down()
        await b.stop()
        await a.stop()


async def test_join_right_after_a_failed_key_fetch(tmp_path: Path) -> None:
    async with resident_behind_a_proxy(tmp_path) as (a, b, _proxy), aiohttp.ClientSession() as session:
        alice = await Client.register(session, a, "alice")
        bob = await Client.register(session, b, "bob")
        room_id = await alice.create_room()
        # At once, not 60 s later: the join verifies the resident's answer with a fresh fetch of its key.
        status, answer = await bob.call("POST", f"/join/{room_id}", {}, server_name=a.server_name)
        assert status == 200, answer
        await bob.send_text(room_id, "made it")


async def test_invite_right_after_a_failed_key_fetch(tmp_path: Path) -> None:
    async with resident_behind_a_proxy(tmp_path) as (a, b, _proxy), aiohttp.ClientSession() as session:
        alice = await Client.register(session, a, "alice")
        bob = await Client.register(session, b, "bob")
        room_id = await alice.create_room()
        # b authenticates a's invite request by fetching a's key again, on demand (waiting out the
        # floor of one fetch a second if the failed fetch was less than a second ago).
        status, answer = await alice.call("POST", f"/rooms/{room_id}/invite", {"user_id": bob.user_id})
        assert status == 200, answer


async def test_resident_dying_mid_join_gives_a_clear_404_naming_it(tmp_path: Path) -> None:
    a = await start_hs(tmp_path / "a")
    b = await start_hs(tmp_path / "b")
    a_stopped = False
    try:
        async with aiohttp.ClientSession() as session:
            alice = await Client.register(session, a, "alice")
            bob = await Client.register(session, b, "bob")
            room_id = await alice.create_room()

            async def resident_dies(_room: str) -> None:
                nonlocal a_stopped
                await a.stop()
                a_stopped = True

            b.remote_membership.before_send_join = resident_dies
            status, answer = await bob.call("POST", f"/join/{room_id}", {}, server_name=a.server_name)
            assert status == 404, answer
            assert answer["errcode"] == "M_NOT_FOUND"
            assert a.server_name in answer["error"] and "connection refused" in answer["error"]
            assert "ClientConnector" not in answer["error"]
    finally:
        await b.stop()
        if not a_stopped:
            await a.stop()


async def test_invite_to_an_unreachable_server_gives_404_naming_it(tmp_path: Path) -> None:
    a = await start_hs(tmp_path / "a")
    try:
        async with aiohttp.ClientSession() as session:
            alice = await Client.register(session, a, "alice")
            room_id = await alice.create_room()
            nowhere = f"127.0.0.1:{free_port()}"  # nothing listens there
            status, answer = await alice.call(
                "POST", f"/rooms/{room_id}/invite", {"user_id": f"@bob:{nowhere}"}
            )
            assert (status, answer["errcode"]) == (404, "M_NOT_FOUND"), answer
            assert nowhere in answer["error"] and "connection refused" in answer["error"]
    finally:
        await a.stop()
