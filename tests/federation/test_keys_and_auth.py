"""Keyring, key routes, notary and request authentication between real aiohttp servers on loopback."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from aiohttp import web

from ranvier.federation.client import DestinationUnreachable, FederationClient, FederationError
from ranvier.federation.ip_blocklist import IpBlocklist
from ranvier.federation.keys import KEY_SERVER_PATH, MemoryKeyStore, Notary, OldKey
from ranvier.federation.request_auth import authenticate_request
from ranvier.protocol.signing import SigningKey, sign_json, verify_json_signature

from .fedserver import FedServer, make_client, start_fed_server


def echo_routes(app: web.Application, keyring) -> None:
    """A route that needs X-Matrix auth and echoes what it authenticated."""

    async def handler(request: web.Request) -> web.Response:
        origin = await authenticate_request(request, keyring, keyring.server_name)
        body = await request.read()
        return web.json_response({"origin": origin, "body_len": len(body), "query": dict(request.query)})

    app.router.add_route("*", "/_matrix/federation/v1/echo/{rest:.*}", handler)


@pytest.fixture
async def servers(tmp_path: Path):
    started: list[FedServer] = []

    async def start(**kw) -> FedServer:
        server = await start_fed_server(tmp_path, routes=echo_routes, **kw)
        started.append(server)
        return server

    yield start
    for s in started:
        await s.close()


async def test_key_server_publishes_signed_keys(servers) -> None:
    old = SigningKey.generate("old")
    a = await servers(old_keys=[OldKey(old.key_id, old.public_key_base64, 1_000)])
    b = await servers()
    response = await b.client.request("GET", a.server_name, KEY_SERVER_PATH, authenticate=False)
    assert response["server_name"] == a.server_name
    key = a.keyring.signing_key
    assert response["verify_keys"] == {key.key_id: {"key": key.public_key_base64}}
    assert response["old_verify_keys"] == {old.key_id: {"key": old.public_key_base64, "expired_ts": 1_000}}
    now = int(time.time() * 1000)
    assert now + 3600_000 < response["valid_until_ts"] <= now + 7 * 24 * 3600_000
    verify_json_signature(response, a.server_name, key.key_id, key.verify_key)


async def test_keyring_fetches_verifies_caches_and_persists(servers) -> None:
    a = await servers()
    store = MemoryKeyStore()
    b = await servers(store=store)
    key = a.keyring.signing_key
    info = await b.keyring.get_verify_key(a.server_name, key.key_id)
    assert info is not None and info.key == key.verify_key
    assert b.keyring.lookup(a.server_name, key.key_id) == info
    stored = await store.get_server_keys(a.server_name, [key.key_id])
    assert stored[key.key_id].keys_json["server_name"] == a.server_name
    # A second keyring sharing the store needs no network: a is gone, yet its key is known.
    await a.stop_listening()
    c = await servers(store=store)
    assert await c.keyring.get_verify_key(a.server_name, key.key_id) == info
    assert await c.keyring.get_verify_key(a.server_name, "ed25519:nope") is None


async def test_keyring_rejects_bad_key_responses(servers, tmp_path: Path) -> None:
    a = await servers()
    b = await servers()
    served: list[dict] = []

    async def impostor(request: web.Request) -> web.Response:
        return web.json_response(served[-1])

    imp = await start_fed_server(
        tmp_path, key_routes=False, routes=lambda app, _k: app.router.add_get(KEY_SERVER_PATH, impostor)
    )
    a_key = a.keyring.signing_key
    try:
        # a's genuine, validly signed response, served at another address: it names the wrong server.
        served.append(a.keyring.own_key_response())
        assert await b.keyring.get_verify_key(imp.server_name, a_key.key_id) is None
        # Renamed to the impostor: now a's signature no longer verifies.
        renamed = a.keyring.own_key_response()
        renamed["server_name"] = imp.server_name
        renamed["signatures"] = {imp.server_name: renamed["signatures"][a.server_name]}
        served.append(renamed)
        fresh = await servers()
        assert await fresh.keyring.get_verify_key(imp.server_name, a_key.key_id) is None
        # Unsigned.
        unsigned = a.keyring.own_key_response()
        unsigned["server_name"] = imp.server_name
        del unsigned["signatures"]
        served.append(unsigned)
        fresh = await servers()
        assert await fresh.keyring.get_verify_key(imp.server_name, a_key.key_id) is None
        # The control: a correctly self-signed response from the impostor is accepted.
        own = SigningKey.generate("imp")
        good = {
            "server_name": imp.server_name,
            "verify_keys": {own.key_id: {"key": own.public_key_base64}},
            "valid_until_ts": int(time.time() * 1000) + 3600_000,
        }
        served.append(sign_json(good, imp.server_name, own))
        fresh = await servers()
        info = await fresh.keyring.get_verify_key(imp.server_name, own.key_id)
        assert info is not None and info.key == own.verify_key
    finally:
        await imp.close()


async def test_prefetch_then_synchronous_lookup(servers) -> None:
    a, b, c = await servers(), await servers(), await servers()
    wanted = [(a.server_name, a.keyring.signing_key.key_id), (b.server_name, b.keyring.signing_key.key_id)]
    await c.keyring.prefetch([*wanted, (c.server_name, c.keyring.signing_key.key_id)])
    for server, key_id in wanted:
        assert c.keyring.lookup(server, key_id) is not None
    assert c.keyring.lookup(c.server_name, c.keyring.signing_key.key_id) is not None


async def test_notary_counter_signs_and_serves_cached_keys(servers) -> None:
    origin = await servers()
    notary = await servers()
    asker = await servers()
    path = f"/_matrix/key/v2/query/{origin.server_name}"
    answer = await asker.client.request("GET", notary.server_name, path, authenticate=False)
    (response,) = answer["server_keys"]
    okey, nkey = origin.keyring.signing_key, notary.keyring.signing_key
    verify_json_signature(response, origin.server_name, okey.key_id, okey.verify_key)
    verify_json_signature(response, notary.server_name, nkey.key_id, nkey.verify_key)

    # The origin goes offline; a keyring that trusts the notary still gets the key, through the notary.
    await origin.stop_listening()
    trusting = await servers(notaries=[Notary(notary.server_name)])
    info = await trusting.keyring.get_verify_key(origin.server_name, okey.key_id)
    assert info is not None and info.key == okey.verify_key

    batch = await asker.client.request(
        "POST",
        notary.server_name,
        "/_matrix/key/v2/query",
        json_body={"server_keys": {origin.server_name: {okey.key_id: {"minimum_valid_until_ts": 0}}}},
        authenticate=False,
    )
    assert [r["server_name"] for r in batch["server_keys"]] == [origin.server_name]


async def test_notary_with_wrong_pinned_key_is_not_trusted(servers) -> None:
    origin = await servers()
    notary = await servers()
    await notary.keyring.get_verify_key(origin.server_name, origin.keyring.signing_key.key_id)
    await origin.stop_listening()
    wrong = SigningKey.generate(notary.keyring.signing_key.version)
    pinned = Notary(notary.server_name, {wrong.key_id: wrong.public_key_base64})
    trusting = await servers(notaries=[pinned])
    assert (
        await trusting.keyring.get_verify_key(origin.server_name, origin.keyring.signing_key.key_id) is None
    )


async def test_version_endpoint(servers) -> None:
    a, b = await servers(), await servers()
    answer = await b.client.request("GET", a.server_name, "/_matrix/federation/v1/version")
    assert answer["server"]["name"] == "Ranvier"


async def test_authenticated_request_round_trip(servers) -> None:
    a, b = await servers(), await servers()
    answer = await b.client.request(
        "PUT",
        a.server_name,
        "/_matrix/federation/v1/echo/%21room%3Aexample.org",
        query={"v": ["$a", "$b"], "limit": 5},
        json_body={"hello": "wörld"},
    )
    assert answer["origin"] == b.server_name
    assert answer["query"] == {"v": "$a", "limit": "5"}
    get = await b.client.request("GET", a.server_name, "/_matrix/federation/v1/echo/x")
    assert get == {"origin": b.server_name, "body_len": 0, "query": {}}


async def test_forged_and_misaddressed_requests_get_401(servers) -> None:
    a, b = await servers(), await servers()
    # Same key id as b's real key, different key: the signature cannot verify.
    forger = make_client(b.server_name, SigningKey.generate(b.keyring.signing_key.version))
    try:
        with pytest.raises(FederationError) as e:
            await forger.request("GET", a.server_name, "/_matrix/federation/v1/echo/x")
        assert (e.value.status, e.value.errcode) == (401, "M_UNAUTHORIZED")
    finally:
        await forger.close()

    # Correctly signed, but for another destination.
    c = await servers()
    from ranvier.federation.x_matrix import sign_request

    header = sign_request(
        "GET", "/_matrix/federation/v1/echo/x", b.server_name, c.server_name, None, b.keyring.signing_key
    )
    session = b.client._get_session()
    async with session.get(
        f"https://{a.server_name}/_matrix/federation/v1/echo/x", headers={"Authorization": header}
    ) as resp:
        assert resp.status == 401
        assert (await resp.json())["errcode"] == "M_UNAUTHORIZED"
    async with session.get(f"https://{a.server_name}/_matrix/federation/v1/echo/x") as resp:
        assert resp.status == 401


async def test_blocklisted_destination_is_not_contacted(servers) -> None:
    a = await servers()
    strict = FederationClient(
        "strict.example", SigningKey.generate("s"), verify_tls=False, blocklist=IpBlocklist()
    )
    try:
        with pytest.raises(DestinationUnreachable):
            await strict.request("GET", a.server_name, "/_matrix/federation/v1/version")
        # A hostname that resolves to loopback is refused after resolution too.
        with pytest.raises(DestinationUnreachable):
            await strict.request("GET", f"localhost:{a.port}", "/_matrix/federation/v1/version")
    finally:
        await strict.close()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/_matrix/key/v2/query/bad%20name", None),
        ("GET", "/_matrix/key/v2/query/127.0.0.1:1?minimum_valid_until_ts=soon", None),
        ("POST", "/_matrix/key/v2/query", {"server_keys": []}),
        ("POST", "/_matrix/key/v2/query", {"server_keys": {"bad name": {}}}),
        ("POST", "/_matrix/key/v2/query", {"server_keys": {"127.0.0.1:1": {"ed25519:a": "x"}}}),
    ],
)
async def test_notary_rejects_malformed_queries(servers, method: str, path: str, body) -> None:
    a, b = await servers(), await servers()
    with pytest.raises(FederationError) as e:
        await b.client.request(method, a.server_name, path, json_body=body, authenticate=False)
    assert e.value.status == 400
    assert e.value.errcode in ("M_INVALID_PARAM", "M_BAD_JSON")


async def test_notary_query_for_itself_and_for_nobody(servers) -> None:
    a, b = await servers(), await servers()
    answer = await b.client.request(
        "GET", a.server_name, f"/_matrix/key/v2/query/{a.server_name}", authenticate=False
    )
    assert [r["server_name"] for r in answer["server_keys"]] == [a.server_name]
    empty = await b.client.request(
        "POST", a.server_name, "/_matrix/key/v2/query", json_body={"server_keys": {}}, authenticate=False
    )
    assert empty == {"server_keys": []}


async def test_trusted_key_servers_from_the_config_are_asked_when_the_origin_is_down(
    servers, tmp_path: Path
) -> None:
    """``federation.trusted_key_servers`` in homeserver.yaml reaches the homeserver's keyring: with the
    origin offline, a key is still fetched, through the notary named there (both config shapes)."""
    from ranvier.app import Homeserver
    from ranvier.config import parse_config
    from tests.ports import free_port

    origin = await servers()
    notary = await servers()
    okey = origin.keyring.signing_key
    # The notary learns the origin's key while the origin is up, then the origin goes offline.
    assert await notary.keyring.get_verify_key(origin.server_name, okey.key_id) is not None
    await origin.stop_listening()
    nkey = notary.keyring.signing_key
    for i, trusted in enumerate(
        [
            notary.server_name,
            {"server_name": notary.server_name, "verify_keys": {nkey.key_id: nkey.public_key_base64}},
        ]
    ):
        data_dir = tmp_path / f"hs{i}"
        fed_port = free_port()
        config = parse_config(
            {
                "server_name": f"127.0.0.1:{fed_port}",
                "data_dir": str(data_dir),
                "signing_key_path": str(data_dir / "signing.key"),
                "database": {"url": f"sqlite:///{data_dir / 'homeserver.db'}"},
                "listeners": {"client": {"port": 0}, "federation": {"port": fed_port}},
                "federation": {"verify_tls": False, "allow_loopback": True, "trusted_key_servers": [trusted]},
            }
        )
        data_dir.mkdir(parents=True)
        hs = Homeserver(config)
        await hs.start()
        try:
            info = await hs.keyring.get_verify_key(origin.server_name, okey.key_id)
            assert info is not None and info.key == okey.verify_key
        finally:
            await hs.stop()
