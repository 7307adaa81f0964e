"""POST /search over the client API of an in-process server (SQLite and PostgreSQL): results, history
visibility, order, pagination (global and per group), groups, context with profiles, state, highlights,
count, the filter and keys, bundled aggregations, ignored users, forgotten rooms, redactions, and a 400
for every malformed request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from ranvier.app import Homeserver
from tests.scenarios.servers import Client, start_server


def _hv(setting: str) -> dict[str, Any]:
    return {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": setting}}


async def search(client: Client, criteria: dict[str, Any], next_batch: str | None = None) -> dict[str, Any]:
    params = {"next_batch": next_batch} if next_batch else {}
    answer = await client.ok("POST", "/search", {"search_categories": {"room_events": criteria}}, **params)
    return dict(answer["search_categories"]["room_events"])


def bodies(found: dict[str, Any]) -> list[str]:
    return [r["result"]["content"].get("body") for r in found["results"]]


async def test_search_results_visibility_groups_context_and_pagination(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession, database_url: str | None
) -> None:
    hs = await start_server(tmp_path / "a", database_url=database_url)
    servers.append(hs)
    alice = await Client.register(session, hs, "alice")
    bob = await Client.register(session, hs, "bob")
    await alice.ok("PUT", f"/profile/{alice.user_id}/displayname", {"displayname": "Alice A."})
    room = await alice.create_room(name="Martian watch", initial_state=[_hv("joined")])
    other = await alice.create_room()
    await alice.send_text(room, "before bob: martians spotted")
    await bob.ok("POST", f"/join/{room}", {})
    await bob.ok("POST", f"/join/{other}", {})
    sent = [await alice.send_text(room, f"martians landing, report {i}") for i in range(5)]
    by_bob = await bob.send_text(other, "bob saw martians too")
    await alice.send_text(room, "unrelated chatter")

    # Alice sees every message; Bob nothing from before his join ("joined" history visibility).
    everything = await search(
        alice, {"search_term": "martians", "order_by": "recent", "keys": ["content.body"]}
    )
    assert bodies(everything)[0] == "bob saw martians too"
    assert len(everything["results"]) == 7 and "next_batch" not in everything
    assert everything["count"] == 7
    assert "martians" in everything["highlights"]
    for_bob = await search(bob, {"search_term": "martians", "order_by": "recent"})
    assert "before bob: martians spotted" not in bodies(for_bob) and len(for_bob["results"]) == 6
    # The room's name is searched too (content.name), unless the keys say otherwise.
    named = await search(alice, {"search_term": "watch"})
    assert [r["result"]["type"] for r in named["results"]] == ["m.room.name"]
    assert (await search(alice, {"search_term": "watch", "keys": ["content.body"]}))["results"] == []

    # Pagination, newest first: pages of 2 that together are everything, once each.
    seen: list[str] = []
    token = None
    for _ in range(10):
        page = await search(
            alice, {"search_term": "martians", "order_by": "recent", "filter": {"limit": 2}}, token
        )
        seen += [r["result"]["event_id"] for r in page["results"]]
        token = page.get("next_batch")
        if token is None:
            break
    # The seven messages and the room's name ("Martian watch": stemmed, martians ~ martian).
    assert len(seen) == 8 and len(set(seen)) == 8 and set(sent) <= set(seen)
    # By rank as well (offsets).
    ranked: list[str] = []
    token = None
    for _ in range(10):
        page = await search(alice, {"search_term": "martians", "filter": {"limit": 3}}, token)
        ranked += [r["result"]["event_id"] for r in page["results"]]
        assert all(isinstance(r["rank"], float) for r in page["results"])
        token = page.get("next_batch")
        if token is None:
            break
    assert sorted(ranked) == sorted(seen)

    # The filter: rooms and senders.
    only_other = await search(alice, {"search_term": "martians", "filter": {"rooms": [other]}})
    assert [r["result"]["event_id"] for r in only_other["results"]] == [by_bob]
    not_alice = await search(alice, {"search_term": "martians", "filter": {"not_senders": [alice.user_id]}})
    assert bodies(not_alice) == ["bob saw martians too"]

    # Groups by room and sender, with a group's own next_batch that pages within that group only.
    grouped = await search(
        alice,
        {
            "search_term": "martians",
            "order_by": "recent",
            "filter": {"limit": 3},
            "groupings": {"group_by": [{"key": "room_id"}, {"key": "sender"}]},
        },
    )
    rooms = grouped["groups"]["room_id"]
    assert set(rooms) <= {room, other}
    assert sum(len(g["results"]) for g in rooms.values()) == 3
    assert sorted(g["order"] for g in rooms.values()) == list(range(1, len(rooms) + 1))
    in_room = rooms[room]
    group_ids = list(in_room["results"])
    group_token = in_room["next_batch"]
    while group_token:
        page = await search(
            alice,
            {"search_term": "martians", "order_by": "recent", "filter": {"limit": 3},
             "groupings": {"group_by": [{"key": "room_id"}]}},
            group_token,
        )  # fmt: skip
        assert {r["result"]["room_id"] for r in page["results"]} <= {room}
        group_ids += [r["result"]["event_id"] for r in page["results"]]
        group_token = page["groups"]["room_id"].get(room, {}).get("next_batch")
    assert len(group_ids) == 7 and len(set(group_ids)) == 7  # six messages and the name
    assert set(grouped["groups"]["sender"]) <= {alice.user_id, bob.user_id}

    # Context, profiles and state.
    with_context = await search(
        bob,
        {
            "search_term": "report",
            "order_by": "recent",
            "filter": {"limit": 1},
            "event_context": {"before_limit": 2, "after_limit": 1, "include_profile": True},
            "include_state": True,
        },
    )
    (result,) = with_context["results"]
    assert result["result"]["event_id"] == sent[-1]
    context = result["context"]
    assert [e["content"].get("body") for e in context["events_before"]] == [
        "martians landing, report 3",
        "martians landing, report 2",
    ]
    assert [e["content"].get("body") for e in context["events_after"]] == ["unrelated chatter"]
    assert context["profile_info"][alice.user_id] == {"displayname": "Alice A."}
    assert context["start"] and context["end"]
    state_types = {e["type"] for e in with_context["state"][room]}
    assert {"m.room.create", "m.room.name", "m.room.member"} <= state_types
    # The context's tokens page on in /messages.
    status, _ = await bob.call("GET", f"/rooms/{room}/messages", dir="b", **{"from": context["start"]})
    assert status == 200

    # A redaction takes the event out of the results.
    await alice.ok("PUT", f"/rooms/{room}/redact/{sent[0]}/r1", {})
    after = await search(alice, {"search_term": "report", "order_by": "recent"})
    assert sent[0] not in [r["result"]["event_id"] for r in after["results"]]
    assert len(after["results"]) == 4

    # Results carry their bundled aggregations: an edit of a result is its m.replace.
    edited = await alice.send_text(room, "a typo in the zebra message")
    edit = {
        "msgtype": "m.text",
        "body": "* fixed",
        "m.new_content": {"msgtype": "m.text", "body": "fixed"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": edited},
    }
    edit_id = (await alice.ok("PUT", f"/rooms/{room}/send/m.room.message/e1", edit))["event_id"]
    (zebra,) = (await search(alice, {"search_term": "zebra"}))["results"]
    assert zebra["result"]["unsigned"]["m.relations"]["m.replace"]["event_id"] == edit_id

    # Nothing from ignored users.
    await alice.ok(
        "PUT", f"/user/{alice.user_id}/account_data/m.ignored_user_list", {"ignored_users": {bob.user_id: {}}}
    )
    assert "bob saw martians too" not in bodies(await search(alice, {"search_term": "martians"}))
    await alice.ok("PUT", f"/user/{alice.user_id}/account_data/m.ignored_user_list", {"ignored_users": {}})
    assert "bob saw martians too" in bodies(await search(alice, {"search_term": "martians"}))

    # Bob leaves and forgets the other room: no more results from it.
    await bob.ok("POST", f"/rooms/{other}/leave", {})
    assert "bob saw martians too" in bodies(await search(bob, {"search_term": "martians"}))
    await bob.ok("POST", f"/rooms/{other}/forget", {})
    assert "bob saw martians too" not in bodies(await search(bob, {"search_term": "martians"}))


def _room_events(**criteria: Any) -> dict[str, Any]:
    return {"search_categories": {"room_events": {"search_term": "x", **criteria}}}


OTHER_ORDER_TOKEN = "eyJvIjoicmFuayIsIm4iOjN9"  # base64url of {"o":"rank","n":3}
MALFORMED: list[tuple[dict[str, Any], dict[str, str], str]] = [
    ({}, {}, "M_MISSING_PARAM"),
    ({"search_categories": []}, {}, "M_BAD_JSON"),
    ({"search_categories": {"room_events": {}}}, {}, "M_MISSING_PARAM"),
    (_room_events(search_term=5), {}, "M_BAD_JSON"),
    (_room_events(keys=["content.nope"]), {}, "M_INVALID_PARAM"),
    (_room_events(order_by="age"), {}, "M_INVALID_PARAM"),
    (_room_events(filter={"limit": "3"}), {}, "M_BAD_JSON"),
    (_room_events(filter={"limit": 0}), {}, "M_INVALID_PARAM"),
    (_room_events(filter={"rooms": "!a:b"}), {}, "M_BAD_JSON"),
    (_room_events(event_context={"before_limit": -1}), {}, "M_INVALID_PARAM"),
    (_room_events(event_context=[]), {}, "M_BAD_JSON"),
    (_room_events(groupings={"group_by": [{"key": "type"}]}), {}, "M_INVALID_PARAM"),
    (_room_events(include_state="yes"), {}, "M_BAD_JSON"),
    (_room_events(), {"next_batch": "!!garbage"}, "M_INVALID_PARAM"),
    (_room_events(order_by="recent"), {"next_batch": OTHER_ORDER_TOKEN}, "M_INVALID_PARAM"),
]


async def test_malformed_requests_are_400(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    hs = await start_server(tmp_path / "a")
    servers.append(hs)
    client = await Client.register(session, hs, "alice")
    for body, params, errcode in MALFORMED:
        status, answer = await client.call("POST", "/search", body, **params)
        assert status == 400 and answer["errcode"] == errcode, (body, answer)
    # Categories the spec does not define are answered without them.
    assert await client.ok("POST", "/search", {"search_categories": {"other": {}}}) == {
        "search_categories": {}
    }
