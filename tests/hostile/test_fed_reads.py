"""Federation reads by servers that are not in the room (issue 12, defect 3), malformed reads, and history
visibility as the asking server sees it.

Only a server with a user joined to the room now reads its state and events (/state_ids: "403: The
requesting host is not in the room"): a server whose user left, was banned or is only invited gets 403
``M_FORBIDDEN`` from every room read. A joined server gets events it may not see (history visibility at the
event) redacted, but gets the state and the events around its own join it needs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from ranvier.protocol.hashes import compute_event_id

from .fed_harness import (
    HostileRoom,
    Peer,
    Reply,
    classify_status,
    join_through_make_join,
    membership_handshake,
    path_segment,
    record,
    start_hostile_room,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

CATEGORY = "reads by outsiders"
MALFORMED = "malformed reads"
VISIBILITY = "history visibility reads"


@dataclass
class ReadsRoom:
    room: HostileRoom
    outsiders: dict[str, Peer]  # kind -> a server whose only user in the room has that membership
    event_id: str  # a message of the room, sent while everyone above was (or was not) there


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def reads(
    tmp_path_factory: pytest.TempPathFactory, fed_session: aiohttp.ClientSession
) -> AsyncIterator[ReadsRoom]:
    tmp = tmp_path_factory.mktemp("reads")
    room = await start_hostile_room(tmp, fed_session)
    try:
        never = await room.add_peer(tmp / "never")
        left = await room.add_peer(tmp / "left")
        banned = await room.add_peer(tmp / "banned")
        invited = await room.add_peer(tmp / "invited")
        # left: joins for real, talks, then leaves through make_leave/send_leave.
        await join_through_make_join(room, left.user("lee"), left)
        # banned: joins, then the room's admin bans them.
        await join_through_make_join(room, banned.user("bart"), banned)
        message = await room.message("while they were all here")
        assert (await room.send_txn([message])).body["pdus"] == {message.event_id: {}}
        await membership_handshake(room, left.user("lee"), "leave", left)
        status, body = await room.alice.call(
            "POST",
            f"/_matrix/client/v3/rooms/{room.room_id}/ban",
            {"user_id": banned.user("bart"), "reason": "test"},
        )
        assert status == 200, body
        # invited: bob (the joined peer's user) invites a user of another server, who never joins.
        invite = await room.build("m.room.member", {"membership": "invite"}, state_key=invited.user("ivy"))
        assert (await room.send_txn([invite])).body["pdus"] == {invite.event_id: {}}
        await room.snapshot()
        yield ReadsRoom(
            room,
            {"never joined": never, "left": left, "banned": banned, "invited only": invited},
            message.event_id,
        )
    finally:
        await room.close()


@dataclass(frozen=True)
class Read:
    name: str
    method: str
    path: str  # {room} and {event} are filled in
    query: str = ""
    body: Any = None


READS = [
    Read("state", "GET", "/_matrix/federation/v1/state/{room}", "event_id={event}"),
    Read("state_ids", "GET", "/_matrix/federation/v1/state_ids/{room}", "event_id={event}"),
    Read("event", "GET", "/_matrix/federation/v1/event/{event}"),
    Read("event_auth", "GET", "/_matrix/federation/v1/event_auth/{room}/{event}"),
    Read("backfill", "GET", "/_matrix/federation/v1/backfill/{room}", "v={event}&limit=10"),
    Read(
        "get_missing_events",
        "POST",
        "/_matrix/federation/v1/get_missing_events/{room}",
        body={"earliest_events": [], "latest_events": ["{event}"], "limit": 10, "min_depth": 0},
    ),
    Read("timestamp_to_event", "GET", "/_matrix/federation/v1/timestamp_to_event/{room}", "ts=0&dir=f"),
    Read("extremities", "GET", "/_matrix/federation/unstable/org.matrix.msc4370/extremities/{room}"),
]


def _fill(text: str, room_id: str, event_id: str) -> str:
    return text.replace("{room}", path_segment(room_id)).replace("{event}", path_segment(event_id))


def _fill_body(body: Any, event_id: str) -> Any:
    if body is None:
        return None
    return {
        k: [event_id if v == "{event}" else v for v in vs] if isinstance(vs, list) else vs
        for k, vs in body.items()
    }


async def do_read(room: HostileRoom, read: Read, event_id: str, peer: Peer | None = None) -> Reply:
    peer = peer or room.peer
    query = read.query.replace("{event}", path_segment(event_id))
    return await room.request(
        read.method,
        _fill(read.path, room.room_id, event_id),
        _fill_body(read.body, event_id),
        query=query,
        origin=peer.name,
        key=peer.key,
    )


OUTSIDER_KINDS = ["never joined", "left", "banned", "invited only"]


@pytest.mark.parametrize("read", READS, ids=[r.name for r in READS])
@pytest.mark.parametrize("kind", OUTSIDER_KINDS)
async def test_outsiders_read_nothing(reads: ReadsRoom, kind: str, read: Read) -> None:
    reply = await do_read(reads.room, read, reads.event_id, reads.outsiders[kind])
    record(CATEGORY, classify_status(reply.status))
    assert reply.status == 403 and reply.errcode == "M_FORBIDDEN", reply
    assert "error" in reply.body
    await reads.room.assert_works()


@pytest.mark.parametrize("read", READS, ids=[r.name for r in READS])
async def test_the_joined_server_reads(reads: ReadsRoom, read: Read) -> None:
    reply = await do_read(reads.room, read, reads.event_id)
    record(CATEGORY, classify_status(reply.status))
    assert reply.status == 200, reply
    await reads.room.assert_works()


async def test_state_answer_of_the_joined_server_holds_the_room_state(reads: ReadsRoom) -> None:
    room = reads.room
    reply = await do_read(room, READS[1], reads.event_id)
    assert reply.status == 200
    state = await room.hs.storage.state.get_state_ids_before(reads.event_id)
    assert sorted(reply.body["pdu_ids"]) == sorted(set(state.values()))


@dataclass(frozen=True)
class Malformed:
    name: str
    method: str
    path: str
    query: str = ""
    body: Any = None
    status: int = 400
    errcode: str = "M_INVALID_PARAM"


MALFORMED_READS = [
    Malformed(
        "state_no_event_id", "GET", "/_matrix/federation/v1/state/{room}", "", None, 400, "M_MISSING_PARAM"
    ),
    Malformed(
        "state_ids_no_event_id",
        "GET",
        "/_matrix/federation/v1/state_ids/{room}",
        "",
        None,
        400,
        "M_MISSING_PARAM",
    ),
    Malformed(
        "state_ids_unknown_event",
        "GET",
        "/_matrix/federation/v1/state_ids/{room}",
        "event_id=%24nope",
        None,
        404,
        "M_NOT_FOUND",
    ),
    Malformed(
        "state_unknown_event",
        "GET",
        "/_matrix/federation/v1/state/{room}",
        "event_id=%24nope",
        None,
        404,
        "M_NOT_FOUND",
    ),
    Malformed(
        "state_ids_unknown_room",
        "GET",
        "/_matrix/federation/v1/state_ids/%21nope%3Aexample.org",
        "event_id={event}",
        None,
        404,
        "M_NOT_FOUND",
    ),
    Malformed(
        "state_ids_garbage_room",
        "GET",
        "/_matrix/federation/v1/state_ids/not-a-room",
        "event_id={event}",
        None,
        404,
        "M_NOT_FOUND",
    ),
    Malformed("event_unknown", "GET", "/_matrix/federation/v1/event/%24nope", "", None, 404, "M_NOT_FOUND"),
    Malformed("event_garbage_id", "GET", "/_matrix/federation/v1/event/%00%FF", "", None, 404, "M_NOT_FOUND"),
    Malformed(
        "event_auth_unknown_event",
        "GET",
        "/_matrix/federation/v1/event_auth/{room}/%24nope",
        "",
        None,
        404,
        "M_NOT_FOUND",
    ),
    Malformed(
        "backfill_no_v",
        "GET",
        "/_matrix/federation/v1/backfill/{room}",
        "limit=10",
        None,
        400,
        "M_MISSING_PARAM",
    ),
    Malformed(
        "backfill_limit_not_int",
        "GET",
        "/_matrix/federation/v1/backfill/{room}",
        "v={event}&limit=ten",
        None,
        400,
        "M_INVALID_PARAM",
    ),
    Malformed(
        "backfill_limit_huge_int",
        "GET",
        "/_matrix/federation/v1/backfill/{room}",
        "v={event}&limit=" + "9" * 400,
        None,
        200,
        "",
    ),
    Malformed(
        "backfill_limit_negative",
        "GET",
        "/_matrix/federation/v1/backfill/{room}",
        "v={event}&limit=-5",
        None,
        200,
        "",
    ),
    Malformed(
        "backfill_unknown_room",
        "GET",
        "/_matrix/federation/v1/backfill/%21nope%3Ax",
        "v={event}",
        None,
        404,
        "M_NOT_FOUND",
    ),
    Malformed(
        "backfill_many_v",
        "GET",
        "/_matrix/federation/v1/backfill/{room}",
        "&".join(f"v=%24x{i}" for i in range(300)),
        None,
        200,
        "",
    ),
    Malformed(
        "gme_body_not_object",
        "POST",
        "/_matrix/federation/v1/get_missing_events/{room}",
        "",
        [1, 2],
        400,
        "M_BAD_JSON",
    ),
    Malformed(
        "gme_latest_not_list",
        "POST",
        "/_matrix/federation/v1/get_missing_events/{room}",
        "",
        {"latest_events": "x"},
        400,
        "M_BAD_JSON",
    ),
    Malformed(
        "gme_latest_ints",
        "POST",
        "/_matrix/federation/v1/get_missing_events/{room}",
        "",
        {"latest_events": [1]},
        400,
        "M_BAD_JSON",
    ),
    Malformed(
        "gme_limit_string",
        "POST",
        "/_matrix/federation/v1/get_missing_events/{room}",
        "",
        {"latest_events": [], "limit": "5"},
        400,
        "M_BAD_JSON",
    ),
    Malformed(
        "gme_limit_float",
        "POST",
        "/_matrix/federation/v1/get_missing_events/{room}",
        "",
        {"latest_events": [], "limit": 5.5},
        400,
        "M_BAD_JSON",
    ),
    Malformed(
        "gme_limit_huge",
        "POST",
        "/_matrix/federation/v1/get_missing_events/{room}",
        "",
        {"latest_events": ["{event}"], "limit": 2**62},
        200,
        "",
    ),
    Malformed(
        "gme_min_depth_negative",
        "POST",
        "/_matrix/federation/v1/get_missing_events/{room}",
        "",
        {"latest_events": ["{event}"], "min_depth": -(2**62)},
        200,
        "",
    ),
    Malformed(
        "gme_many_latest",
        "POST",
        "/_matrix/federation/v1/get_missing_events/{room}",
        "",
        {"latest_events": [f"$x{i}" for i in range(2000)]},
        200,
        "",
    ),
    Malformed(
        "gme_unknown_room",
        "POST",
        "/_matrix/federation/v1/get_missing_events/%21nope%3Ax",
        "",
        {"latest_events": []},
        404,
        "M_NOT_FOUND",
    ),
    Malformed(
        "ts_bad_dir",
        "GET",
        "/_matrix/federation/v1/timestamp_to_event/{room}",
        "ts=0&dir=x",
        None,
        400,
        "M_INVALID_PARAM",
    ),
    Malformed(
        "ts_missing",
        "GET",
        "/_matrix/federation/v1/timestamp_to_event/{room}",
        "dir=f",
        None,
        400,
        "M_MISSING_PARAM",
    ),
    Malformed(
        "ts_not_int",
        "GET",
        "/_matrix/federation/v1/timestamp_to_event/{room}",
        "ts=soon&dir=f",
        None,
        400,
        "M_INVALID_PARAM",
    ),
    Malformed(
        "unknown_endpoint",
        "GET",
        "/_matrix/federation/v1/no_such_thing/{room}",
        "",
        None,
        404,
        "M_UNRECOGNIZED",
    ),
    Malformed(
        "profile_no_user_id", "GET", "/_matrix/federation/v1/query/profile", "", None, 400, "M_MISSING_PARAM"
    ),
    Malformed(
        "profile_garbage_user_id", "GET", "/_matrix/federation/v1/query/profile", "user_id=bob", None, 400, ""
    ),
    Malformed(
        "profile_of_another_servers_user",
        "GET",
        "/_matrix/federation/v1/query/profile",
        "user_id=%40x%3Aexample.org",
        None,
        404,
        "M_NOT_FOUND",
    ),
    Malformed(
        "profile_unknown_field",
        "GET",
        "/_matrix/federation/v1/query/profile",
        "user_id=%40x%3Aexample.org&field=password",
        None,
        400,
        "M_INVALID_PARAM",
    ),
    Malformed(
        "directory_garbage_alias",
        "GET",
        "/_matrix/federation/v1/query/directory",
        "room_alias=nope",
        None,
        400,
        "M_INVALID_PARAM",
    ),
    Malformed(
        "directory_unknown_alias",
        "GET",
        "/_matrix/federation/v1/query/directory",
        "room_alias=%23nope%3Aexample.org",
        None,
        404,
        "M_NOT_FOUND",
    ),
    Malformed(
        "event_auth_of_an_event_in_another_room",
        "GET",
        "/_matrix/federation/v1/event_auth/%21nope%3Aexample.org/{event}",
        "",
        None,
        404,
        "M_NOT_FOUND",
    ),
    Malformed(
        "backfill_from_events_of_nowhere",
        "GET",
        "/_matrix/federation/v1/backfill/{room}",
        "v=%24nope&v=&v=%00",
        None,
        200,
        "",
    ),
]


@pytest.mark.parametrize("case", MALFORMED_READS, ids=[c.name for c in MALFORMED_READS])
async def test_malformed_reads_are_4xx(reads: ReadsRoom, case: Malformed) -> None:
    room = reads.room
    body = _fill_body(case.body, reads.event_id) if isinstance(case.body, dict) else case.body
    reply = await room.request(
        case.method,
        _fill(case.path, room.room_id, reads.event_id),
        body,
        query=case.query.replace("{event}", path_segment(reads.event_id)),
    )
    record(MALFORMED, classify_status(reply.status))
    assert reply.status == case.status, reply
    if case.errcode:
        assert reply.errcode == case.errcode, reply
    elif case.name.startswith("backfill"):
        assert len(reply.body["pdus"]) <= 100
    elif case.name.startswith("gme"):
        assert len(reply.body["events"]) <= 20
    await room.assert_works()


async def test_a_rejected_event_is_never_served(reads: ReadsRoom) -> None:
    room = reads.room
    # bob has power 0; a topic needs 50 in a public_chat room: the event is rejected, held, not served.
    topic = await room.build("m.room.topic", {"topic": "hijacked"}, state_key="")
    assert (await room.send_txn([topic])).status == 200
    held, rejected = await room.stored(topic.event_id)
    assert held and rejected
    reply = await room.request("GET", f"/_matrix/federation/v1/event/{path_segment(topic.event_id)}")
    record(MALFORMED, classify_status(reply.status))
    assert reply.status == 404, reply
    # Nor is the state at it, its auth chain, or anything from it.
    for read in (READS[0], READS[1], READS[3]):
        reply = await do_read(room, read, topic.event_id)
        record(MALFORMED, classify_status(reply.status))
        assert reply.status == 404, (read.name, reply)
    for read in (READS[4], READS[5]):
        reply = await do_read(room, read, topic.event_id)
        record(MALFORMED, classify_status(reply.status))
        assert reply.status == 200, (read.name, reply)
        served = reply.body.get("pdus", reply.body.get("events"))
        assert all(compute_event_id(p, room.rv) != topic.event_id for p in served), read.name
    await room.assert_works()


def _contents(pdus: list[dict[str, Any]], event_id: str) -> dict[str, Any] | None:
    return next((p["content"] for p in pdus if p.get("event_id", "") == event_id), None)


async def test_history_visibility_as_the_asking_server_sees_it(
    reads: ReadsRoom, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """'joined' history: a server that joins later gets the earlier messages redacted from /event,
    /backfill and /get_missing_events, and still reads the state at them (it needs it to authorise);
    the server that was there all along gets them whole. Then the room works for everyone."""
    room = reads.room
    status, body = await room.alice.call(
        "PUT",
        f"/_matrix/client/v3/rooms/{room.room_id}/state/m.room.history_visibility/",
        {"history_visibility": "joined"},
    )
    assert status == 200, body
    status, body = await room.alice.call(
        "PUT",
        f"/_matrix/client/v3/rooms/{room.room_id}/send/m.room.message/secret1",
        {"msgtype": "m.text", "body": "before the late server"},
    )
    assert status == 200, body
    secret = body["event_id"]
    late = await room.add_peer(tmp_path_factory.mktemp("late"))
    await join_through_make_join(room, late.user("lou"), late)
    await room.snapshot()
    tip = sorted(await room.hs.storage.events.get_forward_extremities(room.room_id))[0]

    def outcome(reply: Reply) -> None:
        record(VISIBILITY, classify_status(reply.status))
        assert reply.status == 200, reply

    # /event: redacted for the late server, whole for bob's.
    got = await do_read(room, READS[2], secret, late)
    outcome(got)
    assert got.body["pdus"][0]["content"] == {}
    got = await do_read(room, READS[2], secret, room.peer)
    outcome(got)
    assert got.body["pdus"][0]["content"]["body"] == "before the late server"
    # /backfill and /get_missing_events: the same, and the DAG they answer stays connected.
    for peer, whole in ((late, False), (room.peer, True)):
        back = await do_read(room, READS[4], tip, peer)
        outcome(back)
        by_id = {compute_event_id(p, room.rv): p for p in back.body["pdus"]}
        assert secret in by_id, "backfill must walk past the hidden message"
        assert (by_id[secret]["content"].get("body") == "before the late server") is whole
        missing = await room.request(
            "POST",
            f"/_matrix/federation/v1/get_missing_events/{path_segment(room.room_id)}",
            {"earliest_events": [], "latest_events": [tip], "limit": 20},
            origin=peer.name,
            key=peer.key,
        )
        outcome(missing)
        found = {compute_event_id(p, room.rv): p for p in missing.body["events"]}
        if secret in found:
            assert (found[secret]["content"].get("body") == "before the late server") is whole
    # The state at the hidden message is served to the late server (joined now): it needs it.
    state = await do_read(room, READS[1], secret, late)
    outcome(state)
    # The late server's own join and the history_visibility event are visible to it.
    await room.assert_works()


async def test_a_knocking_server_reads_nothing(
    reads: ReadsRoom, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A server whose only user knocks on a room (join rule 'knock') reads none of it."""
    room = reads.room
    status, body = await room.alice.call(
        "POST",
        "/_matrix/client/v3/createRoom",
        {
            "preset": "private_chat",
            "initial_state": [
                {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}
            ],
        },
    )
    assert status == 200, body
    knock_room = body["room_id"]
    knocker = await room.add_peer(tmp_path_factory.mktemp("knocker"))
    user = knocker.user("kim")
    ids = await room.hs.storage.state.get_current_state_ids(knock_room)
    tips = await room.hs.storage.events.get_events(
        await room.hs.storage.events.get_forward_extremities(knock_room)
    )
    auth = [ids[("m.room.join_rules", "")], ids[("m.room.power_levels", "")]]
    if not room.rv.room_id_from_create_event:
        auth.append(ids[("m.room.create", "")])
    knock = await room.build(
        "m.room.member",
        {"membership": "knock"},
        sender=user,
        state_key=user,
        prev=list(tips.values()),
        auth=auth,
        room_id=knock_room,
        key=knocker.key,
        server_name=knocker.name,
    )
    sent = await room.send_txn([knock], origin=knocker.name, key=knocker.key)
    assert sent.status == 200 and sent.body["pdus"] == {knock.event_id: {}}, sent
    assert await room.hs.storage.state.get_membership(knock_room, user) == ("knock", knock.event_id)
    for read in READS:
        query = read.query.replace("{event}", path_segment(knock.event_id))
        reply = await room.request(
            read.method,
            _fill(read.path, knock_room, knock.event_id),
            _fill_body(read.body, knock.event_id),
            query=query,
            origin=knocker.name,
            key=knocker.key,
        )
        record(CATEGORY, classify_status(reply.status))
        assert reply.status == 403 and reply.errcode == "M_FORBIDDEN", (read.name, reply)
    await room.assert_works()


async def test_cross_room_reads_do_not_leak(reads: ReadsRoom) -> None:
    """The joined server asks, through the room it is in, for an event of a room it is not in: /event says
    403, /state_ids and /event_auth 404, /backfill and /get_missing_events leave it out."""
    room = reads.room
    status, body = await room.alice.call("POST", "/_matrix/client/v3/createRoom", {"preset": "private_chat"})
    assert status == 200, body
    status, sent = await room.alice.call(
        "PUT",
        f"/_matrix/client/v3/rooms/{body['room_id']}/send/m.room.message/private1",
        {"msgtype": "m.text", "body": "private words"},
    )
    assert status == 200, sent
    private = sent["event_id"]
    expected = {"event": 403, "state": 404, "state_ids": 404, "event_auth": 404}
    for read in READS:
        if read.name in ("timestamp_to_event", "extremities"):
            continue
        reply = await do_read(room, read, private)
        record(CATEGORY, classify_status(reply.status))
        if read.name in expected:
            assert reply.status == expected[read.name], (read.name, reply)
        else:
            assert reply.status == 200, (read.name, reply)
            served = reply.body.get("pdus", reply.body.get("events"))
            assert served == [], (read.name, reply)
        assert "private words" not in str(reply.body)
    await room.assert_works()
