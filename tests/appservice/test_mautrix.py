"""mautrix-python's appservice module as the appservice against a real Ranvier on loopback: exclusive
namespaces, masquerading, pushes with the hs_token, ping, user and alias queries, and delivery through an
appservice outage and a Ranvier restart (every event once, in order)."""

from __future__ import annotations

from typing import Any

from mautrix.appservice import IntentAPI
from mautrix.types import ReceiptType, RoomAlias, UserID

from tests.appservice.conftest import Env
from tests.appservice.harness import AS_TOKEN, Client, start_homeserver, wait_until


async def test_namespaces_masquerading_pushes_ping_and_queries(env: Env) -> None:
    bot = env.bridge.appservice.intent
    sn = env.server_name
    # The sender exists from the start; the as_token acts as it.
    assert (await bot.whoami()).user_id == f"@bridgebot:{sn}"

    # Registering a user in the namespace with m.login.application_service (inhibit_login).
    puppet_id = UserID(f"@bridge_alice:{sn}")
    puppet = bot.user(puppet_id)
    await puppet.ensure_registered()
    assert (await puppet.whoami()).user_id == puppet_id

    # Others cannot take names in the exclusive namespaces.
    status, body = await env.anon.call(
        "POST",
        "/_matrix/client/v3/register",
        {"username": "bridge_mallory", "password": "x", "auth": {"type": "m.login.dummy"}},
    )
    assert (status, body["errcode"]) == (400, "M_EXCLUSIVE")
    carol = await env.anon.register("carol")
    status, body = await carol.call("POST", "/_matrix/client/v3/createRoom", {})
    assert status == 200
    room_id = body["room_id"]
    status, body = await carol.call(
        "PUT", f"/_matrix/client/v3/directory/room/%23bridge_x:{sn}", {"room_id": room_id}
    )
    assert (status, body["errcode"]) == (400, "M_EXCLUSIVE")
    # The appservice cannot act outside its namespace, nor register outside it.
    status, body = await env.anon.call(
        "GET", "/_matrix/client/v3/account/whoami", user_id=carol.user_id, access_token=AS_TOKEN
    )
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    as_client = Client(env.anon.session, env.anon.base, AS_TOKEN)
    status, body = await as_client.call(
        "POST", "/_matrix/client/v3/register", {"username": "dave", "type": "m.login.application_service"}
    )
    assert (status, body["errcode"]) == (400, "M_EXCLUSIVE")
    # A wrong as_token is an unknown token.
    status, body = await Client(env.anon.session, env.anon.base, "nope").call(
        "POST", "/_matrix/client/v3/register", {"username": "bridge_x", "type": "m.login.application_service"}
    )
    assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN")

    # Masquerading: the puppet joins carol's room and speaks; carol sees the puppet as the sender.
    status, _ = await carol.call("POST", f"/_matrix/client/v3/rooms/{room_id}/invite", {"user_id": puppet_id})
    assert status == 200
    await puppet.join_room(room_id)
    puppet_event = await puppet.send_text(room_id, "hello from the bridge")
    status, body = await carol.call("GET", f"/_matrix/client/v3/rooms/{room_id}/event/{puppet_event}")
    assert status == 200 and body["sender"] == puppet_id

    # Pushes (mautrix refuses a transaction without its hs_token): carol's message reaches the bridge,
    # since a member of the room is in its namespace.
    carol_event = await carol.send_text(room_id, "hi puppet", "t1")
    await wait_until(lambda: carol_event in env.bridge.event_ids(), "carol's message pushed")
    pushed = env.bridge.event_ids()
    assert pushed.index(puppet_event) < pushed.index(carol_event)
    assert len(pushed) == len(set(pushed))
    # A room without any namespace member is not pushed.
    status, body = await carol.call("POST", "/_matrix/client/v3/createRoom", {})
    private = await carol.send_text(body["room_id"], "not for the bridge", "t2")
    marker = await carol.send_text(room_id, "marker", "t3")
    await wait_until(lambda: marker in env.bridge.event_ids(), "marker pushed")
    assert private not in env.bridge.event_ids()

    # A room with an alias in the bridge's alias namespace concerns it, with no member of its own there.
    status, body = await carol.call("POST", "/_matrix/client/v3/createRoom", {})
    aliased_room = body["room_id"]
    await bot.add_room_alias(aliased_room, "bridge_aliased")  # type: ignore[arg-type]
    aliased = await carol.send_text(aliased_room, "in an aliased room", "t4")
    await wait_until(lambda: aliased in env.bridge.event_ids(), "a message in the aliased room pushed")

    # Ephemeral data (receive_ephemeral): carol's typing and read receipt in the room the bridge is in.
    status, _ = await carol.call(
        "PUT",
        f"/_matrix/client/v3/rooms/{room_id}/typing/{carol.user_id}",
        {"typing": True, "timeout": 30000},
    )
    assert status == 200
    status, _ = await carol.call(
        "POST", f"/_matrix/client/v3/rooms/{room_id}/receipt/m.read/{puppet_event}", {}
    )
    assert status == 200

    def ephemeral(kind: str) -> list[Any]:
        return [e for e in env.bridge.received if str(e.type) == kind and str(e.room_id) == room_id]

    await wait_until(
        lambda: bool(ephemeral("m.typing")) and bool(ephemeral("m.receipt")), "typing and receipt"
    )
    assert ephemeral("m.typing")[-1].content.user_ids == [carol.user_id]
    receipt = ephemeral("m.receipt")[-1].content
    assert carol.user_id in receipt[puppet_event][ReceiptType.READ]

    # Ping: Ranvier calls the appservice's /ping with the hs_token and reports the round trip.
    # (mautrix reports a 0 ms round trip as -1; it raises if the ping failed.)
    assert isinstance(await env.bridge.appservice.ping_self("ping-1"), int)
    status, body = await as_client.call(
        "POST", "/_matrix/client/v1/appservice/bridge/ping", {"transaction_id": "p2"}
    )
    assert status == 200 and isinstance(body["duration_ms"], int) and body["duration_ms"] >= 0
    status, body = await as_client.call("POST", "/_matrix/client/v1/appservice/other/ping", {})
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")

    # Alias query: an unknown alias in the namespace is asked for; the bridge creates it; lookup retried.
    async def create_alias(alias: str) -> None:
        await bot.add_room_alias(room_id, RoomAlias(alias).split(":")[0][1:], override=True)  # type: ignore

    env.bridge.on_alias = create_alias
    status, body = await carol.call("GET", f"/_matrix/client/v3/directory/room/%23bridge_chan:{sn}")
    assert status == 200 and body["room_id"] == room_id
    assert env.bridge.alias_queries == [f"#bridge_chan:{sn}"]
    env.bridge.on_alias = None  # the bridge knows no other alias
    status, body = await carol.call("GET", f"/_matrix/client/v3/directory/room/%23bridge_none:{sn}")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    # User query: a profile look-up of an unknown user in the namespace asks the bridge, which registers it.
    status, _ = await carol.call("GET", f"/_matrix/client/v3/profile/@bridge_known1:{sn}")
    assert status == 200
    status, body = await carol.call("GET", f"/_matrix/client/v3/profile/@bridge_unknown:{sn}")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    assert env.bridge.user_queries == [f"@bridge_known1:{sn}", f"@bridge_unknown:{sn}"]


