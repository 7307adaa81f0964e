"""Malformed client input gets a 4xx Matrix error, never a 500 (issue 12, defect 7), and the paths real
clients use answer (defect 8): filters nested thousands deep or with wrong-typed fields (``POST
/user/{userId}/filter``, and the ``filter`` parameter of ``/sync`` and ``/messages``), pagination and sync
tokens holding numbers no 64-bit column holds, ``createRoom`` fields of the wrong type, and state paths
with the trailing slash of an empty state key (``/state/{type}/``, as mautrix sends them)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import pytest
import pytest_asyncio

from .client_env import ClientEnv, report_outcomes, seg, start_env

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> AsyncIterator[ClientEnv]:
    async with start_env(tmp_path_factory.mktemp("malformed"), __name__) as e:
        yield e
    report_outcomes(request, __name__)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def room_id(env: ClientEnv) -> str:
    room = await env.create_room(env.alice, preset="public_chat", name="Lobby")
    await env.join(env.bob, room)
    for i in range(3):
        await env.send_text(env.alice, room, f"m{i}")
    return room


def nested_object(depth: int) -> str:
    return '{"room":' * depth + "{}" + "}" * depth


def nested_list(depth: int) -> str:
    return "[" * depth + "]" * depth


def with_query(path: str, **params: str) -> str:
    """The path with its query already percent-encoded (a filter a thousand brackets deep must fit in
    aiohttp's 8 KiB request line, and reach the handler as it was written)."""
    return path + "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())


# Deep enough that Python's json parser gives up (RecursionError: the 500 of today's main), yet small enough
# to fit in a request line once percent-encoded.
DEEP_IN_QUERY = 1200
DEEP_IN_BODY = 5000


async def test_deeply_nested_filters_are_400(env: ClientEnv, room_id: str) -> None:
    me = seg(env.alice.user_id)
    category = "malformed: deep filters"
    for raw in (nested_object(DEEP_IN_BODY), nested_list(DEEP_IN_BODY), nested_object(20)):
        await env.probe(
            category,
            env.alice,
            "POST",
            f"/user/{me}/filter",
            raw=raw.encode(),
            expect=400,
            errcode="M_BAD_JSON",
        )
    for deep in (nested_list(DEEP_IN_QUERY), nested_object(100)):
        await env.probe(category, env.alice, "GET", with_query("/sync", filter=deep), expect=400)
        path = with_query(f"/rooms/{seg(room_id)}/messages", dir="b", filter=deep)
        await env.probe(category, env.alice, "GET", path, expect=400)
    # The control: the same endpoints with a sane filter.
    sane = {"room": {"timeline": {"limit": 2, "types": ["m.room.message"]}}}
    created = await env.probe(category, env.alice, "POST", f"/user/{me}/filter", sane, expect=200)
    filter_id = created.body["filter_id"]
    stored = await env.probe(category, env.alice, "GET", f"/user/{me}/filter/{filter_id}", expect=200)
    assert stored.body == sane
    synced = await env.probe(category, env.alice, "GET", with_query("/sync", filter=filter_id), expect=200)
    timeline = synced.body["rooms"]["join"][room_id]["timeline"]
    assert len(timeline["events"]) == 2 and timeline["limited"] is True
    path = with_query(
        f"/rooms/{seg(room_id)}/messages", dir="b", filter=json.dumps({"types": ["m.room.name"]})
    )
    page = await env.probe(category, env.alice, "GET", path, expect=200)
    assert [e["type"] for e in page.body["chunk"]] == ["m.room.name"]


FILTERS_OF_THE_WRONG_SHAPE: list[Any] = [
    [],
    "a string",
    {"room": []},
    {"room": {"timeline": []}},
    {"room": {"timeline": {"limit": "ten"}}},
    {"room": {"timeline": {"limit": True}}},
    {"room": {"timeline": {"types": "m.room.message"}}},
    {"room": {"state": {"lazy_load_members": "yes"}}},
    {"room": {"rooms": [1]}},
    {"room": {"include_leave": 1}},
    {"presence": {"senders": [None]}},
    {"account_data": {"not_types": {}}},
    {"event_fields": "content.body"},
    {"event_format": "xml"},
    {"room": {"timeline": {"limit": 2**60}}},  # beyond canonical JSON's integers
]


async def test_filters_of_the_wrong_shape_are_400(env: ClientEnv, room_id: str) -> None:
    me = seg(env.alice.user_id)
    category = "malformed: filter fields"
    for bad in FILTERS_OF_THE_WRONG_SHAPE:
        await env.probe(
            category, env.alice, "POST", f"/user/{me}/filter", bad, expect=400, errcode="M_BAD_JSON"
        )
        await env.probe(category, env.alice, "GET", with_query("/sync", filter=json.dumps(bad)), expect=400)
    for raw in (b"{", b"{'single': 'quotes'}", b"\xff"):
        await env.probe(
            category, env.alice, "POST", f"/user/{me}/filter", raw=raw, expect=400, errcode="M_NOT_JSON"
        )
    path = f"/rooms/{seg(room_id)}/messages"
    for bad in ({"types": "m.room.message"}, {"limit": "x"}, {"contains_url": 1}, [1], "nope"):
        await env.probe(category, env.alice, "GET", with_query(path, filter=json.dumps(bad)), expect=400)
    await env.probe(
        category, env.alice, "GET", with_query(path, filter="{not json"), expect=400, errcode="M_NOT_JSON"
    )
    # Nulls read as absent fields (some clients write every field), at every level.
    nulls = {"room": {"timeline": {"types": None, "limit": None}, "rooms": None}, "presence": None}
    await env.probe(category, env.alice, "POST", f"/user/{me}/filter", nulls, expect=200)
    await env.probe(category, env.alice, "GET", with_query("/sync", filter=json.dumps(nulls)), expect=200)
    page = await env.probe(
        category, env.alice, "GET", with_query(path, filter='{"types": null, "not_types": null}'), expect=200
    )
    assert page.body["chunk"]
    # Unknown fields are extensions, kept as they are.
    extended = {"org.example.extension": {"x": [1, 2]}, "room": {"timeline": {"limit": 3}}}
    created = await env.probe(category, env.alice, "POST", f"/user/{me}/filter", extended, expect=200)
    stored = await env.call(env.alice, "GET", f"/user/{me}/filter/{created.body['filter_id']}")
    assert stored.body == extended


TOKENS = [
    "s9999999999999999999",  # over 2^63: the 500 of today's main
    "s99999999999999999999999999",
    "t9999999999999999999_1",
    "t1_9999999999999999999",
    "t99999999999999999999_1",
    "s-1",
    "s+1",
    "s1_",
    "s\u0661",  # ARABIC-INDIC DIGIT ONE: int() takes it
    "t1",
    "t_1",
    "garbage",
]


async def test_pagination_and_sync_tokens_out_of_range_are_400(env: ClientEnv, room_id: str) -> None:
    category = "malformed: tokens"
    path = f"/rooms/{seg(room_id)}/messages"
    for token in TOKENS:
        await env.probe(
            category, env.alice, "GET", path, params={"from": token}, expect=400, errcode="M_INVALID_PARAM"
        )
        await env.probe(
            category,
            env.alice,
            "GET",
            path,
            params={"dir": "b", "to": token},
            expect=400,
            errcode="M_INVALID_PARAM",
        )
    for token in ["s9999999999999999999", "s1_2_3_4_5_6_7_8_9", "s-1", "s\u0661", "t1_1"]:
        await env.probe(category, env.alice, "GET", "/sync", params={"since": token}, expect=400)
    me = seg(env.alice.user_id)
    for filter_id in ["99999999999999999999", "-1", "\u0663", "1e3"]:
        await env.probe(category, env.alice, "GET", f"/user/{me}/filter/{quote(filter_id)}", expect=404)
    # The control: tokens the server handed out work.
    first = await env.probe(category, env.alice, "GET", path, params={"dir": "b", "limit": "1"}, expect=200)
    await env.probe(
        category, env.alice, "GET", path, params={"dir": "b", "from": first.body["end"]}, expect=200
    )
    synced = await env.probe(category, env.alice, "GET", "/sync", expect=200)
    await env.probe(category, env.alice, "GET", path, params={"from": synced.body["next_batch"]}, expect=200)


async def test_huge_limits_are_clamped(env: ClientEnv, room_id: str) -> None:
    category = "malformed: huge limits"
    path = f"/rooms/{seg(room_id)}/messages"
    for limit in ["99999999999999999999999999", "9223372036854775808", "-5", "0"]:
        await env.probe(category, env.alice, "GET", path, params={"dir": "b", "limit": limit}, expect=200)
    for limit in ["1e3", "ten", "\u0661\u0660"]:
        await env.probe(category, env.alice, "GET", path, params={"limit": limit}, expect=400)
    last = (await env.ok(env.alice, "GET", path, dir="b", limit="1"))["chunk"][0]["event_id"]
    context = f"/rooms/{seg(room_id)}/context/{seg(last)}"
    await env.probe(category, env.alice, "GET", context, params={"limit": "99999999999999999999"}, expect=200)
    await env.probe(
        category, env.alice, "GET", "/sync", params={"timeout": "99999999999999999999"}, expect=200
    )
    for since in ["\u00b2", "99999999999999999999", "-1"]:  # "²".isdigit() is True; int("²") fails
        await env.probe(category, env.alice, "GET", "/publicRooms", params={"since": since}, expect=200)
        await env.probe(category, env.alice, "POST", "/publicRooms", {"since": since}, expect=200)
    await env.probe(category, env.alice, "GET", "/publicRooms", params={"limit": "9" * 30}, expect=200)


CREATE_ROOM_BODIES: list[tuple[dict[str, Any], str]] = [
    ({"preset": []}, "M_INVALID_PARAM"),  # unhashable: the 500 of today's main
    ({"preset": {"a": 1}}, "M_INVALID_PARAM"),
    ({"preset": 1}, "M_INVALID_PARAM"),
    ({"preset": True}, "M_INVALID_PARAM"),
    ({"preset": ""}, "M_INVALID_PARAM"),
    ({"preset": "party"}, "M_INVALID_PARAM"),
    ({"visibility": []}, "M_INVALID_PARAM"),
    ({"visibility": 1}, "M_INVALID_PARAM"),
    ({"visibility": "secret"}, "M_INVALID_PARAM"),
    ({"is_direct": "yes"}, "M_INVALID_PARAM"),
    ({"room_version": 12}, "M_UNSUPPORTED_ROOM_VERSION"),
    ({"room_version": ["12"]}, "M_UNSUPPORTED_ROOM_VERSION"),
    ({"room_version": "999"}, "M_UNSUPPORTED_ROOM_VERSION"),
    ({"invite": "@bob:authz.test:8448"}, "M_INVALID_PARAM"),
    ({"invite": [1]}, "M_INVALID_PARAM"),
    ({"invite": ["not-a-user"]}, "M_INVALID_PARAM"),
    ({"initial_state": {}}, "M_INVALID_PARAM"),
    ({"initial_state": [1]}, "M_INVALID_PARAM"),
    ({"initial_state": [{"type": 1}]}, "M_INVALID_PARAM"),
    ({"initial_state": [{"type": "m.room.topic", "content": "x"}]}, "M_INVALID_PARAM"),
    ({"initial_state": [{"type": "a", "state_key": 1}]}, "M_INVALID_PARAM"),
    ({"initial_state": [{"type": "a" * 300, "content": {}}]}, "M_BAD_JSON"),
    ({"name": 5}, "M_INVALID_PARAM"),
    ({"topic": {"text": "x"}}, "M_INVALID_PARAM"),
    ({"creation_content": 5}, "M_INVALID_PARAM"),
    ({"power_level_content_override": []}, "M_INVALID_PARAM"),
    ({"power_level_content_override": {"users": "everyone"}}, "M_BAD_JSON"),
    ({"power_level_content_override": {"ban": "high"}}, "M_BAD_JSON"),
    ({"room_alias_name": 5}, "M_INVALID_PARAM"),
    ({"room_alias_name": ""}, "M_INVALID_PARAM"),
    ({"room_alias_name": "a:b"}, "M_INVALID_PARAM"),
    ({"room_alias_name": "a b"}, "M_INVALID_PARAM"),
    ({"room_alias_name": "x" * 300}, "M_INVALID_PARAM"),
]


@pytest.mark.parametrize(
    ("body", "errcode"), CREATE_ROOM_BODIES, ids=[json.dumps(b)[:40] for b, _ in CREATE_ROOM_BODIES]
)
async def test_create_room_fields_of_the_wrong_type_are_400(
    env: ClientEnv, body: dict[str, Any], errcode: str
) -> None:
    rooms_before = await env.hs.storage.rooms.get_all_rooms()
    await env.probe(
        "malformed: createRoom", env.carol, "POST", "/createRoom", body, expect=400, errcode=errcode
    )
    assert len(await env.hs.storage.rooms.get_all_rooms()) == len(rooms_before)


async def test_state_paths_with_the_trailing_slash_of_an_empty_state_key(
    env: ClientEnv, room_id: str
) -> None:
    category = "paths: state with a trailing slash"
    base = f"/rooms/{seg(room_id)}/state"
    for prefix in ("/_matrix/client/v3", "/_matrix/client/r0"):
        name = {"name": f"Renamed through {prefix}/"}
        await env.probe(category, env.alice, "PUT", f"{prefix}{base}/m.room.name/", name, expect=200)
        got = await env.probe(category, env.alice, "GET", f"{prefix}{base}/m.room.name/", expect=200)
        assert got.body == name
        # The same state, written without the slash.
        assert (
            await env.probe(category, env.bob, "GET", f"{prefix}{base}/m.room.name", expect=200)
        ).body == name
    custom = {"setting": 1}
    await env.probe(category, env.alice, "PUT", f"{base}/org.example.settings/", custom, expect=200)
    assert await env.state(env.alice, room_id, "org.example.settings") == custom
    event = await env.probe(
        category, env.alice, "GET", f"{base}/org.example.settings/", params={"format": "event"}, expect=200
    )
    assert event.body["state_key"] == "" and event.body["content"] == custom
    # Still refused where it must be: nothing under the empty key, and no power for Bob.
    await env.probe(category, env.alice, "GET", f"{base}/m.room.member/", expect=404, errcode="M_NOT_FOUND")
    await env.probe(category, env.bob, "PUT", f"{base}/m.room.name/", {"name": "Bob's"}, expect=403)
    await env.probe(category, env.eve, "GET", f"{base}/m.room.name/", expect=403)
    await env.assert_room_works(room_id, env.alice, env.bob)
