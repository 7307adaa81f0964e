"""The legacy read endpoints (room and global /initialSync, the /events stream, /events/{eventId}),
/mutual_rooms, and profile changes reaching a room on another server."""

from __future__ import annotations

import pytest

from tests.accounts.conftest import Pair
from tests.scenarios.servers import eventually

pytestmark = pytest.mark.asyncio(loop_scope="package")


async def test_room_initial_sync_and_global_initial_sync(pair: Pair) -> None:
    owner = await pair.register(pair.b, "legacyowner")
    guest = await pair.register(pair.b, "legacyguest")
    room = await owner.create_room(name="Legacy room")
    first = await owner.send_text(room, "one")
    await owner.send_text(room, "two")
    await owner.ok("PUT", f"/user/{owner.user_id}/rooms/{room}/account_data/org.example.note", {"n": 1})

    info = await owner.ok("GET", f"/rooms/{room}/initialSync", limit="1")
    assert info["room_id"] == room and info["membership"] == "join" and info["visibility"] == "private"
    types = {e["type"] for e in info["state"]}
    assert {"m.room.create", "m.room.name", "m.room.member"} <= types
    assert [e["content"].get("body") for e in info["messages"]["chunk"]] == ["two"]
    # The start token pages back with /messages to the earlier message.
    earlier = await owner.ok(
        "GET", f"/rooms/{room}/messages", dir="b", limit="1", **{"from": info["messages"]["start"]}
    )
    assert [e["event_id"] for e in earlier["chunk"]] == [first]
    assert {"type": "org.example.note", "content": {"n": 1}} in info["account_data"]
    # Not a member: refused.
    status, error = await guest.call("GET", f"/rooms/{room}/initialSync")
    assert status == 403 and error["errcode"] == "M_FORBIDDEN"

    await owner.ok("POST", f"/rooms/{room}/invite", {"user_id": guest.user_id})
    everything = await guest.ok("GET", "/initialSync")
    invited = next(r for r in everything["rooms"] if r["room_id"] == room)
    assert invited["membership"] == "invite" and invited["invite"]["content"]["membership"] == "invite"
    assert everything["end"].startswith("s") and isinstance(everything["presence"], list)


async def test_events_stream_and_single_event(pair: Pair) -> None:
    owner = await pair.register(pair.b, "streamowner")
    other = await pair.register(pair.b, "streamother")
    room = await owner.create_room()
    start = (await owner.ok("GET", "/events", timeout="0"))["end"]
    sent = await owner.send_text(room, "streamed")
    page = await owner.ok("GET", "/events", timeout="0", **{"from": start})
    assert sent in [e["event_id"] for e in page["chunk"]] and page["start"] == start
    # Nothing newer: an empty chunk from the end token (no waiting with timeout=0).
    assert (await owner.ok("GET", "/events", timeout="0", **{"from": page["end"]}))["chunk"] == []
    status, error = await owner.call("GET", "/events", **{"from": "bogus"})
    assert status == 400 and error["errcode"] == "M_INVALID_PARAM"

    assert (await owner.ok("GET", f"/events/{sent}"))["content"]["body"] == "streamed"
    # Someone who never was in the (shared-history, private) room may not read it.
    status, error = await other.call("GET", f"/events/{sent}")
    assert status == 404 and error["errcode"] == "M_NOT_FOUND"


async def test_mutual_rooms(pair: Pair) -> None:
    one = await pair.register(pair.b, "mutualone")
    two = await pair.register(pair.b, "mutualtwo")
    shared = await one.create_room()
    await two.ok("POST", f"/join/{shared}", {})
    await one.create_room()  # one's alone there
    url = f"/_matrix/client/v1/mutual_rooms?user_id={two.user_id}"
    status, answer = await pair.request(pair.b, "GET", url, token=one.token)
    assert status == 200 and answer == {"joined": [shared], "count": 1}
    status, answer = await pair.request(
        pair.b, "GET", "/_matrix/client/v1/mutual_rooms?user_id=@x:y", token=one.token
    )
    assert status == 200 and answer == {"joined": [], "count": 0}
    status, error = await pair.request(pair.b, "GET", "/_matrix/client/v1/mutual_rooms", token=one.token)
    assert status == 400 and error["errcode"] == "M_MISSING_PARAM"


async def test_profile_change_reaches_a_room_on_another_server(pair: Pair) -> None:
    host = await pair.register(pair.b, "profilehost")
    guest = await pair.register(pair.a, "profileguest")
    room = await host.create_room()
    await guest.ok("POST", f"/join/{room}", {}, server_name=pair.b.server_name)

    async def member_on_b() -> dict[str, object]:
        status, content = await host.call("GET", f"/rooms/{room}/state/m.room.member/{guest.user_id}")
        return content if status == 200 else {}

    async def joined() -> bool:
        return (await member_on_b()).get("membership") == "join"

    await eventually(joined, timeout=20)
    await guest.ok("PUT", f"/profile/{guest.user_id}/displayname", {"displayname": "Guest, renamed"})
    await guest.ok("PUT", f"/profile/{guest.user_id}/avatar_url", {"avatar_url": "mxc://example.org/avatar"})

    async def renamed() -> bool:
        member = await member_on_b()
        return (
            member.get("displayname") == "Guest, renamed"
            and member.get("avatar_url") == "mxc://example.org/avatar"
        )

    await eventually(renamed, timeout=20)
    # The other server asks ours for a remote user's profile.
    assert await host.ok("GET", f"/profile/{guest.user_id}") == {
        "displayname": "Guest, renamed",
        "avatar_url": "mxc://example.org/avatar",
    }


async def test_events_stream_pages_a_backlog_in_order(pair: Pair) -> None:
    # More than one response holds (100 events): the stream answers in order, with no event skipped.
    owner = await pair.register(pair.b, "backlogowner")
    room = await owner.create_room()
    start = (await owner.ok("GET", "/events", timeout="0"))["end"]
    sent = [f"backlog {i}" for i in range(105)]
    for text in sent:
        await owner.send_text(room, text)
    seen: list[str] = []
    token = start
    for _ in range(10):
        page = await owner.ok("GET", "/events", timeout="0", **{"from": token})
        assert len(page["chunk"]) <= 100
        seen += [e["content"]["body"] for e in page["chunk"] if e["type"] == "m.room.message"]
        if not page["chunk"]:
            break
        token = page["end"]
    assert seen == sent
