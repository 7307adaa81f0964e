"""The user admin endpoints against a real Ranvier: access, listing, create/modify, passwords, whois,
joined rooms, devices, shadow bans, rate-limit overrides, login as user, deactivation."""

from __future__ import annotations

import logging

import pytest

from tests.admin.conftest import MESSAGE_BURST, AdminServer, Api

V1 = "/_synapse/admin/v1"
V2 = "/_synapse/admin/v2"


async def login(server: AdminServer, user_id: str, password: str) -> tuple[int, dict[str, object]]:
    return await server.anonymous().call(
        "POST",
        "/_matrix/client/v3/login",
        {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user_id},
            "password": password,
        },
    )


async def test_non_admins_are_refused_and_every_action_is_logged(
    admin_server: AdminServer, caplog: pytest.LogCaptureFixture
) -> None:
    admin = await admin_server.user("root", admin=True)
    alice = await admin_server.user("alice")
    status, body = await alice.call("GET", V2 + "/users")
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    status, body = await admin_server.anonymous().call("GET", V2 + "/users")
    assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN")
    with caplog.at_level(logging.INFO, logger="ranvier.admin"):
        await admin.ok("POST", f"{V1}/users/{alice.user_id}/shadow_ban")
    logged = [r.getMessage() for r in caplog.records if r.name == "ranvier.admin"]
    assert any(admin.user_id in m and "shadow-banned" in m and alice.user_id in m for m in logged), logged
    # The flag is read on each request: a demoted admin loses access at once.
    await admin.ok("PUT", f"{V2}/users/{alice.user_id}", {"admin": True})
    assert (await alice.call("GET", V2 + "/users"))[0] == 200
    await admin.ok("PUT", f"{V2}/users/{alice.user_id}", {"admin": False})
    assert (await alice.call("GET", V2 + "/users"))[0] == 403
    # The flag alone.
    assert await admin.ok("GET", f"{V1}/users/{alice.user_id}/admin") == {"admin": False}
    await admin.ok("PUT", f"{V1}/users/{alice.user_id}/admin", {"admin": True})
    assert await admin.ok("GET", f"{V1}/users/{alice.user_id}/admin") == {"admin": True}
    status, body = await admin.call("PUT", f"{V1}/users/{admin.user_id}/admin", {"admin": False})
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    assert await admin.ok("GET", V1 + "/username_available", username="newcomer") == {"available": True}
    status, body = await admin.call("GET", V1 + "/username_available", username="alice")
    assert (status, body["errcode"]) == (400, "M_USER_IN_USE")


async def test_list_users_filters_orders_and_pages(admin_server: AdminServer) -> None:
    admin = await admin_server.user("root", admin=True)
    for name in ("carol", "bob", "dave"):
        await admin_server.user(name)
    await admin.ok("PUT", f"{V2}/users/@bob:{admin_server.hs.server_name}", {"displayname": "zed"})
    page = await admin.ok("GET", V2 + "/users", limit="2")
    assert page["total"] == 4 and len(page["users"]) == 2 and page["next_token"] == "2"
    assert [u["name"].split(":")[0] for u in page["users"]] == ["@bob", "@carol"]
    rest = await admin.ok("GET", V2 + "/users", limit="2", **{"from": page["next_token"]})
    assert [u["name"].split(":")[0] for u in rest["users"]] == ["@dave", "@root"] and "next_token" not in rest
    by_name = await admin.ok("GET", V2 + "/users", order_by="displayname", dir="b")
    assert by_name["users"][0]["displayname"] == "zed"
    assert [u["name"] for u in (await admin.ok("GET", V2 + "/users", name="zed"))["users"]] == [
        f"@bob:{admin_server.hs.server_name}"
    ]
    admins = await admin.ok("GET", V2 + "/users", admins="true")
    assert [u["name"] for u in admins["users"]] == [admin.user_id]
    entry = admins["users"][0]
    assert entry["admin"] is True and entry["deactivated"] is False and isinstance(entry["creation_ts"], int)
    status, body = await admin.call("GET", V2 + "/users", order_by="nonsense")
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")