async def _room_with_puppet(env: Env) -> tuple[Client, str, IntentAPI]:
    puppet = env.bridge.appservice.intent.user(UserID(f"@bridge_bob:{env.server_name}"))
    await puppet.ensure_registered()
    carol = await env.anon.register("carol")
    status, body = await carol.call("POST", "/_matrix/client/v3/createRoom", {"invite": [puppet.mxid]})
    assert status == 200
    room_id = body["room_id"]
    await puppet.join_room(room_id)
    return carol, room_id, puppet


async def test_appservice_down_then_back_gets_every_event_once_in_order(env_any_engine: Env) -> None:
    env = env_any_engine
    carol, room_id, puppet = await _room_with_puppet(env)
    first = await carol.send_text(room_id, "before", "b0")
    await wait_until(lambda: first in env.bridge.event_ids(), "first message pushed")
    await env.bridge.stop()
    # Beyond one transaction (100 events) and beyond the per-user message burst (100): the registration
    # says rate_limited: false, so the puppet (as_token + ?user_id=) is never limited.
    as_client = Client(env.anon.session, env.anon.base, AS_TOKEN)
    sent = [
        await as_client.send_text(room_id, f"while down {i}", f"d{i}", user_id=puppet.mxid)
        for i in range(150)
    ]
    sent.append(await carol.send_text(room_id, "last", "d-last"))
    # Failed attempts are recorded and the events stay queued.
    worker = env.hs.appservice_pusher.workers["bridge"]
    await wait_until(lambda: worker.failures >= 2, "failed attempts while the appservice is down")
    assert worker.stats.queued_events >= 1
    await env.bridge.start()
    await env.bridge.appservice.ping_self("back")  # ends the back-off at once
    await wait_until(lambda: sent[-1] in env.bridge.event_ids(), "the backlog pushed")
    pushed = env.bridge.event_ids()
    assert pushed == [first, *sent]


async def test_ranvier_restart_delivers_undelivered_transactions(env_any_engine: Env) -> None:
    env = env_any_engine
    carol, room_id, _ = await _room_with_puppet(env)
    await env.bridge.stop()
    sent = [await carol.send_text(room_id, f"queued {i}", f"q{i}") for i in range(20)]
    worker = env.hs.appservice_pusher.workers["bridge"]
    await wait_until(lambda: worker.failures >= 1, "a failed attempt")
    await env.hs.stop()
    env.hs = await start_homeserver(env.config)
    await env.bridge.start()
    await wait_until(lambda: sent[-1] in env.bridge.event_ids(), "queued events pushed after the restart")
    pushed = [e for e in env.bridge.event_ids() if e in sent]
    assert pushed == sent
