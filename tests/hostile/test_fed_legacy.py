"""Legacy numbers and maximal depth: one bad PDU never fails its transaction (issue 12, defect 4).

Room versions 1-5 predate enforced canonical JSON: their events may carry floats and integers outside
[-(2**53)+1, 2**53-1] ("v1-canonical-json" fragment; Synapse accepts them), so those are accepted there.
From version 6 they are invalid events: dropped one by one, with an error for that PDU in ``pdus`` and the
rest of the transaction processed as usual.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from ranvier.protocol.events import build_event
from ranvier.protocol.hashes import compute_event_id

from .fed_harness import HostileRoom, Outcome, lenient, path_segment, record, start_hostile_room

pytestmark = pytest.mark.asyncio(loop_scope="module")

CATEGORY = "legacy numbers / depth"
MAX_SAFE = 2**53 - 1


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def room_v5(
    tmp_path_factory: pytest.TempPathFactory, fed_session: aiohttp.ClientSession
) -> AsyncIterator[HostileRoom]:
    room = await start_hostile_room(tmp_path_factory.mktemp("v5"), fed_session, room_version="5")
    yield room
    await room.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def room_v12(
    tmp_path_factory: pytest.TempPathFactory, fed_session: aiohttp.ClientSession
) -> AsyncIterator[HostileRoom]:
    room = await start_hostile_room(tmp_path_factory.mktemp("v12"), fed_session, room_version="12")
    yield room
    await room.close()


@dataclass(frozen=True)
class NumberCase:
    name: str
    content: dict[str, Any]  # extra content of an m.room.message sent beside a valid one
    expect_v5: Outcome
    expect_v12: Outcome


NUMBER_CASES = [
    NumberCase("float", {"n": 1.5}, "accepted", "refused"),
    NumberCase("float_integral", {"n": 2.0}, "accepted", "refused"),
    NumberCase("float_exponent", {"n": 1e300}, "accepted", "refused"),
    NumberCase("negative_float", {"n": -0.25}, "accepted", "refused"),
    NumberCase("int_2_60", {"n": 2**60}, "accepted", "refused"),
    NumberCase("int_2_53", {"n": 2**53}, "accepted", "refused"),
    NumberCase("int_minus_2_53", {"n": -(2**53)}, "accepted", "refused"),
    NumberCase("int_2_100", {"n": 2**100}, "accepted", "refused"),
    NumberCase("nested_float", {"a": [{"b": [0.1]}]}, "accepted", "refused"),
    NumberCase("max_safe_int", {"n": MAX_SAFE}, "accepted", "accepted"),
    NumberCase("min_safe_int", {"n": -MAX_SAFE}, "accepted", "accepted"),
]


async def _send_pair(room: HostileRoom, case: NumberCase) -> Outcome:
    """A transaction of one valid message and one carrying ``case.content``: the valid one is always
    accepted; the other as the room version says. Returns the outcome of the second."""
    valid = await room.message(f"valid beside {case.name}")
    odd = await room.build(
        "m.room.message",
        {"msgtype": "m.text", "body": f"odd {case.name}", **case.content},
        prev=[valid],
    )
    reply = await room.send_txn([valid, odd])
    assert reply.status == 200, reply
    results = reply.body["pdus"]
    assert results[valid.event_id] == {}, results
    assert await room.visible_to_alice(valid.event_id)
    # Every PDU of the transaction has its entry: the odd one too, accepted or with an error.
    assert odd.event_id in results, results
    if results[odd.event_id] == {}:
        assert await room.visible_to_alice(odd.event_id)
        return "accepted"
    assert isinstance(results[odd.event_id].get("error"), str)
    held, _ = await room.stored(odd.event_id)
    assert not held
    return "refused"


@pytest.mark.parametrize("case", NUMBER_CASES, ids=[c.name for c in NUMBER_CASES])
async def test_v5_accepts_what_v5_allows(room_v5: HostileRoom, case: NumberCase) -> None:
    outcome = await _send_pair(room_v5, case)
    record(CATEGORY, outcome)
    assert outcome == case.expect_v5
    await room_v5.assert_works()


@pytest.mark.parametrize("case", NUMBER_CASES, ids=[c.name for c in NUMBER_CASES])
async def test_v12_refuses_only_the_bad_pdu(room_v12: HostileRoom, case: NumberCase) -> None:
    outcome = await _send_pair(room_v12, case)
    record(CATEGORY, outcome)
    assert outcome == case.expect_v12
    await room_v12.assert_works()


async def test_v5_float_event_is_served_back_over_federation(room_v5: HostileRoom) -> None:
    pdu = await room_v5.build("m.room.message", {"msgtype": "m.text", "body": "pi", "pi": 3.14159})
    assert (await room_v5.send_txn([pdu])).body["pdus"] == {pdu.event_id: {}}
    reply = await room_v5.request("GET", f"/_matrix/federation/v1/event/{pdu.event_id}")
    record(CATEGORY, "accepted" if reply.status == 200 else "refused")
    assert reply.status == 200, reply
    assert reply.body["pdus"][0]["content"]["pi"] == 3.14159
    await room_v5.assert_works()


async def test_v5_state_event_with_float_changes_state(room_v5: HostileRoom) -> None:
    """bob has no power to set a topic in a public room? He does not: the state must stay. A v5 event
    with floats is still authorised like any other."""
    topic = await room_v5.build("m.room.topic", {"topic": "floaty", "x": 0.5}, state_key="")
    reply = await room_v5.send_txn([topic])
    assert reply.status == 200
    held, rejected = await room_v5.stored(topic.event_id)
    # public_chat gives state_default 50: bob (power 0) is refused by the auth rules, float or not.
    record(CATEGORY, "refused" if (not held or rejected) else "accepted")
    assert held and rejected
    await room_v5.assert_works()


@pytest.mark.parametrize("room_fixture", ["room_v5", "room_v12"])
async def test_maximal_depth_leaves_the_room_usable(
    room_fixture: str, request: pytest.FixtureRequest
) -> None:
    """One PDU of depth 2**53-1 (the largest canonical depth) is accepted; local sends, state changes
    and /messages go on working (the local depth is clamped, issue 12 defect 2)."""
    room: HostileRoom = request.getfixturevalue(room_fixture)
    deep = await room.message("deepest", depth=MAX_SAFE)
    reply = await room.send_txn([deep])
    assert reply.status == 200, reply
    record(CATEGORY, "accepted" if reply.body["pdus"].get(deep.event_id) == {} else "refused")
    assert reply.body["pdus"] == {deep.event_id: {}}
    # A local state change after it (the room name) must go through, and so must the usual checks.
    status, body = await room.alice.call(
        "PUT", f"/_matrix/client/v3/rooms/{room.room_id}/state/m.room.name/", {"name": "after the deep one"}
    )
    assert status == 200, body
    await room.snapshot()
    await room.assert_works()


async def test_our_federation_client_sends_v5_events_with_floats(room_v5: HostileRoom) -> None:
    """Ranvier's own client signs (X-Matrix) and sends a transaction holding a v5 event with a float, as
    it must when it forwards a remote v5 event to other servers; the receiving Ranvier accepts it."""
    pdu = await room_v5.build("m.room.message", {"msgtype": "m.text", "body": "forwarded", "f": 0.75})
    answer = await room_v5.peer.driver.send(room_v5.hs.server_name, [pdu])
    record(CATEGORY, "accepted" if answer["pdus"] == {pdu.event_id: {}} else "refused")
    assert answer["pdus"] == {pdu.event_id: {}}
    await room_v5.assert_works()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def room_v1(
    tmp_path_factory: pytest.TempPathFactory, fed_session: aiohttp.ClientSession
) -> AsyncIterator[HostileRoom]:
    room = await start_hostile_room(tmp_path_factory.mktemp("v1"), fed_session, room_version="1")
    yield room
    await room.close()


@pytest.mark.parametrize("case", NUMBER_CASES, ids=[c.name for c in NUMBER_CASES])
async def test_v1_accepts_what_v1_allows(room_v1: HostileRoom, case: NumberCase) -> None:
    outcome = await _send_pair(room_v1, case)
    record(CATEGORY, outcome)
    assert outcome == case.expect_v5
    await room_v1.assert_works()


V1_IDS = "room v1 event ids"


@pytest.mark.parametrize(
    "name",
    [
        "event_id_of_another_server",
        "event_id_of_our_server",
        "event_id_reuses_a_held_event",
        "event_id_of_alices_message",
        "event_id_missing",
        "event_id_not_a_string",
        "event_id_over_255_bytes",
        "event_id_without_domain",
    ],
)
async def test_v1_event_ids_chosen_by_the_sender(room_v1: HostileRoom, name: str) -> None:
    """Room versions 1-2 carry the event id, chosen by its sender: a hostile one must not claim another
    server's id space nor replace an event we hold (bob's or alice's) with new content."""
    room = room_v1
    status, body = await room.alice.call(
        "PUT",
        f"/_matrix/client/v3/rooms/{room.room_id}/send/m.room.message/v1-{name}",
        {"msgtype": "m.text", "body": "alice's original"},
    )
    assert status == 200, body
    alices = body["event_id"]
    earlier = await room.message("bob's original")
    assert (await room.send_txn([earlier])).body["pdus"] == {earlier.event_id: {}}
    d = dict((await room.message(f"hostile {name}")).json)
    replaced = {
        "event_id_of_another_server": "$abc:other.example.org",
        "event_id_of_our_server": f"$abc:{room.hs.server_name}",
        "event_id_reuses_a_held_event": earlier.event_id,
        "event_id_of_alices_message": alices,
        "event_id_over_255_bytes": f"${'a' * 300}:{room.peer.name}",
        "event_id_without_domain": "$nodomain",
    }
    if name == "event_id_missing":
        d.pop("event_id")
    elif name == "event_id_not_a_string":
        d["event_id"] = 12
    else:
        d["event_id"] = replaced[name]
    hostile = room.resign(d)
    reply = await room.send_txn([hostile])
    assert reply.status == 200, reply
    # Whatever the answer, nothing we hold was replaced and nothing new was accepted under a foreign id.
    for event_id, text in ((earlier.event_id, "bob's original"), (alices, "alice's original")):
        status, body = await room.alice.call(
            "GET", f"/_matrix/client/v3/rooms/{room.room_id}/event/{path_segment(event_id)}"
        )
        assert status == 200 and body["content"]["body"] == text, body
    new_id = hostile.get("event_id")
    accepted = (
        isinstance(new_id, str)
        and new_id not in (earlier.event_id, alices)
        and (await room.stored(new_id)) == (True, False)
    )
    record(V1_IDS, "accepted" if accepted else "refused")
    assert not accepted
    if name in ("event_id_reuses_a_held_event", "event_id_of_alices_message") or not isinstance(new_id, str):
        pass  # the held event stays as it was (checked above); the answer may be {} ("already held")
    else:
        assert "error" in reply.body["pdus"].get(new_id, {}), reply
    await room.assert_works()


