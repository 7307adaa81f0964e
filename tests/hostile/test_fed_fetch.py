"""Hostile answers to our fetches: the peer sends an event whose prev event we lack, and then answers our
/get_missing_events, /event and /state_ids with forgeries, errors, garbage or floods.

Whatever the answers, the /send is answered 200, a valid PDU of the same transaction is accepted, nothing
forged is ever stored, the room's state is unchanged and its members go on using it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from ranvier.protocol.events import Pdu
from ranvier.protocol.signing import SigningKey

from .fed_harness import HostileRoom, Outcome, record, start_hostile_room

pytestmark = pytest.mark.asyncio(loop_scope="module")

CATEGORY = "hostile fetch answers"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def room(
    tmp_path_factory: pytest.TempPathFactory, fed_session: aiohttp.ClientSession
) -> AsyncIterator[HostileRoom]:
    room = await start_hostile_room(tmp_path_factory.mktemp("fetch"), fed_session)
    yield room
    await room.close()


@dataclass
class Gap:
    hidden: Pdu  # the event we lack (what the peer should serve)
    event: Pdu  # the event sent, citing ``hidden``
    served: dict[str, Any]  # what the peer serves for ``hidden`` (a forgery in most cases)


Setup = Callable[[HostileRoom, Gap], Awaitable[None]]


async def make_gap(room: HostileRoom) -> Gap:
    hidden = await room.message("hidden prev event")
    event = await room.message("after the gap", prev=[hidden])
    return Gap(hidden, event, dict(hidden.json))


def serve(room: HostileRoom, gap: Gap, served: dict[str, Any]) -> None:
    """The peer serves ``served`` as the hidden event (through /get_missing_events and /event)."""
    gap.served = served
    room.peer.overrides["get_missing_events"] = (200, {"events": [served]})
    room.peer.overrides["event"] = (200, {"origin": room.peer.name, "origin_server_ts": 0, "pdus": [served]})


async def _control(room: HostileRoom, gap: Gap) -> None:
    # The peer's own store answers (/get_missing_events walks back from the event sent).
    room.peer.driver.events[gap.hidden.event_id] = gap.hidden
    room.peer.driver.events[gap.event.event_id] = gap.event


async def _forged_signature(room: HostileRoom, gap: Gap) -> None:
    forger = SigningKey.generate(room.peer.key.key_id.split(":", 1)[1])
    serve(room, gap, room.resign(gap.hidden.json, key=forger))


async def _tampered_content(room: HostileRoom, gap: Gap) -> None:
    # Same id (the reference hash covers the redacted form), other content: kept only redacted.
    served = {**gap.hidden.json, "content": {"msgtype": "m.text", "body": "swapped in transit"}}
    serve(room, gap, served)


async def _unsigned(room: HostileRoom, gap: Gap) -> None:
    serve(room, gap, {k: v for k, v in gap.hidden.json.items() if k != "signatures"})


async def _another_event(room: HostileRoom, gap: Gap) -> None:
    # Asked for the hidden event, the peer answers with a different (valid) one.
    other = await room.message("not what was asked")
    serve(room, gap, dict(other.json))


async def _auth_failure(room: HostileRoom, gap: Gap) -> None:
    # The hidden event is a topic change bob may not make, properly signed.
    topic = await room.build("m.room.topic", {"topic": "via the gap"}, state_key="")
    gap.hidden = topic
    gap.event = await room.message("after a forbidden topic", prev=[topic])
    serve(room, gap, dict(topic.json))


async def _status_500(room: HostileRoom, gap: Gap) -> None:
    for name in ("get_missing_events", "event", "state_ids", "state", "event_auth"):
        room.peer.overrides[name] = (500, {"errcode": "M_UNKNOWN", "error": "boom"})


async def _garbage_bytes(room: HostileRoom, gap: Gap) -> None:
    for name in ("get_missing_events", "event", "state_ids", "state", "event_auth"):
        room.peer.overrides[name] = (200, b"\x00\xff not json at all")


async def _wrong_shapes(room: HostileRoom, gap: Gap) -> None:
    room.peer.overrides["get_missing_events"] = (200, {"events": "x"})
    room.peer.overrides["event"] = (200, {"pdus": {"a": 1}})
    room.peer.overrides["state_ids"] = (200, {"pdu_ids": 5, "auth_chain_ids": None})
    room.peer.overrides["state"] = (200, [1, 2])
    room.peer.overrides["event_auth"] = (200, {"auth_chain": [None, "x"]})


async def _flood_of_junk(room: HostileRoom, gap: Gap) -> None:
    junk = [{"type": "m.room.message", "content": {"i": i}} for i in range(2000)]
    room.peer.overrides["get_missing_events"] = (200, {"events": junk})


async def _float_in_v12(room: HostileRoom, gap: Gap) -> None:
    serve(room, gap, room.resign({**gap.hidden.json, "content": {"body": "f", "x": 1.5}}))


async def _event_of_another_room(room: HostileRoom, gap: Gap) -> None:
    status, body = await room.alice.call("POST", "/_matrix/client/v3/createRoom", {"preset": "private_chat"})
    assert status == 200, body
    foreign = await room.hs.storage.events.get_event(
        (await room.hs.storage.events.get_forward_extremities(body["room_id"]))[0]
    )
    assert foreign is not None
    serve(room, gap, dict(foreign.json))


async def _state_ids_flood(room: HostileRoom, gap: Gap) -> None:
    room.peer.overrides["get_missing_events"] = (200, {"events": []})
    room.peer.overrides["state_ids"] = (
        200,
        {
            "pdu_ids": [f"${i:043d}" for i in range(100)],
            "auth_chain_ids": [f"$a{i:042d}" for i in range(100)],
        },
    )


@dataclass(frozen=True)
class FetchCase:
    name: str
    setup: Setup
    expect: Outcome  # of the event sent after the gap
    forged_kept: bool = False  # whether what the peer served may be stored (only the control)


CASES = [
    FetchCase("control_serves_the_event", _control, "accepted", forged_kept=True),
    FetchCase("serves_a_forged_signature", _forged_signature, "refused"),
    FetchCase("serves_tampered_content", _tampered_content, "accepted", forged_kept=True),
    FetchCase("serves_it_unsigned", _unsigned, "refused"),
    FetchCase("serves_another_event", _another_event, "refused", forged_kept=True),
    FetchCase("serves_an_auth_failure", _auth_failure, "refused", forged_kept=True),
    FetchCase("answers_500", _status_500, "refused"),
    FetchCase("answers_garbage_bytes", _garbage_bytes, "refused"),
    FetchCase("answers_wrong_shapes", _wrong_shapes, "refused"),
    FetchCase("answers_2000_junk_events", _flood_of_junk, "refused"),
    FetchCase("serves_a_float_in_v12", _float_in_v12, "refused"),
    FetchCase("serves_an_event_of_another_room", _event_of_another_room, "refused", forged_kept=True),
    FetchCase("state_ids_of_200_unknown_events", _state_ids_flood, "refused"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_hostile_fetch_answers(room: HostileRoom, case: FetchCase) -> None:
    gap = await make_gap(room)
    room.peer.overrides.clear()
    await case.setup(room, gap)
    try:
        valid = await room.message(f"valid beside {case.name}")
        reply = await room.send_txn([valid, gap.event])
    finally:
        room.peer.overrides.clear()
    if reply.status >= 500:
        record(CATEGORY, "5xx")
    assert reply.status == 200, reply
    results = reply.body["pdus"]
    assert results[valid.event_id] == {}, results
    held, rejected = await room.stored(gap.event.event_id)
    shown = held and not rejected and await room.visible_to_alice(gap.event.event_id)
    outcome: Outcome = "accepted" if shown else "refused"
    record(CATEGORY, outcome)
    if case.name == "serves_an_auth_failure":
        # The topic is rejected; the message after it may stand (its own auth is fine) or not.
        assert (await room.stored(gap.hidden.event_id))[1] or not (await room.stored(gap.hidden.event_id))[0]
    else:
        assert outcome == case.expect, (case.name, results)
    if not case.forged_kept:
        # Nothing of what the peer forged is held under the hidden event's id, whole.
        held_hidden, _ = await room.stored(gap.hidden.event_id)
        assert not held_hidden or await room.hs.storage.events.get_event(gap.hidden.event_id) is None
    if case.name == "serves_tampered_content" and shown:
        status, body = await room.alice.call(
            "GET", f"/_matrix/client/v3/rooms/{room.room_id}/event/{gap.hidden.event_id}"
        )
        assert status != 200 or body["content"].get("body") != "swapped in transit", body
    await room.assert_works()
