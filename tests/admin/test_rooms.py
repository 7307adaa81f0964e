"""The room admin endpoints against a real Ranvier: list (filters, order, pages), details, members, state,
block, forward extremities, event context."""

from __future__ import annotations

from tests.admin.conftest import AdminServer

V1 = "/_synapse/admin/v1"
CS = "/_matrix/client/v3"


async def test_list_details_members_state(admin_server: AdminServer) -> None:
    admin = await admin_server.user("root", admin=True)
    alice = await admin_server.user("alice")
    bob = await admin_server.user("bob")
    big = (await alice.ok("POST", CS + "/createRoom", {"preset": "public_chat", "name": "Big room"}))[
        "room_id"
    ]
    await bob.ok("POST", f"{CS}/rooms/{big}/join", {})
    small = (
        await alice.ok(
            "POST",
            CS + "/createRoom",
            {
                "name": "another",
                "initial_state": [
                    {
                        "type": "m.room.encryption",
                        "state_key": "",
                        "content": {"algorithm": "m.megolm.v1.aes-sha2"},
                    }
                ],
            },
        )
    )["room_id"]
    await alice.ok("PUT", f"{CS}/directory/list/room/{big}", {"visibility": "public"})

    listed = await admin.ok("GET", V1 + "/rooms")
    assert listed["total_rooms"] == 2 and listed["offset"] == 0 and "next_batch" not in listed
    # Synapse's default order is by name; here "Big room" < "another" in byte order.
    assert [r["room_id"] for r in listed["rooms"]] == [big, small]
    entry = listed["rooms"][0]
    assert entry["name"] == "Big room" and entry["joined_members"] == 2 and entry["joined_local_members"] == 2
    assert entry["public"] is True and entry["join_rules"] == "public" and entry["creator"] == alice.user_id
    assert entry["federatable"] is True and entry["encryption"] is None and entry["state_events"] >= 6
    assert listed["rooms"][1]["encryption"] == "m.megolm.v1.aes-sha2"
    biggest_first = await admin.ok("GET", V1 + "/rooms", order_by="joined_members")
    assert biggest_first["rooms"][0]["room_id"] == big
    smallest_first = await admin.ok("GET", V1 + "/rooms", order_by="joined_members", dir="b")
    assert smallest_first["rooms"][0]["room_id"] == small
    page = await admin.ok("GET", V1 + "/rooms", limit="1")
    assert len(page["rooms"]) == 1 and page["next_batch"] == 1
    assert (await admin.ok("GET", V1 + "/rooms", search_term="ANOTHER"))["total_rooms"] == 1
    assert [r["room_id"] for r in (await admin.ok("GET", V1 + "/rooms", public_rooms="true"))["rooms"]] == [
        big
    ]
    status, body = await admin.call("GET", V1 + "/rooms", order_by="nonsense")
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")

    details = await admin.ok("GET", f"{V1}/rooms/{big}")
    assert details["room_id"] == big and details["joined_local_devices"] == 2
    members = await admin.ok("GET", f"{V1}/rooms/{big}/members")
    assert members == {"members": sorted([alice.user_id, bob.user_id]), "total": 2}
    state = await admin.ok("GET", f"{V1}/rooms/{big}/state")
    assert ("m.room.name", "") in {(e["type"], e["state_key"]) for e in state["state"]}
    status, body = await admin.call("GET", f"{V1}/rooms/!unknown:{admin_server.hs.server_name}")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    assert (await alice.call("GET", V1 + "/rooms"))[0] == 403

    # A redacted name is no name (the list reads stored events in bulk, redactions applied).
    name_event = next(e for e in state["state"] if e["type"] == "m.room.name")
    await alice.ok("PUT", f"{CS}/rooms/{big}/redact/{name_event['event_id']}/x1", {})
    listed = await admin.ok("GET", V1 + "/rooms")
    assert {r["room_id"]: r["name"] for r in listed["rooms"]}[big] is None


async def test_block_room(admin_server: AdminServer) -> None:
    admin = await admin_server.user("root", admin=True)
    alice = await admin_server.user("alice")
    bob = await admin_server.user("bob")
    room_id = (await alice.ok("POST", CS + "/createRoom", {"preset": "public_chat"}))["room_id"]
    assert await admin.ok("GET", f"{V1}/rooms/{room_id}/block") == {"block": False}
    assert await admin.ok("PUT", f"{V1}/rooms/{room_id}/block", {"block": True}) == {"block": True}
    assert await admin.ok("GET", f"{V1}/rooms/{room_id}/block") == {"block": True, "user_id": admin.user_id}
    status, body = await bob.call("POST", f"{CS}/join/{room_id}", {})
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    await admin.ok("PUT", f"{V1}/rooms/{room_id}/block", {"block": False})
    await bob.ok("POST", f"{CS}/join/{room_id}", {})
    status, body = await admin.call("PUT", f"{V1}/rooms/{room_id}/block", {"block": "yes"})
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")


