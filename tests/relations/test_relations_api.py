"""The client API of relations and threads on one in-process server (CS "Relationships API", "Threading",
"Event replacements", "Reference relations", "Threaded read receipts"): /relations with its filters,
pagination, ``dir`` and ``recurse``; /threads; bundled aggregations on /event, /messages, /context and a
limited /sync; edits, redactions and ignored users; thread-aware receipts."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from ranvier.app import Homeserver
from tests.scenarios.servers import Client, start_server

pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclass
class World:
    hs: Homeserver
    alice: Client
    bob: Client
    carol: Client
    room: str


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    # No rate limits: the module sends many events quickly (a loaded CI machine must not turn them into 429s).
    hs = await start_server(Path(tmp_path_factory.mktemp("relations")), rate_limits={"enabled": False})
    try:
        async with aiohttp.ClientSession() as session:
            alice = await Client.register(session, hs, "alice")
            bob = await Client.register(session, hs, "bob")
            carol = await Client.register(session, hs, "carol")
            room = await alice.create_room(name="Threads")
            await bob.ok("POST", f"/join/{room}", {})
            await carol.ok("POST", f"/join/{room}", {})
            yield World(hs, alice, bob, carol, room)
    finally:
        await hs.stop()


_txn = 0


async def send(client: Client, room: str, content: dict[str, Any], etype: str = "m.room.message") -> str:
    global _txn
    _txn += 1
    answer = await client.ok("PUT", f"/rooms/{room}/send/{etype}/rel{_txn}", content)
    return str(answer["event_id"])


def text(body: str, relates_to: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    content: dict[str, Any] = {"msgtype": "m.text", "body": body, **extra}
    if relates_to is not None:
        content["m.relates_to"] = relates_to
    return content


def thread(root: str) -> dict[str, Any]:
    return {"rel_type": "m.thread", "event_id": root}


async def v1(client: Client, path: str, **params: str) -> tuple[int, Any]:
    base = client.base.replace("/v3", "/v1")
    async with client.session.get(
        base + path, params=params or None, headers={"Authorization": f"Bearer {client.token}"}
    ) as resp:
        return resp.status, await resp.json()


async def v1_ok(client: Client, path: str, **params: str) -> Any:
    status, body = await v1(client, path, **params)
    assert status == 200, (status, body)
    return body


def aged_out(value: Any) -> Any:
    """``value`` without the ``age`` fields (they change between two reads)."""
    if isinstance(value, dict):
        return {k: aged_out(v) for k, v in value.items() if k != "age"}
    if isinstance(value, list):
        return [aged_out(v) for v in value]
    return value


def ids(chunk: list[dict[str, Any]]) -> list[str]:
    return [e["event_id"] for e in chunk]


async def test_relations_filters_pages_direction_and_recurse(world: World) -> None:
    alice, bob, room = world.alice, world.bob, world.room
    root = await send(alice, room, text("root"))
    replies = [await send(bob if i % 2 else alice, room, text(f"reply {i}", thread(root))) for i in range(5)]
    reaction = await send(
        bob, room, {"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": "👍"}}, "m.reaction"
    )
    # A reaction to a thread reply: related to the root only indirectly.
    deep = await send(
        alice,
        room,
        {"m.relates_to": {"rel_type": "m.annotation", "event_id": replies[0], "key": "🎉"}},
        "m.reaction",
    )
    everything = [reaction, *reversed(replies)]  # newest first

    body = await v1_ok(bob, f"/rooms/{room}/relations/{root}", limit="50")
    assert ids(body["chunk"]) == everything
    assert "next_batch" not in body and "recursion_depth" not in body
    assert all(e["room_id"] == room for e in body["chunk"])
    assert ids((await v1_ok(bob, f"/rooms/{room}/relations/{root}/m.thread", limit="50"))["chunk"]) == list(
        reversed(replies)
    )
    typed = await v1_ok(bob, f"/rooms/{room}/relations/{root}/m.annotation/m.reaction")
    assert ids(typed["chunk"]) == [reaction]
    assert (await v1_ok(bob, f"/rooms/{room}/relations/{root}/m.annotation/m.room.message"))["chunk"] == []
    forwards = await v1_ok(bob, f"/rooms/{room}/relations/{root}", dir="f", limit="50")
    assert ids(forwards["chunk"]) == list(reversed(everything))

    # Pages of two, backwards and forwards: each event once, in order, and the last page has no next_batch.
    for direction, expected in (("b", everything), ("f", list(reversed(everything)))):
        seen: list[str] = []
        params = {"limit": "2", "dir": direction}
        while True:
            page = await v1_ok(bob, f"/rooms/{room}/relations/{root}", **params)
            assert len(page["chunk"]) <= 2
            seen += ids(page["chunk"])
            if "next_batch" not in page:
                break
            if "from" in params:
                assert page["prev_batch"] == params["from"]
            params["from"] = page["next_batch"]
        assert seen == expected, direction
    # ``to``: from the start down to the second page's token gives the first page only.
    first = await v1_ok(bob, f"/rooms/{room}/relations/{root}", limit="2")
    bounded = await v1_ok(bob, f"/rooms/{room}/relations/{root}", to=first["next_batch"], limit="50")
    assert ids(bounded["chunk"]) == everything[:2]

    recursed = await v1_ok(bob, f"/rooms/{room}/relations/{root}", recurse="true", limit="50")
    assert ids(recursed["chunk"]) == [deep, *everything] and recursed["recursion_depth"] == 3
    # A rel_type filter applies to the intermediate events too: the reaction's parent is an m.thread child.
    filtered = await v1_ok(bob, f"/rooms/{room}/relations/{root}/m.annotation", recurse="true")
    assert ids(filtered["chunk"]) == [reaction]
    assert (await v1_ok(bob, f"/rooms/{room}/relations/{root}", recurse="false"))["recursion_depth"] == 1

    # Errors: unknown parent, bad parameters, a non-member.
    status, err = await v1(bob, f"/rooms/{room}/relations/$nope")
    assert (status, err["errcode"]) == (404, "M_NOT_FOUND")
    for params in ({"dir": "x"}, {"recurse": "yes"}, {"limit": "ten"}, {"from": "garbage"}):
        status, err = await v1(bob, f"/rooms/{room}/relations/{root}", **params)
        assert (status, err["errcode"]) == (400, "M_INVALID_PARAM"), params
    outsider_room = await world.carol.create_room(name="Carol's")
    status, err = await v1(bob, f"/rooms/{outsider_room}/relations/{root}")
    assert status in (403, 404) and err["errcode"] in ("M_FORBIDDEN", "M_NOT_FOUND")


async def test_bundled_aggregations_edits_references_and_redactions(world: World) -> None:
    alice, bob, carol, room = world.alice, world.bob, world.carol, world.room
    root = await send(alice, room, text("original"))
    r1 = await send(bob, room, text("first", thread(root)))
    r2 = await send(alice, room, text("second", thread(root)))
    edit_of_r2 = await send(
        alice,
        room,
        text("* second!", {"rel_type": "m.replace", "event_id": r2}, **{"m.new_content": text("second!")}),
    )
    ref = await send(bob, room, {"m.relates_to": {"rel_type": "m.reference", "event_id": root}}, "m.key.done")
    edit1 = await send(
        alice,
        room,
        text("* edited", {"rel_type": "m.replace", "event_id": root}, **{"m.new_content": text("edited")}),
    )
    # Not valid replacements: another sender, no m.new_content.
    await send(
        bob,
        room,
        text("* hijack", {"rel_type": "m.replace", "event_id": root}, **{"m.new_content": text("x")}),
    )
    await send(alice, room, text("* no new content", {"rel_type": "m.replace", "event_id": root}))

    async def relations_of(client: Client, event_id: str) -> dict[str, Any]:
        event = await client.ok("GET", f"/rooms/{room}/event/{event_id}")
        return dict(event["unsigned"].get("m.relations", {}))

    bundle = await relations_of(carol, root)
    assert set(bundle) == {"m.thread", "m.replace", "m.reference"}
    summary = bundle["m.thread"]
    assert summary["count"] == 2 and summary["current_user_participated"] is False
    assert summary["latest_event"]["event_id"] == r2
    # The latest event carries its own aggregations: its edit.
    assert summary["latest_event"]["unsigned"]["m.relations"]["m.replace"]["event_id"] == edit_of_r2
    assert bundle["m.replace"]["event_id"] == edit1
    assert bundle["m.reference"] == {"chunk": [{"event_id": ref}]}
    # Content is not replaced by the server (since v1.7).
    assert (await carol.ok("GET", f"/rooms/{room}/event/{root}"))["content"]["body"] == "original"
    assert (await relations_of(bob, root))["m.thread"]["current_user_participated"] is True
    assert (await relations_of(alice, root))["m.thread"][
        "current_user_participated"
    ] is True  # the root's sender

    # The same bundle on /messages and /context.
    messages = await carol.ok("GET", f"/rooms/{room}/messages", dir="b", limit="30")
    served = {e["event_id"]: e for e in messages["chunk"]}
    assert aged_out(served[root]["unsigned"]["m.relations"]) == aged_out(bundle)
    context = await carol.ok("GET", f"/rooms/{room}/context/{root}", limit="4")
    assert aged_out(context["event"]["unsigned"]["m.relations"]) == aged_out(bundle)
    assert {e["event_id"] for e in context["events_after"]} >= {r1}

    # A second edit, later: it becomes the bundled one; redacting it brings back the first.
    edit2 = await send(
        alice,
        room,
        text(
            "* edited again", {"rel_type": "m.replace", "event_id": root}, **{"m.new_content": text("again")}
        ),
    )
    assert (await relations_of(carol, root))["m.replace"]["event_id"] == edit2
    await alice.ok("PUT", f"/rooms/{room}/redact/{edit2}/red1", {})
    assert (await relations_of(carol, root))["m.replace"]["event_id"] == edit1
    # Redacting a thread reply takes it out of the count and of latest_event.
    await alice.ok("PUT", f"/rooms/{room}/redact/{r2}/red2", {})
    summary = (await relations_of(carol, root))["m.thread"]
    assert summary["count"] == 1 and summary["latest_event"]["event_id"] == r1
    # A redacted original carries no m.replace, whatever its edits.
    await alice.ok("PUT", f"/rooms/{room}/redact/{root}/red3", {})
    assert "m.replace" not in await relations_of(carol, root)

    # Carol ignores Bob: his reply and reference no longer count for her.
    await carol.ok(
        "PUT", f"/user/{carol.user_id}/account_data/m.ignored_user_list", {"ignored_users": {bob.user_id: {}}}
    )
    try:
        ignoring = await relations_of(carol, root)
        assert "m.thread" not in ignoring and "m.reference" not in ignoring
        assert (await relations_of(alice, root))["m.thread"]["count"] == 1
    finally:
        await carol.ok(
            "PUT", f"/user/{carol.user_id}/account_data/m.ignored_user_list", {"ignored_users": {}}
        )


async def test_threads_list_order_participation_and_pages(world: World) -> None:
    alice, bob, carol = world.alice, world.bob, world.carol
    room = await alice.create_room(name="Many threads")
    for c in (bob, carol):
        await c.ok("POST", f"/join/{room}", {})
    t1 = await send(alice, room, text("thread one"))
    t2 = await send(bob, room, text("thread two"))
    t3 = await send(alice, room, text("thread three"))
    await send(alice, room, text("not a thread"))
    await send(bob, room, text("in one", thread(t1)))
    await send(carol, room, text("in two", thread(t2)))
    await send(bob, room, text("in three", thread(t3)))
    await send(alice, room, text("one again", thread(t1)))  # thread one is now the most recent

    listed = await v1_ok(carol, f"/rooms/{room}/threads")
    assert ids(listed["chunk"]) == [t1, t3, t2] and "next_batch" not in listed
    assert listed["chunk"][0]["unsigned"]["m.relations"]["m.thread"]["count"] == 2
    assert ids((await v1_ok(carol, f"/rooms/{room}/threads", include="participated"))["chunk"]) == [t2]
    # Bob replied in one and three, and started two.
    assert ids((await v1_ok(bob, f"/rooms/{room}/threads", include="participated"))["chunk"]) == [t1, t3, t2]
    seen: list[str] = []
    params: dict[str, str] = {"limit": "1"}
    while True:
        page = await v1_ok(carol, f"/rooms/{room}/threads", **params)
        seen += ids(page["chunk"])
        if "next_batch" not in page:
            break
        params["from"] = page["next_batch"]
    assert seen == [t1, t3, t2]
    # Carol ignores Bob: the thread he started comes back redacted, and his replies are not counted.
    ignore = f"/user/{carol.user_id}/account_data/m.ignored_user_list"
    await carol.ok("PUT", ignore, {"ignored_users": {bob.user_id: {}}})
    try:
        ignoring = {e["event_id"]: e for e in (await v1_ok(carol, f"/rooms/{room}/threads"))["chunk"]}
        assert ignoring[t2]["content"] == {} and ignoring[t2]["sender"] == bob.user_id
        assert ignoring[t1]["content"]["body"] == "thread one"
        assert ignoring[t1]["unsigned"]["m.relations"]["m.thread"]["count"] == 1  # Bob's reply left out
        assert t3 not in ignoring  # its only reply is Bob's
    finally:
        await carol.ok("PUT", ignore, {"ignored_users": {}})
    status, err = await v1(carol, f"/rooms/{room}/threads", include="mine")
    assert (status, err["errcode"]) == (400, "M_INVALID_PARAM")


async def test_limited_sync_bundles_and_thread_receipts(world: World) -> None:
    alice, bob, room = world.alice, world.bob, world.room
    root = await send(alice, room, text("sync root"))
    reply = await send(bob, room, text("sync reply", thread(root)))
    for i in range(3):
        await send(alice, room, text(f"filler {i}"))
    sync_filter = json.dumps({"room": {"timeline": {"limit": 6}}})
    body = await bob.ok("GET", "/sync", timeout="0", filter=sync_filter)
    timeline = body["rooms"]["join"][room]["timeline"]
    assert timeline["limited"] is True
    served = {e["event_id"]: e for e in timeline["events"]}
    assert served[root]["unsigned"]["m.relations"]["m.thread"]["latest_event"]["event_id"] == reply
    assert "room_id" not in served[root]["unsigned"]["m.relations"]["m.thread"]["latest_event"]

    # Threaded receipts: the reply is in the root's thread, the root in the main timeline.
    await bob.ok("POST", f"/rooms/{room}/receipt/m.read/{reply}", {"thread_id": root})
    await bob.ok("POST", f"/rooms/{room}/receipt/m.read/{root}", {"thread_id": "main"})
    await bob.ok("POST", f"/rooms/{room}/receipt/m.read.private/{reply}", {"thread_id": root})
    await bob.ok("POST", f"/rooms/{room}/receipt/m.read/{root}", {"thread_id": root})  # a root in its thread
    bad = ((reply, "main"), (root, "$not-this-thread"), (reply, "$other"), (reply, reply))
    for event_id, thread_id in bad:
        status, err = await bob.call(
            "POST", f"/rooms/{room}/receipt/m.read/{event_id}", {"thread_id": thread_id}
        )
        assert (status, err["errcode"]) == (400, "M_INVALID_PARAM"), (event_id, thread_id)
    for bad in ("", 5):
        status, err = await bob.call("POST", f"/rooms/{room}/receipt/m.read/{reply}", {"thread_id": bad})
        assert (status, err["errcode"]) == (400, "M_INVALID_PARAM")


async def test_send_time_validation(world: World) -> None:
    alice, bob, room = world.alice, world.bob, world.room
    root = await send(alice, room, text("validation root"))
    reply = await send(bob, room, text("r", thread(root)))
    # No thread from an event that has a relation itself (CS "Validation of m.thread relationships").
    status, err = await bob.call(
        "PUT", f"/rooms/{room}/send/m.room.message/nested1", text("x", thread(reply))
    )
    assert (status, err["errcode"]) == (400, "M_UNKNOWN")
    # A second identical annotation from the same user (CS "Avoiding duplicate annotations").
    reaction = {"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": "👀"}}
    first = await send(bob, room, reaction, "m.reaction")
    status, err = await bob.call("PUT", f"/rooms/{room}/send/m.reaction/dup1", reaction)
    assert (status, err["errcode"]) == (400, "M_DUPLICATE_ANNOTATION")
    await send(alice, room, reaction, "m.reaction")  # another user may
    await bob.ok("PUT", f"/rooms/{room}/redact/{first}/dupred", {})
    await send(bob, room, reaction, "m.reaction")  # once the first is redacted, again


async def test_thread_notification_counts_follow_relations(world: World) -> None:
    """An event related to a thread's reply (here an m.reference message) counts in that thread, and a
    threaded receipt on it clears that thread only (CS "Threaded read receipts")."""
    alice, bob, carol = world.alice, world.bob, world.carol
    room = await alice.create_room(name="Counts")
    for c in (bob, carol):
        await c.ok("POST", f"/join/{room}", {})
    root = await send(alice, room, text("count root"))
    reply = await send(bob, room, text("count reply", thread(root)))
    ref = await send(alice, room, text("about that reply", {"rel_type": "m.reference", "event_id": reply}))
    sync_filter = json.dumps({"room": {"timeline": {"unread_thread_notifications": True}}})

    async def counts() -> tuple[int, dict[str, int]]:
        body = await carol.ok("GET", "/sync", timeout="0", filter=sync_filter)
        joined = body["rooms"]["join"][room]
        threads = joined.get("unread_thread_notifications", {})
        per_thread = {t: c["notification_count"] for t, c in threads.items()}
        return joined["unread_notifications"]["notification_count"], per_thread

    assert await counts() == (1, {root: 2})
    await carol.ok("POST", f"/rooms/{room}/receipt/m.read/{ref}", {"thread_id": root})
    main, threads = await counts()
    assert main == 1 and threads.get(root, 0) == 0


async def test_history_visibility_hides_children(world: World) -> None:
    """Children from before a user's join, under "joined" visibility, are left out of their /relations page
    and of the thread's latest_event; the root itself is readable ("shared" when it was sent)."""
    alice, bob = world.alice, world.bob
    room = await alice.create_room(name="Visibility", preset="private_chat", invite=[bob.user_id])
    await alice.ok("PUT", f"/rooms/{room}/state/m.room.history_visibility/", {"history_visibility": "shared"})
    root = await send(alice, room, text("visible root"))
    await alice.ok("PUT", f"/rooms/{room}/state/m.room.history_visibility/", {"history_visibility": "joined"})
    before = await send(alice, room, text("before bob", thread(root)))
    await bob.ok("POST", f"/join/{room}", {})
    after_join = await send(alice, room, text("after bob", thread(root)))

    page = await v1_ok(bob, f"/rooms/{room}/relations/{root}")
    assert ids(page["chunk"]) == [after_join]
    assert ids((await v1_ok(alice, f"/rooms/{room}/relations/{root}"))["chunk"]) == [after_join, before]
    event = await bob.ok("GET", f"/rooms/{room}/event/{root}")
    assert event["unsigned"]["m.relations"]["m.thread"]["latest_event"]["event_id"] == after_join
    # The hidden reply itself is not Bob's to see, nor its relations.
    status, err = await v1(bob, f"/rooms/{room}/relations/{before}")
    assert (status, err["errcode"]) == (404, "M_NOT_FOUND")