async def test_put_creates_then_modifies_and_reset_password(admin_server: AdminServer) -> None:
    admin = await admin_server.user("root", admin=True)
    user_id = f"@erin:{admin_server.hs.server_name}"
    status, created = await admin.call(
        "PUT", f"{V2}/users/{user_id}", {"password": "first-pw", "displayname": "E"}
    )
    assert status == 201 and created["name"] == user_id and created["displayname"] == "E"
    assert (await login(admin_server, user_id, "first-pw"))[0] == 200
    status, _ = await admin.call("PUT", f"{V2}/users/{user_id}", {"password": "second-pw", "admin": True})
    assert status == 200
    assert (await admin.ok("GET", f"{V2}/users/{user_id}"))["admin"] is True
    assert (await login(admin_server, user_id, "first-pw"))[0] == 403
    await admin.ok("POST", f"{V1}/reset_password/{user_id}", {"new_password": "third-pw"})
    assert (await login(admin_server, user_id, "second-pw"))[0] == 403
    assert (await login(admin_server, user_id, "third-pw"))[0] == 200
    # Deactivated through PUT, then brought back with a new password (required to reactivate).
    await admin.ok("PUT", f"{V2}/users/{user_id}", {"deactivated": True})
    assert (await login(admin_server, user_id, "third-pw"))[0] == 403
    status, body = await admin.call("PUT", f"{V2}/users/{user_id}", {"deactivated": False})
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    back = await admin.ok("PUT", f"{V2}/users/{user_id}", {"deactivated": False, "password": "fourth-pw"})
    assert back["deactivated"] is False
    assert (await login(admin_server, user_id, "fourth-pw"))[0] == 200
    # Locked (CS "Account locking"): shown in the details and the list; the user's requests are refused.
    assert (await admin.ok("PUT", f"{V2}/users/{user_id}", {"locked": True}))["locked"] is True
    listed = await admin.ok("GET", f"{V2}/users?name=erin")
    assert [u["locked"] for u in listed["users"]] == [True]
    assert (await login(admin_server, user_id, "fourth-pw"))[0] == 401
    assert (await admin.ok("PUT", f"{V2}/users/{user_id}", {"locked": False}))["locked"] is False
    assert (await login(admin_server, user_id, "fourth-pw"))[0] == 200
    status, body = await admin.call("GET", f"{V2}/users/@nobody:{admin_server.hs.server_name}")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    status, body = await admin.call("GET", f"{V2}/users/@someone:elsewhere.example")
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    status, body = await admin.call("PUT", f"{V2}/users/{user_id}", {"admin": "yes"})
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")


async def test_whois_joined_rooms_and_devices(admin_server: AdminServer) -> None:
    admin = await admin_server.user("root", admin=True)
    alice = await admin_server.user("alice")
    room_id = (await alice.ok("POST", "/_matrix/client/v3/createRoom", {}))["room_id"]
    joined = await admin.ok("GET", f"{V1}/users/{alice.user_id}/joined_rooms")
    assert joined == {"joined_rooms": [room_id], "total": 1}
    assert await admin.ok("GET", f"{V1}/users/{alice.user_id}/pushers") == {"pushers": [], "total": 0}
    pusher = {
        "kind": "http",
        "app_id": "org.example.app",
        "pushkey": "key-1",
        "app_display_name": "App",
        "device_display_name": "Phone",
        "lang": "en",
        "data": {"url": "https://push.example.org/_matrix/push/v1/notify"},
    }
    await alice.ok("POST", "/_matrix/client/v3/pushers/set", pusher)
    pushers = await admin.ok("GET", f"{V1}/users/{alice.user_id}/pushers")
    assert pushers["total"] == 1 and pushers["pushers"][0]["pushkey"] == "key-1"
    whois = await admin.ok("GET", f"{V1}/whois/{alice.user_id}")
    assert whois["user_id"] == alice.user_id and len(whois["devices"]) == 1
    # The spec's own endpoint: the user about themselves.
    assert (await alice.ok("GET", f"/_matrix/client/v3/admin/whois/{alice.user_id}"))[
        "user_id"
    ] == alice.user_id
    devices = await admin.ok("GET", f"{V2}/users/{alice.user_id}/devices")
    assert devices["total"] == 1
    device_id = devices["devices"][0]["device_id"]
    status, _ = await admin.call("POST", f"{V2}/users/{alice.user_id}/devices", {"device_id": "EXTRA"})
    assert status == 201
    await admin.ok("PUT", f"{V2}/users/{alice.user_id}/devices/EXTRA", {"display_name": "added by admin"})
    extra = await admin.ok("GET", f"{V2}/users/{alice.user_id}/devices/EXTRA")
    assert extra["display_name"] == "added by admin"
    await admin.ok("POST", f"{V2}/users/{alice.user_id}/delete_devices", {"devices": ["EXTRA"]})
    assert (await admin.call("GET", f"{V2}/users/{alice.user_id}/devices/EXTRA"))[0] == 404
    # Deleting the device ends its session.
    await admin.ok("DELETE", f"{V2}/users/{alice.user_id}/devices/{device_id}")
    status, body = await alice.call("GET", "/_matrix/client/v3/account/whoami")
    assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN")


