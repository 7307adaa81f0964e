"""Reports (client and admin), server notices, registration tokens, server_version and background updates
against a real Ranvier."""

from __future__ import annotations

from ranvier import __version__
from tests.admin.conftest import AdminServer

V1 = "/_synapse/admin/v1"
CS = "/_matrix/client/v3"


async def test_reports(admin_server: AdminServer) -> None:
    admin = await admin_server.user("root", admin=True)
    alice = await admin_server.user("alice")
    bob = await admin_server.user("bob")
    eve = await admin_server.user("eve")
    room_id = (await alice.ok("POST", CS + "/createRoom", {"preset": "public_chat", "name": "Reported"}))[
        "room_id"
    ]
    await bob.ok("POST", f"{CS}/rooms/{room_id}/join", {})
    body = {"msgtype": "m.text", "body": "rude"}
    event_id = (await alice.ok("PUT", f"{CS}/rooms/{room_id}/send/m.room.message/r1", body))["event_id"]

    assert await bob.ok("POST", f"{CS}/rooms/{room_id}/report/{event_id}", {"reason": "rude"}) == {}
    # Not joined: the event is as good as unknown (CS "Reporting content", since 1.8).
    status, answer = await eve.call("POST", f"{CS}/rooms/{room_id}/report/{event_id}", {"reason": "x"})
    assert (status, answer["errcode"]) == (404, "M_NOT_FOUND")
    status, answer = await bob.call("POST", f"{CS}/rooms/{room_id}/report/$missing", {"reason": "x"})
    assert (status, answer["errcode"]) == (404, "M_NOT_FOUND")
    # Rooms and users: the reporter need not be joined; unknown ones are 404.
    assert await eve.ok("POST", f"{CS}/rooms/{room_id}/report", {"reason": "bad room"}) == {}
    status, answer = await eve.call(
        "POST", f"{CS}/rooms/!nope:{admin_server.hs.server_name}/report", {"reason": ""}
    )
    assert (status, answer["errcode"]) == (404, "M_NOT_FOUND")
    assert await eve.ok("POST", f"{CS}/users/{alice.user_id}/report", {"reason": "bad user"}) == {}
    status, answer = await eve.call(
        "POST", f"{CS}/users/@ghost:{admin_server.hs.server_name}/report", {"reason": "x"}
    )
    assert (status, answer["errcode"]) == (404, "M_NOT_FOUND")
    status, answer = await eve.call("POST", f"{CS}/rooms/{room_id}/report", {"reason": 5})
    assert (status, answer["errcode"]) == (400, "M_INVALID_PARAM")

    assert (await bob.call("GET", V1 + "/event_reports"))[0] == 403
    listed = await admin.ok("GET", V1 + "/event_reports")
    assert listed["total"] == 1
    report = listed["event_reports"][0]
    assert report["event_id"] == event_id and report["user_id"] == bob.user_id and report["reason"] == "rude"
    assert report["sender"] == alice.user_id and report["name"] == "Reported" and report["room_id"] == room_id
    details = await admin.ok("GET", f"{V1}/event_reports/{report['id']}")
    # The event as stored (federation form), as Synapse gives it.
    assert (
        details["event_json"]["content"]["body"] == "rude"
        and details["event_json"]["sender"] == alice.user_id
    )
    assert await admin.ok("DELETE", f"{V1}/event_reports/{report['id']}") == {}
    assert (await admin.call("GET", f"{V1}/event_reports/{report['id']}"))[0] == 404
    status, answer = await admin.call("GET", f"{V1}/event_reports/abc")
    assert (status, answer["errcode"]) == (400, "M_INVALID_PARAM")