async def test_forward_extremities_and_context(admin_server: AdminServer) -> None:
    admin = await admin_server.user("root", admin=True)
    alice = await admin_server.user("alice")
    room_id = (await alice.ok("POST", CS + "/createRoom", {}))["room_id"]
    sent = []
    for i in range(5):
        body = {"msgtype": "m.text", "body": f"m{i}"}
        sent.append(
            (await alice.ok("PUT", f"{CS}/rooms/{room_id}/send/m.room.message/t{i}", body))["event_id"]
        )
    extremities = await admin.ok("GET", f"{V1}/rooms/{room_id}/forward_extremities")
    assert extremities["count"] == 1 and extremities["results"][0]["event_id"] == sent[-1]
    assert isinstance(extremities["results"][0]["depth"], int)
    # A single extremity: nothing to delete.
    assert await admin.ok("DELETE", f"{V1}/rooms/{room_id}/forward_extremities") == {"deleted": 0}
    # A second, older extremity (as a fork would leave): deleting keeps the newest one only, and the next
    # event cites it alone.
    await admin_server.hs.storage.db.execute(
        "INSERT INTO forward_extremities (room_id, event_id) VALUES (?, ?)", (room_id, sent[1])
    )
    assert (await admin.ok("GET", f"{V1}/rooms/{room_id}/forward_extremities"))["count"] == 2
    assert await admin.ok("DELETE", f"{V1}/rooms/{room_id}/forward_extremities") == {"deleted": 1}
    left = await admin.ok("GET", f"{V1}/rooms/{room_id}/forward_extremities")
    assert [e["event_id"] for e in left["results"]] == [sent[-1]]
    body = {"msgtype": "m.text", "body": "after"}
    after = (await alice.ok("PUT", f"{CS}/rooms/{room_id}/send/m.room.message/t9", body))["event_id"]
    pdu = await admin_server.hs.storage.events.get_event(after)
    assert pdu is not None and list(pdu.prev_event_ids) == [sent[-1]]

    # The admin is not in the room, and still sees the context.
    context = await admin.ok("GET", f"{V1}/rooms/{room_id}/context/{sent[2]}", limit="4")
    assert context["event"]["event_id"] == sent[2]
    assert [e["event_id"] for e in context["events_before"]] == [sent[1], sent[0]]
    assert [e["event_id"] for e in context["events_after"]] == [sent[3], sent[4]]
    assert ("m.room.create", "") in {(e["type"], e["state_key"]) for e in context["state"]}
    status, body = await admin.call("GET", f"{V1}/rooms/{room_id}/context/$nope")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")


async def test_messages(admin_server: AdminServer) -> None:
    admin = await admin_server.user("root", admin=True)
    alice = await admin_server.user("alice")
    room_id = (await alice.ok("POST", CS + "/createRoom", {}))["room_id"]
    for i in range(6):
        body = {"msgtype": "m.text", "body": f"m{i}"}
        await alice.ok("PUT", f"{CS}/rooms/{room_id}/send/m.room.message/s{i}", body)

    def texts(page: dict[str, object]) -> list[str]:
        return [e["content"]["body"] for e in page["chunk"] if e["type"] == "m.room.message"]  # type: ignore[attr-defined, index]

    # Backwards, newest first, whatever the admin's membership; pages joined by their tokens.
    first = await admin.ok("GET", f"{V1}/rooms/{room_id}/messages", limit="3", dir="b")
    assert texts(first) == ["m5", "m4", "m3"] and first["start"].startswith("t")
    second = await admin.ok(
        "GET", f"{V1}/rooms/{room_id}/messages", limit="3", dir="b", **{"from": first["end"]}
    )
    assert texts(second) == ["m2", "m1", "m0"]
    # Forwards by default (as Synapse): from the start, the room's creation first.
    forwards = await admin.ok("GET", f"{V1}/rooms/{room_id}/messages", limit="2")
    assert forwards["chunk"][0]["type"] == "m.room.create"
    # ``to`` bounds the page: backwards from the newest to the end of the first page.
    bounded = await admin.ok("GET", f"{V1}/rooms/{room_id}/messages", limit="10", dir="b", to=first["end"])
    assert texts(bounded) == ["m5", "m4", "m3"] and "end" not in bounded
    status, body = await admin.call("GET", f"{V1}/rooms/{room_id}/messages", **{"from": "nonsense"})
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