@pytest.mark.parametrize(
    ("depth", "expect"),
    [(2**60, "accepted"), (2**63 - 1, "accepted"), (2**63, "refused"), (2**100, "refused")],
)
async def test_v5_big_depths(room_v5: HostileRoom, depth: int, expect: Outcome) -> None:
    """v1-5 depths are not bound to canonical JSON's range, only to what a 64-bit column holds (Synapse's
    MAX_DEPTH): beyond it the PDU alone is refused, and the room (next local depth clamped) goes on."""
    valid = await room_v5.message(f"beside depth {depth}")
    # Built at an ordinary depth, then given the big one and signed again (a Pdu cannot hold 2**63).
    deep = room_v5.resign({**(await room_v5.message(f"depth {depth}", prev=[valid])).json, "depth": depth})
    deep_id = compute_event_id(deep, lenient(room_v5.rv))
    reply = await room_v5.send_txn([valid, deep])
    assert reply.status == 200, reply
    assert reply.body["pdus"][valid.event_id] == {}
    assert deep_id in reply.body["pdus"], reply
    outcome: Outcome = "accepted" if reply.body["pdus"][deep_id] == {} else "refused"
    record(CATEGORY, outcome)
    assert outcome == expect, reply
    await room_v5.assert_works()


async def test_v5_send_join_with_a_float(room_v5: HostileRoom) -> None:
    """A v5 join (through make_join/send_join) whose content carries a float is a valid v5 event."""
    room = room_v5
    user = room.peer.user("floaty")
    made = await room.request(
        "GET",
        f"/_matrix/federation/v1/make_join/{path_segment(room.room_id)}/{path_segment(user)}",
        query="ver=5",
    )
    assert made.status == 200, made
    template = made.body["event"]
    held = await room.hs.storage.events.get_events([*template["prev_events"], *template["auth_events"]])
    join = build_event(
        room_version=room.rv,
        room_id=room.room_id,
        sender=user,
        event_type="m.room.member",
        content={**template["content"], "org.example.weight": 0.5},
        prev_events=[held[e] for e in template["prev_events"]],
        auth_events=[held[e] for e in template["auth_events"]],
        depth=template["depth"],
        origin_server_ts=template["origin_server_ts"],
        server_name=room.peer.name,
        signing_key=room.peer.key,
        state_key=user,
    )
    sent = await room.request(
        "PUT",
        f"/_matrix/federation/v2/send_join/{path_segment(room.room_id)}/{path_segment(join.event_id)}",
        join.json,
    )
    record(CATEGORY, "accepted" if sent.status == 200 else ("5xx" if sent.status >= 500 else "refused"))
    assert sent.status == 200, sent
    assert sent.body["event"]["content"]["org.example.weight"] == 0.5
    await room.snapshot()
    await room.assert_works()