async def test_server_notice(admin_server: AdminServer) -> None:
    admin = await admin_server.user("root", admin=True)
    alice = await admin_server.user("alice")
    content = {"msgtype": "m.text", "body": "maintenance tonight"}
    first = await admin.ok("POST", V1 + "/send_server_notice", {"user_id": alice.user_id, "content": content})
    second = await admin.ok(
        "POST", V1 + "/send_server_notice", {"user_id": alice.user_id, "content": {**content, "body": "done"}}
    )
    # A repeated transaction id sends nothing new.
    path = V1 + "/send_server_notice/txn-1"
    third = await admin.ok("PUT", path, {"user_id": alice.user_id, "content": {**content, "body": "once"}})
    assert (
        await admin.ok("PUT", path, {"user_id": alice.user_id, "content": {**content, "body": "once"}})
        == third
    )
    sync = await alice.ok("GET", CS + "/sync")
    invites = sync["rooms"]["invite"]
    assert len(invites) == 1
    room_id = next(iter(invites))
    tags = await alice.ok("GET", f"{CS}/user/{alice.user_id}/rooms/{room_id}/tags")
    assert "m.server_notice" in tags["tags"]
    await alice.ok("POST", f"{CS}/rooms/{room_id}/join", {})
    messages = await alice.ok("GET", f"{CS}/rooms/{room_id}/messages", dir="b", limit="20")
    bodies = {e["event_id"]: e["content"].get("body") for e in messages["chunk"]}
    assert bodies[first["event_id"]] == "maintenance tonight" and bodies[second["event_id"]] == "done"
    assert list(bodies.values()).count("once") == 1
    sender = {e["sender"] for e in messages["chunk"] if e["type"] == "m.room.message"}
    assert sender == {f"@notices:{admin_server.hs.server_name}"}
    # Only the notices account may speak there.
    status, _ = await alice.call("PUT", f"{CS}/rooms/{room_id}/send/m.room.message/x", {"body": "hi"})
    assert status == 403
    status, answer = await admin.call(
        "POST",
        V1 + "/send_server_notice",
        {"user_id": f"@ghost:{admin_server.hs.server_name}", "content": {}},
    )
    assert (status, answer["errcode"]) == (404, "M_NOT_FOUND")


async def test_registration_tokens_crud(admin_server: AdminServer) -> None:
    admin = await admin_server.user("root", admin=True)
    created = await admin.ok("POST", V1 + "/registration_tokens/new", {"token": "abc-123", "uses_allowed": 2})
    assert created == {
        "token": "abc-123",
        "uses_allowed": 2,
        "pending": 0,
        "completed": 0,
        "expiry_time": None,
    }
    generated = await admin.ok("POST", V1 + "/registration_tokens/new", {"length": 20})
    assert len(generated["token"]) == 20 and generated["uses_allowed"] is None
    status, answer = await admin.call("POST", V1 + "/registration_tokens/new", {"token": "abc-123"})
    assert (status, answer["errcode"]) == (400, "M_INVALID_PARAM")
    status, answer = await admin.call("POST", V1 + "/registration_tokens/new", {"token": "no spaces"})
    assert (status, answer["errcode"]) == (400, "M_INVALID_PARAM")
    updated = await admin.ok("PUT", V1 + "/registration_tokens/abc-123", {"uses_allowed": 0})
    assert updated["uses_allowed"] == 0
    valid = await admin.ok("GET", V1 + "/registration_tokens", valid="true")
    assert [t["token"] for t in valid["registration_tokens"]] == [generated["token"]]
    invalid = await admin.ok("GET", V1 + "/registration_tokens", valid="false")
    assert [t["token"] for t in invalid["registration_tokens"]] == ["abc-123"]
    assert (await admin.ok("GET", V1 + "/registration_tokens/abc-123"))["token"] == "abc-123"
    assert await admin.ok("DELETE", V1 + "/registration_tokens/abc-123") == {}
    assert (await admin.call("GET", V1 + "/registration_tokens/abc-123"))[0] == 404


async def test_server_version_and_background_updates(admin_server: AdminServer) -> None:
    admin = await admin_server.user("root", admin=True)
    version = await admin_server.anonymous().ok("GET", V1 + "/server_version")
    assert version == {"server_version": __version__}
    status = await admin.ok("GET", V1 + "/background_updates/status")
    # No room has a hole being filled on a server that never federated.
    assert status == {"enabled": True, "current_updates": {}}
