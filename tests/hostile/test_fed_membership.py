"""make_join / send_join / make_leave / send_leave / invite forgeries (S2S "Joining rooms", "Leaving
rooms", "Inviting to a room"): each is refused with the status and errcode the case states, and the room
its members use still works afterwards, with its state unchanged.
"""

from __future__ import annotations

import copy
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from ranvier.protocol.events import Pdu, build_event
from ranvier.protocol.hashes import compute_event_id
from ranvier.protocol.signing import SigningKey

from .fed_harness import (
    HostileRoom,
    Peer,
    Reply,
    classify_status,
    lenient,
    path_segment,
    record,
    start_hostile_room,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

JOIN = "make_join/send_join forgeries"
LEAVE = "make_leave/send_leave forgeries"
INVITE = "invite forgeries"
ALL_VERSIONS = "ver=" + "&ver=".join(str(v) for v in range(1, 13))


@dataclass
class MRoom:
    room: HostileRoom
    other: Peer
    private_room: str  # invite-only, alice's
    banned: str  # a user of the peer, banned from the room
    # One template per make_join, so that a case can build a join from it.
    templates: dict[str, dict[str, Any]] = field(default_factory=dict)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mr(
    tmp_path_factory: pytest.TempPathFactory, fed_session: aiohttp.ClientSession
) -> AsyncIterator[MRoom]:
    tmp = tmp_path_factory.mktemp("membership")
    room = await start_hostile_room(tmp, fed_session)
    try:
        other = await room.add_peer(tmp / "other")
        status, body = await room.alice.call(
            "POST", "/_matrix/client/v3/createRoom", {"preset": "private_chat"}
        )
        assert status == 200, body
        banned = room.peer.user("banned")
        status, _ = await room.alice.call(
            "POST", f"/_matrix/client/v3/rooms/{room.room_id}/ban", {"user_id": banned, "reason": "test"}
        )
        assert status == 200
        await room.snapshot()
        yield MRoom(room, other, body["room_id"], banned)
    finally:
        await room.close()


# -- helpers -----------------------------------------------------------------------------------------


async def make_join(mr: MRoom, user_id: str, room_id: str | None = None, query: str = ALL_VERSIONS) -> Reply:
    room_q = path_segment(room_id or mr.room.room_id)
    return await mr.room.request(
        "GET", f"/_matrix/federation/v1/make_join/{room_q}/{path_segment(user_id)}", query=query
    )


async def join_event(
    mr: MRoom,
    user_id: str,
    *,
    membership: str = "join",
    state_key: str | None = None,
    key: SigningKey | None = None,
    server_name: str | None = None,
    room_id: str | None = None,
    content: dict[str, Any] | None = None,
    event_type: str = "m.room.member",
) -> Pdu:
    """A membership event built from a real make_join template of ``user_id``'s (another user of the peer
    when the template is refused), then changed as the case wants, and signed."""
    made = await make_join(mr, mr.room.peer.user("templ"))
    assert made.status == 200, made
    template = made.body["event"]
    return build_event(
        room_version=lenient(mr.room.rv),
        room_id=room_id or mr.room.room_id,
        sender=user_id,
        event_type=event_type,
        content=content if content is not None else {"membership": membership},
        prev_events=template["prev_events"],
        auth_events=template["auth_events"],
        depth=template["depth"],
        origin_server_ts=int(time.time() * 1000),
        server_name=server_name or mr.room.peer.name,
        signing_key=key or mr.room.peer.key,
        state_key=state_key if state_key is not None else user_id,
    )


async def send_membership(
    mr: MRoom,
    kind: str,
    event: Pdu | dict[str, Any] | Any,
    *,
    room_id: str | None = None,
    event_id: str | None = None,
    raw: bytes | None = None,
) -> Reply:
    body = event.json if isinstance(event, Pdu) else event
    eid = event_id or (event.event_id if isinstance(event, Pdu) else "$whatever")
    return await mr.room.request(
        "PUT",
        f"/_matrix/federation/v2/send_{kind}/{path_segment(room_id or mr.room.room_id)}/{path_segment(eid)}",
        body,
        raw=raw,
    )


@dataclass(frozen=True)
class MCase:
    name: str
    category: str
    run: Callable[[MRoom], Awaitable[Reply]]
    status: int
    errcode: str | None = None


# -- make_join -----------------------------------------------------------------------------------------


async def _mj_other_server_user(mr: MRoom) -> Reply:
    return await make_join(mr, mr.other.user("olive"))


async def _mj_our_user(mr: MRoom) -> Reply:
    return await make_join(mr, "@mallory:" + mr.room.hs.server_name)


async def _mj_unknown_room(mr: MRoom) -> Reply:
    return await make_join(mr, mr.room.peer.user("x"), room_id="!unknown:example.org")


async def _mj_version_unsupported(mr: MRoom) -> Reply:
    return await make_join(mr, mr.room.peer.user("x"), query="ver=1&ver=2")


async def _mj_no_ver(mr: MRoom) -> Reply:
    return await make_join(mr, mr.room.peer.user("x"), query="")


async def _mj_garbage_user(mr: MRoom) -> Reply:
    return await make_join(mr, "not-a-user-id")


async def _mj_private_room(mr: MRoom) -> Reply:
    return await make_join(mr, mr.room.peer.user("x"), room_id=mr.private_room)


async def _mj_banned(mr: MRoom) -> Reply:
    return await make_join(mr, mr.banned)


async def _mj_valid(mr: MRoom) -> Reply:
    return await make_join(mr, mr.room.peer.user("x"))


# -- send_join -----------------------------------------------------------------------------------------


async def _sj_for_another_user(mr: MRoom) -> Reply:
    return await send_membership(
        mr, "join", await join_event(mr, mr.room.bob, state_key=mr.room.peer.user("z"))
    )


async def _sj_for_our_user(mr: MRoom) -> Reply:
    return await send_membership(
        mr, "join", await join_event(mr, mr.room.bob, state_key=f"@mallory:{mr.room.hs.server_name}")
    )


async def _sj_sender_other_server(mr: MRoom) -> Reply:
    return await send_membership(mr, "join", await join_event(mr, mr.other.user("olive")))


async def _sj_other_server_signed_by_it(mr: MRoom) -> Reply:
    # A join of the other server's user, signed by it, but sent by the peer.
    event = await join_event(mr, mr.other.user("olive"), key=mr.other.key, server_name=mr.other.name)
    return await send_membership(mr, "join", event)


async def _sj_other_room_in_event(mr: MRoom) -> Reply:
    event = await join_event(mr, mr.room.peer.user("r"), room_id=mr.private_room)
    return await send_membership(mr, "join", event)


async def _sj_other_room_in_path(mr: MRoom) -> Reply:
    event = await join_event(mr, mr.room.peer.user("r"))
    return await send_membership(mr, "join", event, room_id=mr.private_room)


async def _sj_leave(mr: MRoom) -> Reply:
    return await send_membership(mr, "join", await join_event(mr, mr.room.peer.user("l"), membership="leave"))


async def _sj_invite(mr: MRoom) -> Reply:
    return await send_membership(
        mr, "join", await join_event(mr, mr.room.peer.user("i"), membership="invite")
    )


async def _sj_ban(mr: MRoom) -> Reply:
    return await send_membership(mr, "join", await join_event(mr, mr.room.peer.user("b"), membership="ban"))


async def _sj_knock(mr: MRoom) -> Reply:
    return await send_membership(mr, "join", await join_event(mr, mr.room.peer.user("k"), membership="knock"))


async def _sj_message_type(mr: MRoom) -> Reply:
    event = await join_event(
        mr, mr.room.peer.user("m"), event_type="m.room.message", content={"membership": "join", "body": "x"}
    )
    return await send_membership(mr, "join", event)


async def _sj_path_id_mismatch(mr: MRoom) -> Reply:
    return await send_membership(mr, "join", await join_event(mr, mr.room.peer.user("p")), event_id="$other")


async def _sj_no_signatures(mr: MRoom) -> Reply:
    event = await join_event(mr, mr.room.peer.user("n"))
    body = {k: v for k, v in event.json.items() if k != "signatures"}
    return await send_membership(mr, "join", body, event_id=event.event_id)


async def _sj_bad_signature(mr: MRoom) -> Reply:
    forger = SigningKey.generate(mr.room.peer.key.key_id.split(":", 1)[1])
    return await send_membership(mr, "join", await join_event(mr, mr.room.peer.user("s"), key=forger))


async def _sj_content_tampered(mr: MRoom) -> Reply:
    event = await join_event(mr, mr.room.peer.user("t"))
    body = copy.deepcopy(dict(event.json))
    body["content"]["displayname"] = "added after signing"
    return await send_membership(mr, "join", body, event_id=event.event_id)


async def _sj_unknown_auth_events(mr: MRoom) -> Reply:
    made = await make_join(mr, mr.room.peer.user("u"))
    template = made.body["event"]
    event = build_event(
        room_version=mr.room.rv,
        room_id=mr.room.room_id,
        sender=mr.room.peer.user("u"),
        event_type="m.room.member",
        content={"membership": "join"},
        prev_events=template["prev_events"],
        auth_events=[*template["auth_events"][:1], "$" + "U" * 43],
        depth=template["depth"],
        origin_server_ts=int(time.time() * 1000),
        server_name=mr.room.peer.name,
        signing_key=mr.room.peer.key,
        state_key=mr.room.peer.user("u"),
    )
    return await send_membership(mr, "join", event)


async def _sj_incomplete_auth_events(mr: MRoom) -> Reply:
    made = await make_join(mr, mr.room.peer.user("v"))
    template = made.body["event"]
    state = await mr.room.state_events()
    keep = [e for e in template["auth_events"] if e != state[("m.room.join_rules", "")].event_id]
    event = build_event(
        room_version=mr.room.rv,
        room_id=mr.room.room_id,
        sender=mr.room.peer.user("v"),
        event_type="m.room.member",
        content={"membership": "join"},
        prev_events=template["prev_events"],
        auth_events=keep,
        depth=template["depth"],
        origin_server_ts=int(time.time() * 1000),
        server_name=mr.room.peer.name,
        signing_key=mr.room.peer.key,
        state_key=mr.room.peer.user("v"),
    )
    return await send_membership(mr, "join", event)


async def _sj_unknown_prev_events(mr: MRoom) -> Reply:
    made = await make_join(mr, mr.room.peer.user("w"))
    template = made.body["event"]
    event = build_event(
        room_version=mr.room.rv,
        room_id=mr.room.room_id,
        sender=mr.room.peer.user("w"),
        event_type="m.room.member",
        content={"membership": "join"},
        prev_events=["$" + "P" * 43],
        auth_events=template["auth_events"],
        depth=template["depth"],
        origin_server_ts=int(time.time() * 1000),
        server_name=mr.room.peer.name,
        signing_key=mr.room.peer.key,
        state_key=mr.room.peer.user("w"),
    )
    return await send_membership(mr, "join", event)


async def _sj_private_room(mr: MRoom) -> Reply:
    # A join built against the invite-only room's own state, without an invite.
    private = mr.private_room
    ids = await mr.room.hs.storage.state.get_current_state_ids(private)
    tips = await mr.room.hs.storage.events.get_forward_extremities(private)
    user = mr.room.peer.user("q")
    auth = [ids[("m.room.join_rules", "")], ids[("m.room.power_levels", "")]]
    if not mr.room.rv.room_id_from_create_event:
        auth.append(ids[("m.room.create", "")])
    event = build_event(
        room_version=mr.room.rv,
        room_id=private,
        sender=user,
        event_type="m.room.member",
        content={"membership": "join"},
        prev_events=tips,
        auth_events=sorted(auth),
        depth=10,
        origin_server_ts=int(time.time() * 1000),
        server_name=mr.room.peer.name,
        signing_key=mr.room.peer.key,
        state_key=user,
    )
    return await send_membership(mr, "join", event, room_id=private)


async def _sj_banned(mr: MRoom) -> Reply:
    return await send_membership(mr, "join", await join_event(mr, mr.banned))


async def _sj_body_list(mr: MRoom) -> Reply:
    return await send_membership(mr, "join", [1, 2])


async def _sj_body_not_json(mr: MRoom) -> Reply:
    return await send_membership(mr, "join", None, raw=b"{not json")


async def _sj_float_v12(mr: MRoom) -> Reply:
    event = await join_event(mr, mr.room.peer.user("f"), content={"membership": "join", "x": 0.5})
    return await send_membership(mr, "join", event)


async def _sj_oversize(mr: MRoom) -> Reply:
    event = await join_event(mr, mr.room.peer.user("o"))
    body = mr.room.resign({**event.json, "content": {"membership": "join", "displayname": "d" * 70000}})
    return await send_membership(mr, "join", body, event_id=compute_event_id(body, lenient(mr.room.rv)))


async def _sj_unknown_room(mr: MRoom) -> Reply:
    event = await join_event(mr, mr.room.peer.user("y"))
    return await send_membership(mr, "join", event, room_id="!unknown:example.org")


async def _sj_repeat_of_bobs_join(mr: MRoom) -> Reply:
    state = await mr.room.state_events()
    join = state[("m.room.member", mr.room.bob)]
    return await send_membership(mr, "join", join)


# -- make_leave / send_leave ----------------------------------------------------------------------------


async def _ml_other_server_user(mr: MRoom) -> Reply:
    return await mr.room.request(
        "GET",
        f"/_matrix/federation/v1/make_leave/{path_segment(mr.room.room_id)}/{path_segment(mr.room.alice.user_id)}",
    )


async def _ml_non_member(mr: MRoom) -> Reply:
    user = mr.room.peer.user("never")
    return await mr.room.request(
        "GET", f"/_matrix/federation/v1/make_leave/{path_segment(mr.room.room_id)}/{path_segment(user)}"
    )


async def _sl_for_another_user(mr: MRoom) -> Reply:
    event = await join_event(mr, mr.room.bob, membership="leave", state_key=mr.room.alice.user_id)
    return await send_membership(mr, "leave", event)


async def _sl_membership_join(mr: MRoom) -> Reply:
    return await send_membership(mr, "leave", await join_event(mr, mr.room.peer.user("j")))


async def _sl_sender_other_server(mr: MRoom) -> Reply:
    event = await join_event(mr, mr.other.user("olive"), membership="leave")
    return await send_membership(mr, "leave", event)


async def _sl_non_member(mr: MRoom) -> Reply:
    return await send_membership(
        mr, "leave", await join_event(mr, mr.room.peer.user("nm"), membership="leave")
    )


async def _sl_banned_unban_self(mr: MRoom) -> Reply:
    # A banned user's leave would lift their own ban.
    return await send_membership(mr, "leave", await join_event(mr, mr.banned, membership="leave"))


# -- invites -----------------------------------------------------------------------------------------


async def invite(
    mr: MRoom,
    *,
    sender: str | None = None,
    target: str | None = None,
    key: SigningKey | None = None,
    server_name: str | None = None,
    membership: str = "invite",
    event_type: str = "m.room.member",
    room_version: Any = None,
    room_id: str = "",
    strip_signatures: bool = False,
    tamper: bool = False,
    path_event_id: str | None = None,
    body_override: Any = None,
    invite_room_state: Any = (),
) -> Reply:
    rv = mr.room.rv
    # The peer's own room: a create event of its user's, whose id is the room id (v12).
    create = build_event(
        room_version=rv,
        room_id=None if rv.room_id_from_create_event else f"!{secrets.token_hex(8)}:{mr.room.peer.name}",
        sender=mr.room.bob,
        event_type="m.room.create",
        content={"room_version": rv.identifier, "nonce": secrets.token_hex(8)},
        prev_events=[],
        auth_events=[],
        depth=1,
        origin_server_ts=int(time.time() * 1000),
        server_name=mr.room.peer.name,
        signing_key=mr.room.peer.key,
        state_key="",
    )
    room_id = room_id or create.room_id
    if invite_room_state == ():
        invite_room_state = [create.json]
    event = build_event(
        room_version=rv,
        room_id=room_id,
        sender=sender or mr.room.bob,
        event_type=event_type,
        content={"membership": membership},
        prev_events=["$" + "R" * 43],
        auth_events=["$" + "S" * 43],
        depth=5,
        origin_server_ts=int(time.time() * 1000),
        server_name=server_name or mr.room.peer.name,
        signing_key=key or mr.room.peer.key,
        state_key=target or mr.room.carol.user_id,
    )
    body_event = dict(event.json)
    if strip_signatures:
        body_event.pop("signatures")
    if tamper:
        body_event["content"] = {**body_event["content"], "reason": "changed after signing"}
    body: Any = {
        "room_version": rv.identifier if room_version is None else room_version,
        "event": body_event,
        "invite_room_state": invite_room_state,
    }
    if body_override is not None:
        body = body_override
    event_q = path_segment(path_event_id or event.event_id)
    return await mr.room.request(
        "PUT", f"/_matrix/federation/v2/invite/{path_segment(room_id)}/{event_q}", body
    )


async def _inv_signed_by_other_server(mr: MRoom) -> Reply:
    return await invite(mr, key=mr.other.key, server_name=mr.other.name)


async def _inv_no_signatures(mr: MRoom) -> Reply:
    return await invite(mr, strip_signatures=True)


async def _inv_tampered(mr: MRoom) -> Reply:
    return await invite(mr, tamper=True)


async def _inv_not_our_user(mr: MRoom) -> Reply:
    return await invite(mr, target=mr.other.user("someone"))


async def _inv_sender_other_server(mr: MRoom) -> Reply:
    return await invite(mr, sender=mr.other.user("olive"))


async def _inv_unknown_local_user(mr: MRoom) -> Reply:
    return await invite(mr, target=f"@nobody:{mr.room.hs.server_name}")


async def _inv_message_type(mr: MRoom) -> Reply:
    return await invite(mr, event_type="m.room.message")


async def _inv_membership_join(mr: MRoom) -> Reply:
    return await invite(mr, membership="join")


async def _inv_version_unknown(mr: MRoom) -> Reply:
    return await invite(mr, room_version="99")


async def _inv_version_int(mr: MRoom) -> Reply:
    return await invite(mr, room_version=12)


async def _inv_path_mismatch(mr: MRoom) -> Reply:
    return await invite(mr, path_event_id="$not-this-one")


async def _inv_body_without_event(mr: MRoom) -> Reply:
    return await invite(mr, body_override={"room_version": mr.room.rv.identifier})


async def _inv_body_list(mr: MRoom) -> Reply:
    return await invite(mr, body_override=[1])


async def _inv_into_our_room(mr: MRoom) -> Reply:
    """An invite for carol (already joined) into the very room we share, claiming another version: the
    room's version and carol's membership must not change."""
    reply = await invite(mr, room_id=mr.room.room_id, room_version="10")
    rv = await mr.room.hs.storage.rooms.get_room_version(mr.room.room_id)
    assert rv is not None and rv.identifier == mr.room.rv.identifier
    membership = await mr.room.hs.storage.state.get_membership(mr.room.room_id, mr.room.carol.user_id)
    assert membership is not None and membership[0] == "join"
    return reply


async def _inv_garbage_room_state(mr: MRoom) -> Reply:
    return await invite(mr, invite_room_state=[1, "x", {"type": 5}])


async def _inv_room_state_not_list(mr: MRoom) -> Reply:
    return await invite(mr, invite_room_state="x")


async def _inv_valid(mr: MRoom) -> Reply:
    reply = await invite(mr)
    assert reply.status == 200, reply
    signatures = reply.body["event"]["signatures"]
    assert mr.room.hs.server_name in signatures and mr.room.peer.name in signatures
    return reply


CASES = [
    MCase("make_join_for_other_servers_user", JOIN, _mj_other_server_user, 403, "M_FORBIDDEN"),
    MCase("make_join_for_our_user", JOIN, _mj_our_user, 403, "M_FORBIDDEN"),
    MCase("make_join_unknown_room", JOIN, _mj_unknown_room, 404, "M_NOT_FOUND"),
    MCase(
        "make_join_versions_unsupported", JOIN, _mj_version_unsupported, 400, "M_INCOMPATIBLE_ROOM_VERSION"
    ),
    MCase("make_join_no_ver_means_v1", JOIN, _mj_no_ver, 400, "M_INCOMPATIBLE_ROOM_VERSION"),
    MCase("make_join_garbage_user_id", JOIN, _mj_garbage_user, 400, "M_INVALID_PARAM"),
    MCase("make_join_invite_only_room", JOIN, _mj_private_room, 403, "M_FORBIDDEN"),
    MCase("make_join_banned_user", JOIN, _mj_banned, 403, "M_FORBIDDEN"),
    MCase("make_join_control", JOIN, _mj_valid, 200),
    MCase("send_join_for_another_user", JOIN, _sj_for_another_user, 400, "M_BAD_JSON"),
    MCase("send_join_for_our_user", JOIN, _sj_for_our_user, 400, "M_BAD_JSON"),
    MCase("send_join_sender_of_other_server", JOIN, _sj_sender_other_server, 403, "M_FORBIDDEN"),
    MCase("send_join_other_server_signed_relayed", JOIN, _sj_other_server_signed_by_it, 403, "M_FORBIDDEN"),
    MCase("send_join_event_of_another_room", JOIN, _sj_other_room_in_event, 400, "M_BAD_JSON"),
    MCase("send_join_path_of_another_room", JOIN, _sj_other_room_in_path, 400, "M_BAD_JSON"),
    MCase("send_join_with_leave", JOIN, _sj_leave, 400, "M_BAD_JSON"),
    MCase("send_join_with_invite", JOIN, _sj_invite, 400, "M_BAD_JSON"),
    MCase("send_join_with_ban", JOIN, _sj_ban, 400, "M_BAD_JSON"),
    MCase("send_join_with_knock", JOIN, _sj_knock, 400, "M_BAD_JSON"),
    MCase("send_join_message_type", JOIN, _sj_message_type, 400, "M_BAD_JSON"),
    MCase("send_join_path_event_id_mismatch", JOIN, _sj_path_id_mismatch, 400, "M_BAD_JSON"),
    MCase("send_join_no_signatures", JOIN, _sj_no_signatures, 400, "M_BAD_JSON"),
    MCase("send_join_forged_signature", JOIN, _sj_bad_signature, 403, "M_FORBIDDEN"),
    MCase("send_join_content_tampered", JOIN, _sj_content_tampered, 403, "M_FORBIDDEN"),
    MCase("send_join_unknown_auth_event", JOIN, _sj_unknown_auth_events, 403, "M_FORBIDDEN"),
    MCase("send_join_auth_events_without_join_rules", JOIN, _sj_incomplete_auth_events, 403, "M_FORBIDDEN"),
    MCase("send_join_unknown_prev_events", JOIN, _sj_unknown_prev_events, 400, "M_BAD_JSON"),
    MCase("send_join_invite_only_room", JOIN, _sj_private_room, 403, "M_FORBIDDEN"),
    MCase("send_join_banned_user", JOIN, _sj_banned, 403, "M_FORBIDDEN"),
    MCase("send_join_body_a_list", JOIN, _sj_body_list, 400, "M_BAD_JSON"),
    MCase("send_join_body_not_json", JOIN, _sj_body_not_json, 400, "M_NOT_JSON"),
    MCase("send_join_float_in_v12", JOIN, _sj_float_v12, 400, "M_BAD_JSON"),
    MCase("send_join_over_64k", JOIN, _sj_oversize, 400, None),
    MCase("send_join_unknown_room", JOIN, _sj_unknown_room, 404, "M_NOT_FOUND"),
    MCase("send_join_repeat_of_an_existing_join", JOIN, _sj_repeat_of_bobs_join, 200),
    MCase("make_leave_for_our_user", LEAVE, _ml_other_server_user, 403, "M_FORBIDDEN"),
    MCase("make_leave_for_non_member", LEAVE, _ml_non_member, 403, "M_FORBIDDEN"),
    MCase("send_leave_for_another_user", LEAVE, _sl_for_another_user, 400, "M_BAD_JSON"),
    MCase("send_leave_with_join", LEAVE, _sl_membership_join, 400, "M_BAD_JSON"),
    MCase("send_leave_sender_of_other_server", LEAVE, _sl_sender_other_server, 403, "M_FORBIDDEN"),
    MCase("send_leave_non_member", LEAVE, _sl_non_member, 403, "M_FORBIDDEN"),
    MCase("send_leave_banned_lifts_own_ban", LEAVE, _sl_banned_unban_self, 403, "M_FORBIDDEN"),
    MCase("invite_signed_by_another_server", INVITE, _inv_signed_by_other_server, 403, "M_FORBIDDEN"),
    MCase("invite_unsigned", INVITE, _inv_no_signatures, 400, "M_BAD_JSON"),
    MCase("invite_content_tampered", INVITE, _inv_tampered, 403, "M_FORBIDDEN"),
    MCase("invite_for_a_user_not_ours", INVITE, _inv_not_our_user, 403, "M_FORBIDDEN"),
    MCase("invite_sender_of_other_server", INVITE, _inv_sender_other_server, 403, "M_FORBIDDEN"),
    MCase("invite_unknown_local_user", INVITE, _inv_unknown_local_user, 404, "M_NOT_FOUND"),
    MCase("invite_message_type", INVITE, _inv_message_type, 400, "M_BAD_JSON"),
    MCase("invite_membership_join", INVITE, _inv_membership_join, 400, "M_BAD_JSON"),
    MCase("invite_room_version_unknown", INVITE, _inv_version_unknown, 400, "M_INCOMPATIBLE_ROOM_VERSION"),
    MCase("invite_room_version_int", INVITE, _inv_version_int, 400, "M_INCOMPATIBLE_ROOM_VERSION"),
    MCase("invite_path_event_id_mismatch", INVITE, _inv_path_mismatch, 400, "M_BAD_JSON"),
    MCase("invite_body_without_event", INVITE, _inv_body_without_event, 400, "M_BAD_JSON"),
    MCase("invite_body_a_list", INVITE, _inv_body_list, 400, "M_BAD_JSON"),
    MCase("invite_into_our_room_other_version", INVITE, _inv_into_our_room, 400, "M_BAD_JSON"),
    MCase("invite_garbage_room_state", INVITE, _inv_garbage_room_state, 400, "M_INVALID_PARAM"),
    MCase("invite_room_state_not_a_list", INVITE, _inv_room_state_not_list, 200),
    MCase("invite_control", INVITE, _inv_valid, 200),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_membership_forgery(mr: MRoom, case: MCase) -> None:
    reply = await case.run(mr)
    record(case.category, classify_status(reply.status))
    assert reply.status == case.status, reply
    if case.errcode is not None:
        assert reply.errcode == case.errcode, reply
    if reply.status >= 400:
        assert isinstance(reply.body, dict) and isinstance(reply.body.get("error"), str), reply
    await mr.room.assert_works()
