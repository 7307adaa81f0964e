"""Pushers and deliveries to a push gateway started by the test on loopback (Push Gateway API): one
notify per notifying event, across a gateway outage and a restart of Ranvier; ``event_id_only``;
rejected pushkeys removed; ``/pushers/set`` validation, ``append`` and deletion."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from ranvier.app import Homeserver
from ranvier.federation.ip_blocklist import IpBlocklist
from ranvier.push.delivery import PushDelivery
from tests.scenarios.servers import Client, eventually, fed_port_of, start_server

NOTIFY = "/_matrix/push/v1/notify"


class Gateway:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.status = 200
        self.rejected: list[str] = []
        self.failed_attempts = 0
        self.server: TestServer | None = None

    async def notify(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.status != 200:
            self.failed_attempts += 1
            return web.json_response({"error": "down"}, status=self.status)
        self.received.append(body["notification"])
        return web.json_response({"rejected": self.rejected})

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.port}{NOTIFY}"

    def event_ids(self) -> list[str]:
        return [n["event_id"] for n in self.received]


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    gw = Gateway()
    app = web.Application()
    app.router.add_post(NOTIFY, gw.notify)
    gw.server = TestServer(app, host="127.0.0.1")
    await gw.server.start_server()
    yield gw
    await gw.server.close()


def pusher_body(url: str, pushkey: str = "key-1", **extra: Any) -> dict[str, Any]:
    return {
        "kind": "http",
        "app_id": "org.example.app.ios",
        "pushkey": pushkey,
        "app_display_name": "Example",
        "device_display_name": "Bob's phone",
        "lang": "en",
        "data": {"url": url, "custom": "kept"},
        **extra,
    }


async def test_one_notify_per_event_across_an_outage_and_a_restart(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession, gateway: Gateway
) -> None:
    hs = await start_server(tmp_path / "a")
    servers.append(hs)
    alice = await Client.register(session, hs, "alice")
    bob = await Client.register(session, hs, "bob")
    room = await alice.create_room(name="Pushed")
    await bob.ok("POST", f"/join/{room}", {})
    await bob.ok("POST", "/pushers/set", pusher_body(gateway.url))
    listed = (await bob.ok("GET", "/pushers"))["pushers"]
    assert [p["pushkey"] for p in listed] == ["key-1"] and listed[0]["data"]["url"] == gateway.url

    first = await alice.send_text(room, "one")
    await eventually(lambda: _has(gateway, [first]), timeout=20)
    note = gateway.received[0]
    assert note["room_id"] == room and note["type"] == "m.room.message" and note["sender"] == alice.user_id
    assert note["content"]["body"] == "one" and note["room_name"] == "Pushed"
    assert note["counts"] == {"unread": 1}
    # two members: .m.rule.room_one_to_one, with its sound
    assert note["devices"] == [
        {
            "app_id": "org.example.app.ios",
            "pushkey": "key-1",
            "data": {"custom": "kept"},
            "tweaks": {"sound": "default"},
        }
    ]
    plain = await alice.send_text(room, "also pushed")
    await alice.ok(
        "PUT", f"/rooms/{room}/send/m.room.message/n1", {"msgtype": "m.notice", "body": "a bot speaks"}
    )

    # The gateway goes down: what notifies meanwhile waits, and survives a restart of Ranvier.
    gateway.status = 503
    second = await alice.send_text(room, "two")
    port = fed_port_of(hs)
    await hs.stop()
    servers.remove(hs)
    hs = await start_server(tmp_path / "a", port)
    servers.append(hs)
    gateway.status = 200
    alice = Client(session, hs, alice.user_id, alice.token)
    third = await alice.send_text(room, "three")
    # a notice (.m.rule.suppress_notices) is never pushed
    await eventually(lambda: _has(gateway, [first, plain, second, third]), timeout=30)
    assert len(gateway.event_ids()) == len(set(gateway.event_ids())) == 4


async def _has(gateway: Gateway, expected: list[str]) -> bool:
    return gateway.event_ids() == expected


async def test_event_id_only_and_rejected_pushkeys(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession, gateway: Gateway
) -> None:
    hs = await start_server(tmp_path / "a")
    servers.append(hs)
    alice = await Client.register(session, hs, "alice")
    bob = await Client.register(session, hs, "bob")
    room = await alice.create_room(name="Quiet")
    await bob.ok("POST", f"/join/{room}", {})
    body = pusher_body(gateway.url)
    body["data"]["format"] = "event_id_only"
    await bob.ok("POST", "/pushers/set", body)
    mention = {"msgtype": "m.text", "body": "bob!", "m.mentions": {"user_ids": [bob.user_id]}}
    loud = (await alice.ok("PUT", f"/rooms/{room}/send/m.room.message/m1", mention))["event_id"]
    await eventually(lambda: _has(gateway, [loud]), timeout=20)
    note = gateway.received[0]
    assert set(note) == {"event_id", "room_id", "counts", "devices", "prio"}
    assert note["prio"] == "high"
    assert note["devices"][0]["tweaks"] == {"sound": "default", "highlight": True}
    assert note["devices"][0]["data"] == {"custom": "kept", "format": "event_id_only"}

    # The gateway fails for a while: the same notification is retried after a back-off, and arrives once.
    gateway.status = 500
    later = await alice.send_text(room, "after the outage")

    async def attempted() -> bool:
        return gateway.failed_attempts >= 1

    await eventually(attempted, timeout=20)
    gateway.status = 200
    await eventually(lambda: _has(gateway, [loud, later]), timeout=20)

    # The gateway rejects the pushkey: the pusher is removed.
    gateway.rejected = ["key-1"]
    await alice.send_text(room, "again")

    async def removed() -> bool:
        return bool((await bob.ok("GET", "/pushers"))["pushers"] == [])

    await eventually(removed, timeout=20)


async def test_pushers_set_validation_append_and_delete(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    hs = await start_server(tmp_path / "a")
    servers.append(hs)
    alice = await Client.register(session, hs, "alice")
    bob = await Client.register(session, hs, "bob")
    url = "https://push.example.org" + NOTIFY

    status, err = await bob.call("POST", "/pushers/set", {"kind": "http", "app_id": "a"})
    assert (status, err["errcode"]) == (400, "M_MISSING_PARAM")
    status, err = await bob.call("POST", "/pushers/set", {**pusher_body(url), "lang": 1})
    assert (status, err["errcode"]) == (400, "M_INVALID_PARAM")
    no_lang = pusher_body(url)
    del no_lang["lang"]
    status, err = await bob.call("POST", "/pushers/set", no_lang)
    assert (status, err["errcode"]) == (400, "M_MISSING_PARAM")
    status, err = await bob.call("POST", "/pushers/set", pusher_body("https://push.example.org/elsewhere"))
    assert (status, err["errcode"]) == (400, "M_INVALID_PARAM")
    status, err = await bob.call("POST", "/pushers/set", {**pusher_body(url), "kind": "carrier-pigeon"})
    assert status == 400

    # Without append, another user's pusher with the same app id and pushkey goes; with it, both stay.
    await alice.ok("POST", "/pushers/set", pusher_body(url))
    await bob.ok("POST", "/pushers/set", pusher_body(url))
    assert (await alice.ok("GET", "/pushers"))["pushers"] == []
    await alice.ok("POST", "/pushers/set", pusher_body(url, append=True))
    assert len((await alice.ok("GET", "/pushers"))["pushers"]) == 1
    assert len((await bob.ok("GET", "/pushers"))["pushers"]) == 1

    # Updating keeps one pusher (append, so Alice's stays); kind null deletes it.
    await bob.ok("POST", "/pushers/set", pusher_body(url, device_display_name="Bob's tablet", append=True))
    assert [p["device_display_name"] for p in (await bob.ok("GET", "/pushers"))["pushers"]] == [
        "Bob's tablet"
    ]
    await bob.ok("POST", "/pushers/set", {"kind": None, "app_id": "org.example.app.ios", "pushkey": "key-1"})
    assert (await bob.ok("GET", "/pushers"))["pushers"] == []
    assert len((await alice.ok("GET", "/pushers"))["pushers"]) == 1


async def test_gateways_on_blocked_networks_are_not_called(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession, gateway: Gateway
) -> None:
    hs = await start_server(tmp_path / "a")  # its own blocklist allows loopback (test federation)
    servers.append(hs)
    alice = await Client.register(session, hs, "alice")
    bob = await Client.register(session, hs, "bob")
    room = await alice.create_room(name="Blocked")
    await bob.ok("POST", f"/join/{room}", {})
    await hs.push_delivery.stop()
    await bob.ok("POST", "/pushers/set", pusher_body(gateway.url))
    await alice.send_text(room, "to a gateway on loopback")
    strict = PushDelivery(
        hs.storage, IpBlocklist(), hs.push_actions.take_notified
    )  # the default: loopback and private ranges blocked
    await strict.start()
    try:
        [pusher] = await hs.storage.pushers.all_pushers()
        assert await strict._deliver(pusher) is False
    finally:
        await strict.stop()
    assert gateway.received == []
    [after] = await hs.storage.pushers.all_pushers()
    assert after.last_stream_ordering == pusher.last_stream_ordering  # still owed, not skipped