async def test_shadow_banned_user_sends_into_the_void(admin_server: AdminServer) -> None:
    admin = await admin_server.user("root", admin=True)
    alice = await admin_server.user("alice")
    mallory = await admin_server.user("mallory")
    room_id = (await alice.ok("POST", "/_matrix/client/v3/createRoom", {"preset": "public_chat"}))["room_id"]
    await mallory.ok("POST", f"/_matrix/client/v3/rooms/{room_id}/join", {})
    await admin.ok("POST", f"{V1}/users/{mallory.user_id}/shadow_ban")
    assert (await admin.ok("GET", f"{V2}/users/{mallory.user_id}"))["shadow_banned"] is True
    sent = await mallory.ok(
        "PUT",
        f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t1",
        {"msgtype": "m.text", "body": "spam"},
    )
    assert sent["event_id"].startswith("$")
    messages = await alice.ok("GET", f"/_matrix/client/v3/rooms/{room_id}/messages", dir="b", limit="50")
    assert "spam" not in [e["content"].get("body") for e in messages["chunk"]]
    assert (await alice.call("GET", f"/_matrix/client/v3/rooms/{room_id}/event/{sent['event_id']}"))[0] == 404
    # An invite looks sent and is not.
    carol = await admin_server.user("carol")
    assert (
        await mallory.ok("POST", f"/_matrix/client/v3/rooms/{room_id}/invite", {"user_id": carol.user_id})
        == {}
    )
    assert (await carol.ok("GET", "/_matrix/client/v3/sync")).get("rooms", {}).get("invite", {}) == {}
    assert await admin_server.hs.storage.state.get_membership(room_id, carol.user_id) is None
    await admin.ok("DELETE", f"{V1}/users/{mallory.user_id}/shadow_ban")
    await mallory.ok(
        "PUT",
        f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t2",
        {"msgtype": "m.text", "body": "real"},
    )
    messages = await alice.ok("GET", f"/_matrix/client/v3/rooms/{room_id}/messages", dir="b", limit="50")
    assert "real" in [e["content"].get("body") for e in messages["chunk"]]


async def test_rate_limit_override(admin_server: AdminServer) -> None:
    admin = await admin_server.user("root", admin=True)
    alice = await admin_server.user("alice")
    room_id = (await alice.ok("POST", "/_matrix/client/v3/createRoom", {}))["room_id"]
    path = f"{V1}/users/{alice.user_id}/override_ratelimit"
    assert await admin.ok("GET", path) == {}
    # One message per second with a burst of one: the second message at once is refused.
    assert await admin.ok("POST", path, {"messages_per_second": 1, "burst_count": 1}) == {
        "messages_per_second": 1,
        "burst_count": 1,
    }
    body = {"msgtype": "m.text", "body": "hi"}
    await alice.ok("PUT", f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/a", body)
    status, answer = await alice.call(
        "PUT", f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/b", body
    )
    assert (status, answer["errcode"]) == (429, "M_LIMIT_EXCEEDED")
    # 0 means not limited at all: past the server's own burst.
    await admin.ok("POST", path, {"messages_per_second": 0, "burst_count": 0})
    for i in range(MESSAGE_BURST + 5):
        await alice.ok("PUT", f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/c{i}", body)
    # Without the override the server's limit applies again.
    await admin.ok("DELETE", path)
    assert await admin.ok("GET", path) == {}
    statuses = [
        (await alice.call("PUT", f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/d{i}", body))[0]
        for i in range(MESSAGE_BURST + 1)
    ]
    assert 429 in statuses
    status, body_ = await admin.call("POST", path, {"messages_per_second": -1})
    assert (status, body_["errcode"]) == (400, "M_INVALID_PARAM")


async def test_login_as_user(admin_server: AdminServer) -> None:
    admin = await admin_server.user("root", admin=True)
    alice = await admin_server.user("alice")
    token = (await admin.ok("POST", f"{V1}/users/{alice.user_id}/login", {}))["access_token"]
    puppet = Api(admin_server.session, admin_server.base, alice.user_id, token)
    assert (await puppet.ok("GET", "/_matrix/client/v3/account/whoami"))["user_id"] == alice.user_id
    status, _ = await alice.call("POST", f"{V1}/users/{admin.user_id}/login", {})
    assert status == 403


async def test_deactivation_leaves_every_room_and_blocks_login(admin_server: AdminServer) -> None:
    admin = await admin_server.user("root", admin=True)
    alice = await admin_server.user("alice", password="alice-password")
    bob = await admin_server.user("bob")
    rooms = []
    for _ in range(2):
        room_id = (await bob.ok("POST", "/_matrix/client/v3/createRoom", {"preset": "public_chat"}))[
            "room_id"
        ]
        await alice.ok("POST", f"/_matrix/client/v3/rooms/{room_id}/join", {})
        rooms.append(room_id)
    answer = await admin.ok("POST", f"{V1}/deactivate/{alice.user_id}", {"erase": True})
    assert answer == {"id_server_unbind_result": "success"}
    for room_id in rooms:
        members = await admin.ok("GET", f"{V1}/rooms/{room_id}/members")
        assert alice.user_id not in members["members"] and bob.user_id in members["members"]
    assert (await admin.ok("GET", f"{V1}/users/{alice.user_id}/joined_rooms"))["total"] == 0
    status, body = await login(admin_server, alice.user_id, "alice-password")
    assert status == 403, body
    status, body = await alice.call("GET", "/_matrix/client/v3/account/whoami")
    assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    details = await admin.ok("GET", f"{V2}/users/{alice.user_id}")
    assert details["deactivated"] is True and details["erased"] is True
    assert (await admin.ok("GET", f"{V2}/users/{bob.user_id}"))["erased"] is False
    listed = await admin.ok("GET", V2 + "/users", deactivated="true")
    assert alice.user_id in [u["name"] for u in listed["users"]]
    assert alice.user_id not in [u["name"] for u in (await admin.ok("GET", V2 + "/users"))["users"]]
