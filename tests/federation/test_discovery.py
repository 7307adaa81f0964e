"""Server discovery (S2S "Resolving server names") against a real .well-known server and a stub DNS server,
both on loopback. Names under .test never reach a real resolver: the stub answers them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import dns.asyncresolver
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from aiohttp import web

from ranvier.federation.discovery import ResolvedServer, ServerDiscovery
from ranvier.federation.tls import generate_self_signed_cert, server_ssl_context


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("127.0.0.1", ResolvedServer("127.0.0.1", "127.0.0.1", 8448, "127.0.0.1", None)),
        ("127.0.0.1:1234", ResolvedServer("127.0.0.1:1234", "127.0.0.1", 1234, "127.0.0.1:1234", None)),
        ("[::1]", ResolvedServer("[::1]", "::1", 8448, "[::1]", None)),
        ("[::1]:8449", ResolvedServer("[::1]:8449", "::1", 8449, "[::1]:8449", None)),
        # Step 2: a hostname with a port is not looked up further; certificate and SNI name the host.
        (
            "matrix.test:8000",
            ResolvedServer("matrix.test:8000", "matrix.test", 8000, "matrix.test:8000", "matrix.test"),
        ),
    ],
)
async def test_direct_names(name: str, expected: ResolvedServer) -> None:
    # No .well-known and no DNS may be consulted: a session that cannot connect anywhere proves it.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        await session.close()
        assert await ServerDiscovery().resolve(name, session) == expected


async def test_host_overrides() -> None:
    # federation.host_overrides (test-only): connect elsewhere, but Host and the name stay the server's.
    discovery = ServerDiscovery(
        host_overrides={"example.test": "127.0.0.1:9001", "other.test:81": "proxy.test"}
    )
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        await session.close()  # no .well-known or DNS may be consulted
        assert await discovery.resolve("example.test", session) == ResolvedServer(
            "example.test", "127.0.0.1", 9001, "example.test", None
        )
        assert await discovery.resolve("other.test:81", session) == ResolvedServer(
            "other.test:81", "proxy.test", 8448, "other.test:81", "proxy.test"
        )


def test_host_overrides_config() -> None:
    from ranvier.config import ConfigError, parse_config

    base = {"server_name": "a.test", "signing_key_path": "k", "database": {"url": "sqlite:///x.db"}}
    ok = parse_config({**base, "federation": {"host_overrides": {"b.test:8448": "127.0.0.1:9000"}}})
    assert ok.federation.host_overrides == {"b.test:8448": "127.0.0.1:9000"}
    with pytest.raises(ConfigError, match="host_overrides"):
        parse_config({**base, "federation": {"host_overrides": {"b.test": "no-port"}}})


async def test_invalid_name() -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ValueError):
            await ServerDiscovery().resolve("bad name", session)


class StubDns(asyncio.DatagramProtocol):
    """Answers SRV queries from a table; NXDOMAIN for everything else."""

    def __init__(self, srv: dict[str, list[str]]) -> None:
        self.srv = srv
        self.queries: list[str] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True)
        self.queries.append(name)
        if question.rdtype == dns.rdatatype.SRV and name in self.srv:
            response.answer.append(dns.rrset.from_text_list(question.name, 60, "IN", "SRV", self.srv[name]))
        else:
            response.set_rcode(dns.rcode.NXDOMAIN)
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Env:
    def __init__(self, dns_stub: StubDns, resolver: dns.asyncresolver.Resolver, port: int) -> None:
        self.dns = dns_stub
        self.resolver = resolver
        self.well_known_port = port
        self.well_known: dict[str, tuple[int, str, dict[str, str]]] = {}  # Host -> (status, body, headers)
        self.hits = 0
        self.clock = Clock()

    def discovery(self) -> ServerDiscovery:
        return ServerDiscovery(
            dns_resolver=self.resolver, well_known_port=self.well_known_port, clock=self.clock
        )


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple[Env, aiohttp.ClientSession]]:
    loop = asyncio.get_running_loop()
    stub = StubDns({})
    transport, _ = await loop.create_datagram_endpoint(lambda: stub, local_addr=("127.0.0.1", 0))
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = transport.get_extra_info("sockname")[1]
    resolver.lifetime = 5

    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    generate_self_signed_cert(cert, key)
    app = web.Application()
    env_holder: list[Env] = []

    async def well_known(request: web.Request) -> web.Response:
        e = env_holder[0]
        e.hits += 1
        status, body, headers = e.well_known.get(request.host.split(":")[0], (404, "{}", {}))
        return web.Response(status=status, text=body, headers=headers)

    app.router.add_get("/.well-known/matrix/server", well_known)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl_context(cert, key))
    await site.start()
    port = runner.addresses[0][1]
    e = Env(stub, resolver, port)
    env_holder.append(e)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as session:
        yield e, session
    await runner.cleanup()
    transport.close()


# "localhost" is the one hostname that resolves to loopback without DNS (from /etc/hosts), so the
# .well-known request for it reaches our server; SRV names are answered by the stub.


async def test_well_known_to_ip_literal(env) -> None:
    e, session = env
    e.well_known["localhost"] = (200, '{"m.server": "127.0.0.1:9999"}', {})
    got = await e.discovery().resolve("localhost", session)
    # 3.1: the Host header is the delegated IP and port; the certificate must name the IP.
    assert got == ResolvedServer("localhost", "127.0.0.1", 9999, "127.0.0.1:9999", None)


async def test_well_known_to_hostname_with_port(env) -> None:
    e, session = env
    e.well_known["localhost"] = (200, '{"m.server": "fed.test:4443"}', {"Content-Type": "text/plain"})
    got = await e.discovery().resolve("localhost", session)
    assert got == ResolvedServer("localhost", "fed.test", 4443, "fed.test:4443", "fed.test")
    assert e.dns.queries == []


async def test_well_known_to_hostname_then_srv(env) -> None:
    e, session = env
    e.well_known["localhost"] = (200, '{"m.server": "fed.test"}', {})
    e.dns.srv["_matrix-fed._tcp.fed.test"] = ["10 0 7777 target.fed.test."]
    got = await e.discovery().resolve("localhost", session)
    # 3.3: connect to the SRV target, but Host and certificate are the delegated hostname.
    assert got == ResolvedServer("localhost", "target.fed.test", 7777, "fed.test", "fed.test")


async def test_well_known_to_hostname_deprecated_srv_then_default(env) -> None:
    e, session = env
    e.well_known["localhost"] = (200, '{"m.server": "fed.test"}', {})
    e.dns.srv["_matrix._tcp.fed.test"] = ["10 0 7778 old.fed.test."]
    got = await e.discovery().resolve("localhost", session)
    assert got == ResolvedServer("localhost", "old.fed.test", 7778, "fed.test", "fed.test")
    assert e.dns.queries == ["_matrix-fed._tcp.fed.test", "_matrix._tcp.fed.test"]

    del e.dns.srv["_matrix._tcp.fed.test"]
    e.well_known["localhost"] = (200, '{"m.server": "other.test"}', {})
    got = await e.discovery().resolve("localhost", session)
    assert got == ResolvedServer("localhost", "other.test", 8448, "other.test", "other.test")  # 3.5


async def test_no_well_known_srv_for_the_server_name(env) -> None:
    e, session = env
    e.dns.srv["_matrix-fed._tcp.localhost"] = ["5 0 8500 fed-target.test.", "10 0 9000 backup.test."]
    got = await e.discovery().resolve("localhost", session)
    # Step 4: Host header and certificate stay <hostname>; lowest priority wins.
    assert got == ResolvedServer("localhost", "fed-target.test", 8500, "localhost", "localhost")


async def test_no_well_known_no_srv(env) -> None:
    e, session = env
    e.well_known["localhost"] = (200, "not json", {})
    got = await e.discovery().resolve("localhost", session)
    assert got == ResolvedServer("localhost", "localhost", 8448, "localhost", "localhost")  # step 6


@pytest.mark.parametrize(
    "response",
    [
        (500, '{"m.server": "127.0.0.1:1"}', {}),
        (200, '{"m.server": 5}', {}),
        (200, '{"m.server": "bad name!"}', {}),
        (200, "[]", {}),
    ],
)
async def test_invalid_well_known_falls_through(env, response) -> None:
    e, session = env
    e.well_known["localhost"] = response
    got = await e.discovery().resolve("localhost", session)
    assert got.connect_host == "localhost" and got.port == 8448


async def test_well_known_cache_rules(env) -> None:
    e, session = env
    d = e.discovery()
    e.well_known["localhost"] = (
        200,
        '{"m.server": "127.0.0.1:1111"}',
        {"Cache-Control": "public, max-age=600"},
    )
    assert (await d.resolve("localhost", session)).port == 1111
    e.well_known["localhost"] = (200, '{"m.server": "127.0.0.1:2222"}', {})
    assert (await d.resolve("localhost", session)).port == 1111  # cached
    assert e.hits == 1
    e.clock.now += 601
    assert (await d.resolve("localhost", session)).port == 2222  # max-age honoured
    # No Cache-Control: 24 hours.
    e.clock.now += 23 * 3600
    e.well_known["localhost"] = (200, '{"m.server": "127.0.0.1:3333"}', {"Cache-Control": "max-age=9999999"})
    assert (await d.resolve("localhost", session)).port == 2222
    e.clock.now += 3601
    assert (await d.resolve("localhost", session)).port == 3333
    # An absurd max-age is capped at 48 hours.
    e.well_known["localhost"] = (200, '{"m.server": "127.0.0.1:4444"}', {})
    e.clock.now += 48 * 3600 + 1
    assert (await d.resolve("localhost", session)).port == 4444


async def test_well_known_errors_are_cached_with_backoff(env) -> None:
    e, session = env
    d = e.discovery()
    assert (await d.resolve("localhost", session)).port == 8448  # 404
    e.well_known["localhost"] = (200, '{"m.server": "127.0.0.1:1111"}', {})
    assert (await d.resolve("localhost", session)).port == 8448  # the error is cached
    assert e.hits == 1
    e.clock.now += 301
    assert (await d.resolve("localhost", session)).port == 1111
    assert e.hits == 2
