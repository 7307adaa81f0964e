"""Keys and X-Matrix authentication against a real Synapse, both ways."""

from __future__ import annotations

import asyncio
import urllib.parse
from pathlib import Path

import pytest
from aiohttp import web

from ranvier.federation.client import FederationError
from ranvier.federation.keys import Keyring
from ranvier.federation.request_auth import authenticate_request
from ranvier.protocol.signing import SigningKey, verify_json_signature
from tests.federation.fedserver import FedServer, make_client, start_fed_server

from .synapse import SynapseServer

pytestmark = pytest.mark.interop


class ProfileRoutes:
    """Our side of GET /_matrix/federation/v1/query/profile, authenticated with X-Matrix."""

    def __init__(self) -> None:
        self.origins: list[str] = []

    def __call__(self, app: web.Application, keyring: Keyring) -> None:
        async def profile(request: web.Request) -> web.Response:
            origin = await authenticate_request(request, keyring, keyring.server_name)
            self.origins.append(origin)
            return web.json_response({"displayname": f"Ranvier user {request.query['user_id']}"})

        app.router.add_get("/_matrix/federation/v1/query/profile", profile)


@pytest.fixture
async def ours(tmp_path: Path):
    routes = ProfileRoutes()
    server = await start_fed_server(tmp_path, routes=routes)
    server.routes = routes  # type: ignore[attr-defined]
    yield server
    await server.close()


async def test_our_keyring_fetches_and_verifies_synapse_key(synapse: SynapseServer, ours: FedServer) -> None:
    real = synapse.signing_key()
    info = await ours.keyring.get_verify_key(synapse.server_name, real.key_id)
    assert info is not None
    assert bytes(info.key) == bytes(real.verify_key)
    assert info.valid_until_ts is not None
    (response,) = await ours.keyring.get_key_responses(synapse.server_name)
    verify_json_signature(response, synapse.server_name, real.key_id, real.verify_key)


async def test_synapse_notary_fetches_our_key(synapse: SynapseServer, ours: FedServer) -> None:
    our_key, synapse_key = ours.keyring.signing_key, synapse.signing_key()

    def check(responses: list[dict]) -> None:
        mine = [r for r in responses if r["server_name"] == ours.server_name]
        assert mine, responses
        for response in mine:
            assert response["verify_keys"][our_key.key_id]["key"] == our_key.public_key_base64
            verify_json_signature(response, ours.server_name, our_key.key_id, our_key.verify_key)
            verify_json_signature(response, synapse.server_name, synapse_key.key_id, synapse_key.verify_key)

    # Synapse answers a query naming a key id it does not hold by fetching /_matrix/key/v2/server from
    # our TLS listener (a query without key ids is answered from its cache only).
    answer = await ours.client.request(
        "POST",
        synapse.server_name,
        "/_matrix/key/v2/query",
        # Synapse insists on minimum_valid_until_ts although the spec makes it optional.
        json_body={"server_keys": {ours.server_name: {our_key.key_id: {"minimum_valid_until_ts": 0}}}},
        authenticate=False,
    )
    check(answer["server_keys"])
    # Now cached, the GET form of the notary endpoint serves it too.
    answer = await ours.client.request(
        "GET", synapse.server_name, f"/_matrix/key/v2/query/{ours.server_name}", authenticate=False
    )
    check(answer["server_keys"])


async def test_we_make_authenticated_requests_to_synapse(synapse: SynapseServer, ours: FedServer) -> None:
    user_id, token = synapse.register("keys_profile_a")
    await asyncio.to_thread(
        synapse.client_api,
        "PUT",
        f"/_matrix/client/v3/profile/{urllib.parse.quote(user_id)}/displayname",
        {"displayname": "Alice at Synapse"},
        token,
    )
    profile = await ours.client.query_profile(synapse.server_name, user_id)
    assert profile["displayname"] == "Alice at Synapse"


async def test_synapse_rejects_a_forged_signature(synapse: SynapseServer, ours: FedServer) -> None:
    user_id, _ = synapse.register("keys_profile_b")
    # Same server name and key id as our real key, different key: Synapse fetches our real key and the
    # signature does not verify with it.
    forger = make_client(ours.server_name, SigningKey.generate(ours.keyring.signing_key.version))
    try:
        with pytest.raises(FederationError) as e:
            await forger.query_profile(synapse.server_name, user_id)
        assert e.value.status == 401
        assert e.value.errcode == "M_UNAUTHORIZED"
    finally:
        await forger.close()
    # The real key still works afterwards: the forgery did not poison Synapse's view of us.
    assert isinstance(await ours.client.query_profile(synapse.server_name, user_id), dict)


async def test_synapse_makes_authenticated_requests_to_us(synapse: SynapseServer, ours: FedServer) -> None:
    _, token = synapse.register("keys_profile_c")
    remote_user = f"@bob:{ours.server_name}"
    profile = await asyncio.to_thread(
        synapse.client_api,
        "GET",
        f"/_matrix/client/v3/profile/{urllib.parse.quote(remote_user)}",
        None,
        token,
    )
    assert profile["displayname"] == f"Ranvier user {remote_user}"
    # Our handler only answered after X-Matrix verification with Synapse's key fetched from Synapse.
    assert ours.routes.origins == [synapse.server_name]  # type: ignore[attr-defined]
    assert ours.keyring.lookup(synapse.server_name, synapse.signing_key().key_id) is not None


async def test_unsigned_request_is_refused_by_us(ours: FedServer) -> None:
    # Control for the test above: the same route without a signature is refused.
    session = ours.client._get_session()
    async with session.get(
        f"https://{ours.server_name}/_matrix/federation/v1/query/profile", params={"user_id": "@x:y"}
    ) as resp:
        assert resp.status == 401
        assert (await resp.json())["errcode"] == "M_UNAUTHORIZED"
