"""The client API as an appservice and an operator see it, beyond the mautrix flow: login with
m.login.application_service, masquerading as a device, the appservice's room directory per network,
third-party look-ups, the admin listing and the metrics."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import yaml
from prometheus_client import generate_latest

from tests.appservice.conftest import Env
from tests.appservice.harness import AS_TOKEN, Client, start_homeserver, wait_until, write_config


async def test_login_and_device_masquerading(env: Env) -> None:
    sn = env.server_name
    as_client = Client(env.anon.session, env.anon.base, AS_TOKEN)
    status, body = await as_client.call(
        "POST",
        "/_matrix/client/v3/register",
        {"type": "m.login.application_service", "username": "bridge_eve"},
    )
    assert status == 200 and body["user_id"] == f"@bridge_eve:{sn}" and body["access_token"]
    status, body = await env.anon.call("GET", "/_matrix/client/v3/login")
    assert {"type": "m.login.application_service"} in body["flows"]
    login = {"type": "m.login.application_service", "identifier": {"type": "m.id.user", "user": "bridge_eve"}}
    # Without the as_token: 401; with it: a device and token for the user.
    status, body = await env.anon.call("POST", "/_matrix/client/v3/login", login)
    assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN")
    status, body = await as_client.call("POST", "/_matrix/client/v3/login", login)
    assert status == 200 and body["user_id"] == f"@bridge_eve:{sn}"
    device = body["device_id"]
    eve = Client(env.anon.session, env.anon.base, body["access_token"])
    status, body = await eve.call("GET", "/_matrix/client/v3/account/whoami")
    assert body["device_id"] == device
    # Outside the namespace: refused.
    await env.anon.register("frank")
    status, body = await as_client.call(
        "POST",
        "/_matrix/client/v3/login",
        {"type": "m.login.application_service", "identifier": {"type": "m.id.user", "user": "frank"}},
    )
    assert (status, body["errcode"]) == (403, "M_EXCLUSIVE")
    # Identity assertion with a device (Matrix 1.17 / MSC3202): the user's device, or 400 M_UNKNOWN_DEVICE.
    status, body = await as_client.call(
        "GET", "/_matrix/client/v3/account/whoami", user_id=f"@bridge_eve:{sn}", device_id=device
    )
    assert status == 200 and (body["user_id"], body["device_id"]) == (f"@bridge_eve:{sn}", device)
    status, body = await as_client.call(
        "GET", "/_matrix/client/v3/account/whoami", user_id=f"@bridge_eve:{sn}", device_id="NOPE"
    )
    assert (status, body["errcode"]) == (400, "M_UNKNOWN_DEVICE")
    # A user in the namespace the appservice never registered cannot be acted as.
    status, body = await as_client.call(
        "GET", "/_matrix/client/v3/account/whoami", user_id=f"@bridge_ghost:{sn}"
    )
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    # The as_token in the query string (older clients) works as well.
    status, body = await env.anon.call("GET", "/_matrix/client/v3/account/whoami", access_token=AS_TOKEN)
    assert status == 200 and body["user_id"] == f"@bridgebot:{sn}"


async def test_network_directory_and_thirdparty(env: Env) -> None:
    carol = await env.anon.register("carol")
    as_client = Client(env.anon.session, env.anon.base, AS_TOKEN)
    status, body = await carol.call("POST", "/_matrix/client/v3/createRoom", {"name": "IRC #chan"})
    room_id = body["room_id"]
    path = f"/_matrix/client/v3/directory/list/appservice/libera/{room_id}"
    status, body = await carol.call("PUT", path, {"visibility": "public"})
    assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    status, body = await as_client.call("PUT", path, {"visibility": "sideways"})
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    status, body = await as_client.call("PUT", path, {"visibility": "public"})
    assert status == 200

    async def listed(query: dict[str, object]) -> list[str]:
        status, body = await carol.call("POST", "/_matrix/client/v3/publicRooms", query)
        assert status == 200, body
        return [r["room_id"] for r in body["chunk"]]

    assert await listed({}) == []  # not in the main list
    assert await listed({"third_party_instance_id": "bridge|libera"}) == [room_id]
    assert await listed({"third_party_instance_id": "bridge|oftc"}) == []
    assert await listed({"include_all_networks": True}) == [room_id]
    status, body = await carol.call(
        "POST", "/_matrix/client/v3/publicRooms", {"third_party_instance_id": "nobody|libera"}
    )
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    status, _ = await as_client.call("PUT", path, {"visibility": "private"})
    assert await listed({"third_party_instance_id": "bridge|libera"}) == []

    # Third-party protocols come from the appservices that declare them, with the instance ids that
    # /publicRooms takes; look-ups are passed on with their fields.
    status, body = await carol.call("GET", "/_matrix/client/v3/thirdparty/protocols")
    assert (status, body) == (200, {})  # the bridge does not know "irc" yet (404 from it)
    env.bridge.protocols["irc"] = {
        "user_fields": ["network", "nickname"],
        "location_fields": ["network", "channel"],
        "icon": "mxc://example.org/irc",
        "field_types": {},
        "instances": [{"desc": "Libera", "network_id": "libera", "fields": {"network": "libera"}}],
    }
    env.bridge.locations = [
        {
            "alias": "#bridge_libera_chan:x",
            "protocol": "irc",
            "fields": {"network": "libera", "channel": "#chan"},
        }
    ]
    status, body = await carol.call("GET", "/_matrix/client/v3/thirdparty/protocols")
    assert status == 200 and body["irc"]["instances"][0]["instance_id"] == "bridge|libera"
    status, body = await carol.call("GET", "/_matrix/client/v3/thirdparty/protocol/irc")
    assert status == 200 and body["location_fields"] == ["network", "channel"]
    status, body = await carol.call("GET", "/_matrix/client/v3/thirdparty/protocol/xmpp")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    status, body = await carol.call("GET", "/_matrix/client/v3/thirdparty/location/irc", channel="#chan")
    assert status == 200 and [loc["alias"] for loc in body] == ["#bridge_libera_chan:x"]
    status, body = await carol.call("GET", "/_matrix/client/v3/thirdparty/location/irc", channel="#other")
    assert (status, body) == (200, [])


async def test_admin_listing_and_metrics(env: Env) -> None:
    carol = await env.anon.register("carol")
    status, body = await carol.call("GET", "/_ranvier/admin/v1/appservices")
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    await env.hs.storage.users.create_user(f"@root:{env.server_name}", "pw-root", is_admin=True)
    status, body = await env.anon.call(
        "POST",
        "/_matrix/client/v3/login",
        {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "root"},
            "password": "pw-root",
        },
    )
    root = Client(env.anon.session, env.anon.base, body["access_token"])
    status, body = await root.call("GET", "/_ranvier/admin/v1/appservices")
    assert status == 200 and body["total"] == 1
    entry = body["appservices"][0]
    assert entry["id"] == "bridge" and entry["queued_events"] == 0 and entry["failed_attempts"] == 0
    text = generate_latest(env.hs.metrics.registry).decode()
    assert 'ranvier_appservice_queued_events{appservice="bridge"} 0.0' in text
    assert 'ranvier_appservice_failed_attempts_total{appservice="bridge"} 0.0' in text


async def test_create_room_with_an_exclusive_alias(env: Env) -> None:
    carol = await env.anon.register("carol")
    status, body = await carol.call(
        "POST", "/_matrix/client/v3/createRoom", {"room_alias_name": "bridge_taken"}
    )
    assert (status, body["errcode"]) == (400, "M_EXCLUSIVE")
    status, body = await carol.call("POST", "/_matrix/client/v3/createRoom", {"room_alias_name": "carols"})
    assert status == 200
    # The appservice itself may.
    as_client = Client(env.anon.session, env.anon.base, AS_TOKEN)
    status, body = await as_client.call(
        "POST", "/_matrix/client/v3/createRoom", {"room_alias_name": "bridge_taken"}
    )
    assert status == 200, body


async def test_to_device_messages_for_namespace_devices_are_pushed(env: Env) -> None:
    sn = env.server_name
    as_client = Client(env.anon.session, env.anon.base, AS_TOKEN)
    status, body = await as_client.call(
        "POST",
        "/_matrix/client/v3/register",
        {"type": "m.login.application_service", "username": "bridge_dev"},
    )
    assert status == 200
    device = body["device_id"]
    carol = await env.anon.register("carol")
    status, carols = await carol.call("GET", "/_matrix/client/v3/account/whoami")
    messages = {
        "messages": {
            f"@bridge_dev:{sn}": {device: {"secret": "for the bridge"}},
            carol.user_id: {carols["device_id"]: {"secret": "not for the bridge"}},
        }
    }
    status, _ = await carol.call("PUT", "/_matrix/client/v3/sendToDevice/m.test.secret/td1", messages)
    assert status == 200
    await wait_until(lambda: bool(env.bridge.to_device), "the to-device message pushed")
    assert len(env.bridge.to_device) == 1
    td = env.bridge.to_device[0]
    assert (str(td.to_user_id), str(td.to_device_id), str(td.sender)) == (
        f"@bridge_dev:{sn}",
        device,
        carol.user_id,
    )
    assert str(td.type) == "m.test.secret" and td.content["secret"] == "for the bridge"


async def test_devices_without_uia_and_invite_queries(env: Env) -> None:
    sn = env.server_name
    as_client = Client(env.anon.session, env.anon.base, AS_TOKEN)
    status, _ = await as_client.call(
        "POST",
        "/_matrix/client/v3/register",
        {"type": "m.login.application_service", "username": "bridge_gus", "inhibit_login": True},
    )
    assert status == 200
    gus = f"@bridge_gus:{sn}"
    # AS "Device management": PUT creates a device for the appservice's user, DELETE needs no UIA.
    status, _ = await as_client.call(
        "PUT", "/_matrix/client/v3/devices/BRIDGEDEV", {"display_name": "b"}, user_id=gus
    )
    assert status == 201
    status, body = await as_client.call("GET", "/_matrix/client/v3/devices/BRIDGEDEV", user_id=gus)
    assert status == 200 and body["display_name"] == "b"
    status, _ = await as_client.call("DELETE", "/_matrix/client/v3/devices/BRIDGEDEV", {}, user_id=gus)
    assert status == 200
    status, body = await as_client.call("GET", "/_matrix/client/v3/devices/BRIDGEDEV", user_id=gus)
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    # Anyone else still needs the device to exist, and UIA to delete one.
    carol = await env.anon.register("carol")
    status, body = await carol.call("PUT", "/_matrix/client/v3/devices/NEWDEV", {})
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    status, carols = await carol.call("GET", "/_matrix/client/v3/account/whoami")
    status, _ = await carol.call("DELETE", f"/_matrix/client/v3/devices/{carols['device_id']}", {})
    assert status == 401

    # An invite naming an unknown user of the namespace asks the bridge first (it registers the user).
    status, body = await carol.call("POST", "/_matrix/client/v3/createRoom", {})
    room_id = body["room_id"]
    status, _ = await carol.call(
        "POST", f"/_matrix/client/v3/rooms/{room_id}/invite", {"user_id": f"@bridge_known2:{sn}"}
    )
    assert status == 200
    assert env.bridge.user_queries == [f"@bridge_known2:{sn}"]
    assert await env.hs.storage.users.user_exists(f"@bridge_known2:{sn}")
    # A known user is not asked about.
    status, _ = await carol.call("POST", f"/_matrix/client/v3/rooms/{room_id}/invite", {"user_id": gus})
    assert status == 200 and env.bridge.user_queries == [f"@bridge_known2:{sn}"]


async def test_msc3202_device_lists_and_key_counts(env: Env) -> None:
    as_client = Client(env.anon.session, env.anon.base, AS_TOKEN)
    status, body = await as_client.call(
        "POST",
        "/_matrix/client/v3/register",
        {"type": "m.login.application_service", "username": "bridge_e2ee"},
    )
    puppet, device = body["user_id"], body["device_id"]
    # The puppet's device publishes one-time keys (masquerading as that device).
    otks = {f"signed_curve25519:AAAA{i}": {"key": f"k{i}", "signatures": {}} for i in range(3)}
    status, body = await as_client.call(
        "POST", "/_matrix/client/v3/keys/upload", {"one_time_keys": otks}, user_id=puppet, device_id=device
    )
    assert status == 200 and body["one_time_key_counts"]["signed_curve25519"] == 3
    # Without ?device_id= the appservice has no device to upload keys for.
    status, body = await as_client.call(
        "POST", "/_matrix/client/v3/keys/upload", {"one_time_keys": {}}, user_id=puppet
    )
    assert (status, body["errcode"]) == (400, "M_MISSING_PARAM")
    carol = await env.anon.register("carol")
    status, body = await carol.call("POST", "/_matrix/client/v3/createRoom", {"invite": [puppet]})
    room_id = body["room_id"]
    status, _ = await as_client.call("POST", f"/_matrix/client/v3/join/{room_id}", {}, user_id=puppet)
    assert status == 200
    # Carol's device list changes (a device renamed): the bridge shares a room with her, so it hears.
    status, me = await carol.call("GET", "/_matrix/client/v3/account/whoami")
    status, _ = await carol.call(
        "PUT", f"/_matrix/client/v3/devices/{me['device_id']}", {"display_name": "phone"}
    )
    assert status == 200
    await wait_until(
        lambda: any(carol.user_id in lists.changed for lists in env.bridge.device_lists),
        "carol's device list change",
    )
    # Carol claims one of the puppet's keys and writes to its device: the count comes with the message.
    status, body = await carol.call(
        "POST", "/_matrix/client/v3/keys/claim", {"one_time_keys": {puppet: {device: "signed_curve25519"}}}
    )
    assert status == 200 and body["one_time_keys"][puppet][device]
    status, _ = await carol.call(
        "PUT",
        "/_matrix/client/v3/sendToDevice/m.room.encrypted/e1",
        {"messages": {puppet: {device: {"x": 1}}}},
    )
    assert status == 200
    await wait_until(lambda: bool(env.bridge.otk_counts), "the key count")
    count = env.bridge.otk_counts[-1][puppet][device]
    assert count.signed_curve25519 == 2


async def test_timestamp_massaging(env: Env) -> None:
    carol = await env.anon.register("carol")
    as_client = Client(env.anon.session, env.anon.base, AS_TOKEN)
    status, body = await as_client.call("POST", "/_matrix/client/v3/createRoom", {"preset": "public_chat"})
    room_id = body["room_id"]
    status, _ = await carol.call("POST", f"/_matrix/client/v3/join/{room_id}", {})
    assert status == 200
    path = f"/_matrix/client/v3/rooms/{room_id}"
    status, body = await as_client.call(
        "PUT", f"{path}/send/m.room.message/ts1", {"msgtype": "m.text", "body": "old"}, ts="1234567890123"
    )
    assert status == 200
    status, event = await carol.call("GET", f"{path}/event/{body['event_id']}")
    assert event["origin_server_ts"] == 1234567890123
    status, body = await as_client.call("PUT", f"{path}/state/m.room.topic", {"topic": "t"}, ts="1000")
    assert status == 200
    status, event = await carol.call("GET", f"{path}/event/{body['event_id']}")
    assert event["origin_server_ts"] == 1000
    status, body = await as_client.call("PUT", f"{path}/send/m.room.message/ts2", {"body": "x"}, ts="-5")
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    # Anyone else's ts is ignored.
    status, body = await carol.call("PUT", f"{path}/send/m.room.message/ts3", {"body": "now"}, ts="1000")
    status, event = await carol.call("GET", f"{path}/event/{body['event_id']}")
    assert event["origin_server_ts"] > 1_000_000_000_000


async def test_ping_errors(tmp_path: Path) -> None:
    """M_CONNECTION_FAILED for an appservice that is down, M_URL_NOT_SET for one without a url; a
    url-less appservice is never pushed to but still acts through the client API."""
    config, _ = write_config(tmp_path)
    silent = {
        "id": "silent",
        "url": None,
        "as_token": "silent_as_token",
        "hs_token": "silent_hs_token",
        "sender_localpart": "silentbot",
        "namespaces": {"users": [{"exclusive": True, "regex": "@silent_.*"}]},
    }
    (tmp_path / "silent.yaml").write_text(yaml.safe_dump(silent))
    data = yaml.safe_load(config.read_text())
    data["app_service_config_files"].append("silent.yaml")
    config.write_text(yaml.safe_dump(data))
    hs = await start_homeserver(config)
    try:
        base = f"http://127.0.0.1:{hs.ports['client']}"
        async with aiohttp.ClientSession() as session:
            status, body = await Client(session, base, AS_TOKEN).call(
                "POST", "/_matrix/client/v1/appservice/bridge/ping", {}
            )
            assert (status, body["errcode"]) == (502, "M_CONNECTION_FAILED")
            silent_client = Client(session, base, "silent_as_token")
            status, body = await silent_client.call("POST", "/_matrix/client/v1/appservice/silent/ping", {})
            assert (status, body["errcode"]) == (400, "M_URL_NOT_SET")
            status, body = await silent_client.call("GET", "/_matrix/client/v3/account/whoami")
            assert status == 200 and body["user_id"] == f"@silentbot:{hs.server_name}"
            assert "silent" not in hs.appservice_pusher.workers
    finally:
        await hs.stop()


async def test_rate_limited_appservice_is_limited_per_user(tmp_path: Path) -> None:
    config, _ = write_config(tmp_path, rate_limited=True, message_burst=3)
    hs = await start_homeserver(config)
    try:
        base = f"http://127.0.0.1:{hs.ports['client']}"
        async with aiohttp.ClientSession() as session:
            as_client = Client(session, base, AS_TOKEN)
            puppets = []
            for name in ("bridge_p1", "bridge_p2"):
                status, body = await as_client.call(
                    "POST",
                    "/_matrix/client/v3/register",
                    {"type": "m.login.application_service", "username": name, "inhibit_login": True},
                )
                puppets.append(body["user_id"])
            status, body = await as_client.call(
                "POST", "/_matrix/client/v3/createRoom", {"preset": "public_chat"}
            )
            room_id = body["room_id"]
            for puppet in puppets:
                status, _ = await as_client.call(
                    "POST", f"/_matrix/client/v3/join/{room_id}", {}, user_id=puppet
                )
            path = f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/"
            for i in range(3):
                status, _ = await as_client.call("PUT", f"{path}a{i}", {"body": "x"}, user_id=puppets[0])
                assert status == 200
            status, body = await as_client.call("PUT", f"{path}a3", {"body": "x"}, user_id=puppets[0])
            assert (status, body["errcode"]) == (429, "M_LIMIT_EXCEEDED")
            # Another puppet of the same appservice has its own bucket.
            status, _ = await as_client.call("PUT", f"{path}b0", {"body": "x"}, user_id=puppets[1])
            assert status == 200
    finally:
        await hs.stop()


async def test_msc3202_device_lists_left(env: Env) -> None:
    """A user who no longer shares any room with the bridge's users is in ``left`` (beyond Synapse, which
    leaves it uncomputed); one who still shares another room is not."""
    as_client = Client(env.anon.session, env.anon.base, AS_TOKEN)
    status, body = await as_client.call(
        "POST",
        "/_matrix/client/v3/register",
        {"type": "m.login.application_service", "username": "bridge_left"},
    )
    puppet = body["user_id"]
    carol = await env.anon.register("carol")
    dave = await env.anon.register("dave")
    rooms = []
    for _ in range(2):
        status, body = await carol.call(
            "POST", "/_matrix/client/v3/createRoom", {"invite": [puppet, dave.user_id]}
        )
        rooms.append(body["room_id"])
        for joiner in (puppet,):
            status, _ = await as_client.call(
                "POST", f"/_matrix/client/v3/join/{body['room_id']}", {}, user_id=joiner
            )
            assert status == 200
    status, _ = await dave.call("POST", f"/_matrix/client/v3/join/{rooms[0]}", {})
    assert status == 200
    # Carol leaves one of two shared rooms: she still shares the other, so she has not left.
    status, _ = await carol.call("POST", f"/_matrix/client/v3/rooms/{rooms[1]}/leave", {})
    assert status == 200
    # Dave leaves his only shared room: he has.
    status, _ = await dave.call("POST", f"/_matrix/client/v3/rooms/{rooms[0]}/leave", {})
    assert status == 200
    await wait_until(
        lambda: any(dave.user_id in lists.left for lists in env.bridge.device_lists), "dave in left"
    )
    assert not any(carol.user_id in lists.left for lists in env.bridge.device_lists)
    # The bridge's own user leaving the last room it shared with Carol: now Carol has left too.
    status, _ = await as_client.call("POST", f"/_matrix/client/v3/rooms/{rooms[0]}/leave", {}, user_id=puppet)
    assert status == 200
    await wait_until(
        lambda: any(carol.user_id in lists.left for lists in env.bridge.device_lists), "carol in left"
    )
