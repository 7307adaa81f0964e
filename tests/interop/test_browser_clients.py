"""Real browser clients against Ranvier and against Synapse, in the same test: our matrix-js-sdk page
(tests/browser/jssdk/) and the whole Hydrogen app (tests/browser/hydrogen/), each in headless Chromium.

The browser user logs in, creates a room, invites a second user, sends a message, sees the second user's
message in the client's UI, replies to it in a thread, reacts to it and edits her own message. The second user
is driven over HTTP (tests/browser/peer.mjs); afterwards the second user checks through the HTTP API that the
thread reply, the reaction and the edit arrived as relations (CS "Forming relationships between events",
/relations, and the bundled aggregations of /event). Screenshots: test-artifacts/browser/<client>-<server>/.

The module lives beside the interop tests so that it shares their one session Synapse.
"""

from __future__ import annotations

import asyncio
import secrets
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.browser.harness import run_script
from tests.scenarios.servers import start_server

from .synapse import SynapseServer

pytestmark = [pytest.mark.interop, pytest.mark.asyncio(loop_scope="module")]


@dataclass
class Account:
    user_id: str
    localpart: str
    password: str
    token: str


@dataclass
class Server:
    name: str
    url: str  # the client-server API base, as a browser client is given it
    accounts: list[Account]
    synapse: SynapseServer | None = None


async def _register_on_ranvier(session: aiohttp.ClientSession, url: str, localpart: str) -> Account:
    password = secrets.token_hex(12)
    body = {"username": localpart, "password": password, "auth": {"type": "m.login.dummy"}}
    async with session.post(f"{url}/_matrix/client/v3/register", json=body) as resp:
        answer = await resp.json()
        assert resp.status == 200, answer
    return Account(answer["user_id"], localpart, password, answer["access_token"])


def _register_on_synapse(synapse: SynapseServer, localpart: str) -> Account:
    password = secrets.token_hex(12)
    user_id, token = synapse.register(localpart, password=password)
    return Account(user_id, localpart, password, token)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ranvier_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """One Ranvier for the module (each test registers its own users)."""
    hs = await start_server(tmp_path_factory.mktemp("ranvier-browser"))
    try:
        yield f"http://127.0.0.1:{hs.ports['client']}"
    finally:
        await hs.stop()


@pytest.fixture(params=["ranvier", "synapse"])
def server(request: pytest.FixtureRequest) -> Server:
    """The server under test, with no accounts yet (``_register`` adds them, inside the test's loop: the
    in-process Ranvier only answers while that loop runs)."""
    if request.param == "ranvier":
        return Server("ranvier", request.getfixturevalue("ranvier_url"), [])
    synapse: SynapseServer = request.getfixturevalue("synapse")
    return Server("synapse", synapse.client_url, [], synapse)


async def _register(server: Server, http: aiohttp.ClientSession) -> None:
    """The browser user and the second user, with fresh names."""
    for name in (f"alice{secrets.token_hex(3)}", f"bob{secrets.token_hex(3)}"):
        if server.synapse is None:
            server.accounts.append(await _register_on_ranvier(http, server.url, name))
        else:
            server.accounts.append(await asyncio.to_thread(_register_on_synapse, server.synapse, name))


async def _get(session: aiohttp.ClientSession, server: Server, token: str, path: str) -> Any:
    """GET a client-server API path (``/v1/...`` or ``/v3/...``) as the given user; it must answer 200."""
    headers = {"Authorization": f"Bearer {token}"}
    async with session.get(f"{server.url}/_matrix/client{path}", headers=headers) as resp:
        body = await resp.json()
        assert resp.status == 200, (path, resp.status, body)
        return body


async def _check_relations_as_second_user(
    session: aiohttp.ClientSession, server: Server, seen: dict[str, Any]
) -> None:
    """What the browser user did arrived as relations, seen by the other user over the HTTP API."""
    alice, bob = server.accounts
    room = urllib.parse.quote(seen["room_id"])
    threads = await _get(session, server, bob.token, f"/v1/rooms/{room}/relations/{seen['bobs']}/m.thread")
    assert [e["event_id"] for e in threads["chunk"]] == [seen["thread"]]
    assert threads["chunk"][0]["content"]["body"] == "a reply in the thread"
    assert threads["chunk"][0]["sender"] == alice.user_id
    reactions = await _get(
        session, server, bob.token, f"/v1/rooms/{room}/relations/{seen['bobs']}/m.annotation"
    )
    # Hydrogen's quick reaction is a click in its UI: its event id is not known to the driver, its sender is
    assert [(e["sender"], e["content"]["m.relates_to"]["key"]) for e in reactions["chunk"]] == [
        (alice.user_id, "👍")
    ]
    if "reaction" in seen:
        assert reactions["chunk"][0]["event_id"] == seen["reaction"]
    # Bundled aggregations (CS "Aggregations of child events"): the thread summary on the root, the latest
    # edit on the edited message.
    root = await _get(session, server, bob.token, f"/v3/rooms/{room}/event/{seen['bobs']}")
    thread_summary = root["unsigned"]["m.relations"]["m.thread"]
    assert thread_summary["count"] == 1 and thread_summary["latest_event"]["event_id"] == seen["thread"]
    edited = await _get(session, server, bob.token, f"/v3/rooms/{room}/event/{seen['mine']}")
    assert edited["unsigned"]["m.relations"]["m.replace"]["event_id"] == seen["edit"]
    edit = await _get(session, server, bob.token, f"/v3/rooms/{room}/event/{seen['edit']}")
    assert edit["content"]["m.new_content"]["body"] == "hello from the browser, edited"
    # The second user marks it all read. (This also answers the browser's last long-polling /sync, which
    # otherwise holds the in-process Ranvier's shutdown for its 10 s grace period.)
    async with session.post(
        f"{server.url}/_matrix/client/v3/rooms/{room}/receipt/m.read/{urllib.parse.quote(seen['edit'])}",
        json={},
        headers={"Authorization": f"Bearer {bob.token}"},
    ) as resp:
        assert resp.status == 200, await resp.text()


def _script_args(server: Server) -> dict[str, Any]:
    alice, bob = server.accounts
    return {
        "hs": server.url,
        "user": alice.localpart,
        "user_id": alice.user_id,
        "password": alice.password,
        "room_name": f"browser test on {server.name}",
        "bob": {"user_id": bob.user_id, "token": bob.token},
    }


async def test_matrix_js_sdk_page(server: Server, http: aiohttp.ClientSession) -> None:
    await _register(server, http)
    seen = await asyncio.to_thread(
        run_script, "jssdk/drive.mjs", f"jssdk-{server.name}", _script_args(server)
    )
    assert seen["errors"] == [] and seen["error"] == "", seen
    assert not [e for e in seen["http_errors"] if e.startswith("5")], seen["http_errors"]
    print(f"{server.name}: ms per step {seen['step_ms']}; error answers {seen['http_errors']}")
    await _check_relations_as_second_user(http, server, seen)


async def test_hydrogen(server: Server, http: aiohttp.ClientSession) -> None:
    await _register(server, http)
    seen = await asyncio.to_thread(
        run_script, "hydrogen/drive.mjs", f"hydrogen-{server.name}", _script_args(server)
    )
    assert seen["errors"] == [], seen
    assert not [e for e in seen["http_errors"] if e.startswith("5")], seen["http_errors"]
    print(f"{server.name}: ms per step {seen['step_ms']}; error answers {seen['http_errors']}")
    await _check_relations_as_second_user(http, server, seen)
