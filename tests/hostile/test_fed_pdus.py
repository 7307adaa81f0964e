"""Hostile PDUs in ``/send``: forged and missing signatures, bad hashes, auth failures, wrong origins,
oversize and malformed events, too many prev/auth events, duplicates, unknown rooms.

Each case is one hostile PDU sent in a transaction beside a valid message from the same peer. Whatever the
hostile one does, the transaction is answered 200, the valid message is accepted, and the hostile one ends
as the case says:

- ``dropped``: an ``error`` for it in ``pdus``, never stored (S2S "Checks performed on receipt of a PDU",
  steps 1-2: format and signatures);
- ``rejected``: stored as rejected, never served nor shown (steps 4-6: the authorization rules);
- ``soft_failed``: stored, not rejected, but not shown to clients (step 7);
- ``hidden``: stored, neither rejected nor soft-failed, and not shown (a redaction of an unknown event);
- ``redacted``: accepted in its redacted form (step 3: a content hash mismatch);
- ``accepted``: shown to the room's members as sent;
- ``not_applied``: accepted, but what it asks for does not happen (a redaction without power).

Then the room works for its members and its state is unchanged.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import pytest
import pytest_asyncio
from unpaddedbase64 import encode_base64

from ranvier.protocol.canonical_json import encode_canonical_json
from ranvier.protocol.hashes import compute_event_id
from ranvier.protocol.redaction import redact_event
from ranvier.protocol.signing import SigningKey

from .fed_harness import (
    HostileRoom,
    Outcome,
    Peer,
    lenient,
    path_segment,
    record,
    start_hostile_room,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

Fate = Literal["dropped", "rejected", "soft_failed", "hidden", "redacted", "accepted", "not_applied"]
REFUSED: set[str] = {"dropped", "rejected", "soft_failed", "hidden", "not_applied"}


@dataclass
class PdusRoom:
    room: HostileRoom
    other: Peer  # a second server, not in the room
    alice_message: str  # an event of alice's, for redactions


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pr(
    tmp_path_factory: pytest.TempPathFactory, fed_session: aiohttp.ClientSession
) -> AsyncIterator[PdusRoom]:
    tmp = tmp_path_factory.mktemp("pdus")
    room = await start_hostile_room(tmp, fed_session)
    try:
        other = await room.add_peer(tmp / "other")
        status, body = await room.alice.call(
            "PUT",
            f"/_matrix/client/v3/rooms/{room.room_id}/send/m.room.message/a1",
            {"msgtype": "m.text", "body": "alice's words"},
        )
        assert status == 200, body
        yield PdusRoom(room, other, body["event_id"])
    finally:
        await room.close()


# -- building hostile PDUs ---------------------------------------------------------------------------


def resign(
    pr: PdusRoom, d: dict[str, Any], key: SigningKey | None = None, server: str | None = None
) -> dict[str, Any]:
    return pr.room.resign(d, key, server)


async def base(pr: PdusRoom, body: str = "hostile") -> dict[str, Any]:
    return dict((await pr.room.message(body)).json)


async def mutated(
    pr: PdusRoom, change: Callable[[dict[str, Any]], None], *, sign: bool = True
) -> dict[str, Any]:
    d = copy.deepcopy(await base(pr))
    change(d)
    return resign(pr, d) if sign else d


async def state_event(
    pr: PdusRoom,
    event_type: str,
    content: dict[str, Any],
    state_key: str = "",
    sender: str | None = None,
    **kw: Any,
) -> dict[str, Any]:
    return dict((await pr.room.build(event_type, content, state_key=state_key, sender=sender, **kw)).json)


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(d: dict[str, Any]) -> None:
        d[key] = value

    return change


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    def change(d: dict[str, Any]) -> None:
        d.pop(key, None)

    return change


def _content(**extra: Any) -> Callable[[dict[str, Any]], None]:
    def change(d: dict[str, Any]) -> None:
        d["content"] = {**d["content"], **extra}

    return change


Make = Callable[[PdusRoom], Awaitable[Any]]


@dataclass(frozen=True)
class PduCase:
    name: str
    category: str
    make: Make
    fate: Fate | tuple[Fate, ...]  # several where the spec leaves the choice to the server


SIG = "forged/missing signatures"
HASH = "bad hashes"
AUTH = "auth failures"
ORIGIN = "wrong origin/sender"
SIZE = "oversize"
FORMAT = "malformed PDU"
REFS = "prev/auth events"
ROOM = "bad room / version"


async def _forged_sig(pr: PdusRoom) -> dict[str, Any]:
    d = await base(pr)
    key_id = pr.room.peer.key.key_id
    forger = SigningKey.generate(key_id.split(":", 1)[1])
    return resign(pr, d, key=forger)


async def _no_signatures(pr: PdusRoom) -> dict[str, Any]:
    d = await base(pr)
    d.pop("signatures")
    return d


async def _empty_signatures(pr: PdusRoom) -> dict[str, Any]:
    return {**(await base(pr)), "signatures": {}}


async def _signed_by_other_server(pr: PdusRoom) -> dict[str, Any]:
    return resign(pr, await base(pr), key=pr.other.key, server=pr.other.name)


async def _unknown_key_id(pr: PdusRoom) -> dict[str, Any]:
    return resign(pr, await base(pr), key=SigningKey.generate("nope"))


async def _sig_not_base64(pr: PdusRoom) -> dict[str, Any]:
    d = await base(pr)
    d["signatures"] = {pr.room.peer.name: {pr.room.peer.key.key_id: "!!!not base64!!!"}}
    return d


async def _sig_wrong_type(pr: PdusRoom) -> dict[str, Any]:
    d = await base(pr)
    d["signatures"] = {pr.room.peer.name: [pr.room.peer.key.key_id]}
    return d


async def _sig_list(pr: PdusRoom) -> dict[str, Any]:
    return {**(await base(pr)), "signatures": ["x"]}


async def _sig_truncated(pr: PdusRoom) -> dict[str, Any]:
    d = await base(pr)
    sigs = d["signatures"][pr.room.peer.name]
    key_id = next(iter(sigs))
    d["signatures"] = {pr.room.peer.name: {key_id: sigs[key_id][:20]}}
    return d


async def _sig_other_algorithm(pr: PdusRoom) -> dict[str, Any]:
    d = await base(pr)
    sig = next(iter(d["signatures"][pr.room.peer.name].values()))
    d["signatures"] = {pr.room.peer.name: {"curve25519:t1": sig}}
    return d


async def _content_tampered(pr: PdusRoom) -> dict[str, Any]:
    d = await base(pr, "original")
    d["content"] = {"msgtype": "m.text", "body": "tampered after signing"}
    return d


async def _hash_wrong(pr: PdusRoom) -> dict[str, Any]:
    d = await base(pr)
    d["hashes"] = {"sha256": encode_base64(b"\0" * 32)}
    d = {k: v for k, v in d.items() if k != "signatures"}
    return _sign_only(pr, d)


async def _hash_missing(pr: PdusRoom) -> dict[str, Any]:
    d = await base(pr)
    d.pop("hashes")
    return _sign_only(pr, {k: v for k, v in d.items() if k != "signatures"})


async def _hash_not_string(pr: PdusRoom) -> dict[str, Any]:
    d = await base(pr)
    d["hashes"] = {"sha256": 12}
    return _sign_only(pr, {k: v for k, v in d.items() if k != "signatures"})


def _sign_only(pr: PdusRoom, d: dict[str, Any]) -> dict[str, Any]:
    """Sign as the peer without recomputing the content hash."""
    redacted = redact_event(d, lenient(pr.room.rv))
    key = pr.room.peer.key
    d["signatures"] = {
        pr.room.peer.name: {key.key_id: key.sign_bytes(encode_canonical_json(redacted, strict=False))}
    }
    return d


# Auth failures: bob has power 0 in a public_chat room (state_default 50, ban/kick/redact 50).


async def _topic(pr: PdusRoom) -> dict[str, Any]:
    return await state_event(pr, "m.room.topic", {"topic": "hijacked"})


async def _name(pr: PdusRoom) -> dict[str, Any]:
    return await state_event(pr, "m.room.name", {"name": "hijacked"})


async def _power_levels(pr: PdusRoom) -> dict[str, Any]:
    current = (await pr.room.state_events())[("m.room.power_levels", "")].content
    users = {**current.get("users", {}), pr.room.bob: 100}
    return await state_event(pr, "m.room.power_levels", {**current, "users": users})


async def _join_rules(pr: PdusRoom) -> dict[str, Any]:
    return await state_event(pr, "m.room.join_rules", {"join_rule": "invite"})


async def _server_acl(pr: PdusRoom) -> dict[str, Any]:
    return await state_event(pr, "m.room.server_acl", {"allow": [pr.room.peer.name], "deny": []})


async def _history_visibility(pr: PdusRoom) -> dict[str, Any]:
    return await state_event(pr, "m.room.history_visibility", {"history_visibility": "world_readable"})


async def _ban_alice(pr: PdusRoom) -> dict[str, Any]:
    return await state_event(pr, "m.room.member", {"membership": "ban"}, state_key=pr.room.alice.user_id)


async def _kick_carol(pr: PdusRoom) -> dict[str, Any]:
    return await state_event(pr, "m.room.member", {"membership": "leave"}, state_key=pr.room.carol.user_id)


async def _join_as_alice(pr: PdusRoom) -> dict[str, Any]:
    # bob sets alice's membership to join again with another display name (only alice may).
    return await state_event(
        pr, "m.room.member", {"membership": "join", "displayname": "evil"}, state_key=pr.room.alice.user_id
    )


async def _join_for_other_user(pr: PdusRoom) -> dict[str, Any]:
    return await state_event(pr, "m.room.member", {"membership": "join"}, state_key=pr.room.peer.user("zed"))


async def _message_from_non_member(pr: PdusRoom) -> dict[str, Any]:
    return dict((await pr.room.message("I never joined", sender=pr.room.peer.user("mallory"))).json)


async def _second_create(pr: PdusRoom) -> dict[str, Any]:
    return await state_event(pr, "m.room.create", {"room_version": pr.room.rv.identifier})


async def _bad_membership(pr: PdusRoom) -> dict[str, Any]:
    return await state_event(pr, "m.room.member", {"membership": "superjoin"}, state_key=pr.room.bob)


async def _creator_power_claim(pr: PdusRoom) -> dict[str, Any]:
    current = (await pr.room.state_events())[("m.room.power_levels", "")].content
    return await state_event(pr, "m.room.power_levels", {**current, "users_default": 100})


async def _tombstone(pr: PdusRoom) -> dict[str, Any]:
    return await state_event(pr, "m.room.tombstone", {"body": "moved", "replacement_room": "!x:example.org"})


async def _self_invite_ban_bypass(pr: PdusRoom) -> dict[str, Any]:
    # bob "unbans" himself to a higher membership: a leave for alice signed by bob.
    return await state_event(pr, "m.room.member", {"membership": "leave"}, state_key=pr.room.alice.user_id)


async def _redact_alice(pr: PdusRoom) -> dict[str, Any]:
    room = pr.room
    return dict(
        (await room.build("m.room.redaction", {"redacts": pr.alice_message}, redacts=pr.alice_message)).json
    )


async def _auth_events_missing_power(pr: PdusRoom) -> dict[str, Any]:
    # A topic change citing only bob's membership: without the power levels it would be allowed to
    # anyone; the auth events must be the ones the state selects.
    state = await pr.room.state_events()
    return await state_event(
        pr, "m.room.topic", {"topic": "no power levels cited"}, auth=[state[("m.room.member", pr.room.bob)]]
    )


async def _auth_events_wrong_type(pr: PdusRoom) -> dict[str, Any]:
    state = await pr.room.state_events()
    tips = await pr.room.tips()
    auth = [state[("m.room.member", pr.room.bob)], state[("m.room.power_levels", "")], *tips[:1]]
    return dict((await pr.room.message("odd auth", auth=auth)).json)


async def _auth_events_duplicate_kind(pr: PdusRoom) -> dict[str, Any]:
    state = await pr.room.state_events()
    auth = [
        state[("m.room.member", pr.room.bob)],
        state[("m.room.member", pr.room.alice.user_id)],
        state[("m.room.power_levels", "")],
    ]
    return dict((await pr.room.message("two members in auth", auth=auth)).json)


async def _auth_events_unknown(pr: PdusRoom) -> dict[str, Any]:
    state = await pr.room.state_events()
    auth = [state[("m.room.member", pr.room.bob)], state[("m.room.power_levels", "")], "$" + "A" * 43]
    return dict((await pr.room.message("unknown auth", auth=auth)).json)


async def _auth_events_empty(pr: PdusRoom) -> dict[str, Any]:
    return dict((await pr.room.message("no auth", auth=[])).json)


async def _old_prev_before_join(pr: PdusRoom) -> dict[str, Any]:
    """A message citing the room's first event as its only prev event: at that point bob was not in the
    room, so it fails authorization against the state before it."""
    state = await pr.room.state_events()
    create = state[("m.room.create", "")]
    return dict((await pr.room.message("from the past", prev=[create])).json)


# Wrong origin / sender


async def _sender_other_server(pr: PdusRoom) -> dict[str, Any]:
    # Claims a user of a server that did not sign it.
    return dict((await pr.room.message("not mine", sender=pr.other.user("olive"))).json)


async def _sender_our_server(pr: PdusRoom) -> dict[str, Any]:
    return dict((await pr.room.message("I am alice", sender=pr.room.alice.user_id)).json)


async def _sender_not_user_id(pr: PdusRoom) -> dict[str, Any]:
    return await mutated(pr, _set("sender", "bob"))


async def _sender_other_server_signed_by_both(pr: PdusRoom) -> dict[str, Any]:
    # Signed by the other server too (it is its user), but that user is not in the room.
    d = dict(
        (
            await pr.room.message(
                "olive speaks", sender=pr.other.user("olive"), key=pr.other.key, server_name=pr.other.name
            )
        ).json
    )
    return d


async def _origin_field_other(pr: PdusRoom) -> dict[str, Any]:
    # v11+ events have no "origin"; an extra top-level key is kept, covered by the hash, and ignored.
    return await mutated(pr, _set("origin", pr.room.hs.server_name))


# Oversize


async def _oversize_content(pr: PdusRoom) -> dict[str, Any]:
    return await mutated(pr, _content(body="x" * 70_000))


async def _oversize_nested(pr: PdusRoom) -> dict[str, Any]:
    return await mutated(pr, _content(pad=[{"k": "v" * 100} for _ in range(700)]))


async def _just_under_limit(pr: PdusRoom) -> dict[str, Any]:
    return await mutated(pr, _content(pad="y" * 60_000))


async def _long_type(pr: PdusRoom) -> dict[str, Any]:
    return await mutated(pr, _set("type", "m." + "t" * 300))


async def _long_state_key(pr: PdusRoom) -> dict[str, Any]:
    d = await state_event(pr, "org.example.custom", {"k": 1}, state_key="s")
    d["state_key"] = "s" * 300
    return resign(pr, d)


async def _long_sender(pr: PdusRoom) -> dict[str, Any]:
    return await mutated(pr, _set("sender", f"@{'b' * 300}:{pr.room.peer.name}"))


async def _long_room_id(pr: PdusRoom) -> dict[str, Any]:
    return await mutated(pr, _set("room_id", "!" + "r" * 300))


async def _many_keys(pr: PdusRoom) -> dict[str, Any]:
    return await mutated(pr, _content(**{f"k{i}": i for i in range(3000)}))


async def _deep_nesting(pr: PdusRoom) -> dict[str, Any]:
    nested: Any = "bottom"
    for _ in range(400):
        nested = {"n": nested}
    return await mutated(pr, _content(deep=nested))


# Malformed fields


async def _depth_negative(pr: PdusRoom) -> dict[str, Any]:
    return await mutated(pr, _set("depth", -1))


async def _depth_string(pr: PdusRoom) -> dict[str, Any]:
    return await mutated(pr, _set("depth", "7"))


async def _depth_2_53(pr: PdusRoom) -> dict[str, Any]:
    return await mutated(pr, _set("depth", 2**53))


async def _depth_float(pr: PdusRoom) -> dict[str, Any]:
    return await mutated(pr, _set("depth", 3.0))


async def _depth_missing(pr: PdusRoom) -> dict[str, Any]:
    return await mutated(pr, _drop("depth"))


async def _ts_string(pr: PdusRoom) -> dict[str, Any]:
    return await mutated(pr, _set("origin_server_ts", "now"))


async def _ts_missing(pr: PdusRoom) -> dict[str, Any]:
    return await mutated(pr, _drop("origin_server_ts"))


async def _ts_negative(pr: PdusRoom) -> dict[str, Any]:
    return await mutated(pr, _set("origin_server_ts", -1))


async def _ts_far_future(pr: PdusRoom) -> dict[str, Any]:
    return await mutated(pr, _set("origin_server_ts", 32503680000000))  # year 3000


async def _type_missing(pr: PdusRoom) -> dict[str, Any]:
    return await mutated(pr, _drop("type"))


async def _type_int(pr: PdusRoom) -> dict[str, Any]:
    return await mutated(pr, _set("type", 42))


async def _type_empty(pr: PdusRoom) -> dict[str, Any]:
    return await mutated(pr, _set("type", ""))


async def _content_list(pr: PdusRoom) -> dict[str, Any]:
    return await mutated(pr, _set("content", ["not", "an", "object"]))


async def _content_missing(pr: PdusRoom) -> dict[str, Any]:
    return await mutated(pr, _drop("content"))


async def _content_null(pr: PdusRoom) -> dict[str, Any]:
    return await mutated(pr, _set("content", None))


async def _state_key_int(pr: PdusRoom) -> dict[str, Any]:
    return await mutated(pr, _set("state_key", 5))


async def _sender_missing(pr: PdusRoom) -> dict[str, Any]:
    return await mutated(pr, _drop("sender"))


async def _room_id_int(pr: PdusRoom) -> dict[str, Any]:
    return await mutated(pr, _set("room_id", 1))


async def _unsigned_forged(pr: PdusRoom) -> dict[str, Any]:
    d = await base(pr, "with forged unsigned")
    d["unsigned"] = {"redacted_because": {"type": "m.room.redaction"}, "age": -5, "transaction_id": "mine"}
    return d


async def _unsigned_not_object(pr: PdusRoom) -> dict[str, Any]:
    d = await base(pr, "unsigned is a string")
    d["unsigned"] = "x"
    return d


async def _extra_top_level(pr: PdusRoom) -> dict[str, Any]:
    return await mutated(pr, _set("org.example.extra", {"a": 1}))


async def _nul_in_body(pr: PdusRoom) -> dict[str, Any]:
    return await mutated(pr, _content(body="nul \u0000 inside"))


async def _event_id_field_v12(pr: PdusRoom) -> dict[str, Any]:
    # v3+ ids are hashes; a carried "event_id" naming another event must not make it that event.
    return await mutated(pr, _set("event_id", pr.alice_message))


async def _redacts_unknown(pr: PdusRoom) -> dict[str, Any]:
    return dict(
        (await pr.room.build("m.room.redaction", {"redacts": "$" + "Z" * 43}, redacts="$" + "Z" * 43)).json
    )


async def _not_an_object(pr: PdusRoom) -> Any:
    return "just a string"


async def _a_list(pr: PdusRoom) -> Any:
    return [1, 2, 3]


async def _null(pr: PdusRoom) -> Any:
    return None


# prev / auth events


async def _too_many_prev(pr: PdusRoom) -> dict[str, Any]:
    def change(d: dict[str, Any]) -> None:
        d["prev_events"] = d["prev_events"] + [f"${i:043d}" for i in range(21 - len(d["prev_events"]))]

    return await mutated(pr, change)


async def _too_many_auth(pr: PdusRoom) -> dict[str, Any]:
    def change(d: dict[str, Any]) -> None:
        d["auth_events"] = d["auth_events"] + [f"${i:043d}" for i in range(11 - len(d["auth_events"]))]

    return await mutated(pr, change)


async def _prev_empty(pr: PdusRoom) -> dict[str, Any]:
    return dict((await pr.room.message("no prev", prev=[], depth=5)).json)


async def _prev_not_list(pr: PdusRoom) -> dict[str, Any]:
    return await mutated(pr, _set("prev_events", "$abc"))


async def _prev_ints(pr: PdusRoom) -> dict[str, Any]:
    return await mutated(pr, _set("prev_events", [1, 2]))


async def _prev_v1_format(pr: PdusRoom) -> dict[str, Any]:
    def change(d: dict[str, Any]) -> None:
        d["prev_events"] = [[p, {"sha256": "abc"}] for p in d["prev_events"]]

    return await mutated(pr, change)


async def _prev_duplicate(pr: PdusRoom) -> dict[str, Any]:
    tips = await pr.room.tips()
    return dict((await pr.room.message("dup prev", prev=[tips[0], tips[0]])).json)


async def _prev_self_loop(pr: PdusRoom) -> dict[str, Any]:
    # Cite a prev event that is unknown and cannot be fetched (the peer does not have it either).
    tips = await pr.room.tips()
    return dict((await pr.room.message("unknown prev", prev=[tips[0], "$" + "Q" * 43])).json)


async def _prev_other_room_event(pr: PdusRoom) -> dict[str, Any]:
    status, body = await pr.room.alice.call(
        "POST", "/_matrix/client/v3/createRoom", {"preset": "private_chat"}
    )
    assert status == 200, body
    other_room_tip = (await pr.room.hs.storage.events.get_forward_extremities(body["room_id"]))[0]
    tips = await pr.room.tips()
    return dict((await pr.room.message("cites another room", prev=[tips[0], other_room_tip])).json)


async def _auth_other_room_event(pr: PdusRoom) -> dict[str, Any]:
    status, body = await pr.room.alice.call(
        "POST", "/_matrix/client/v3/createRoom", {"preset": "private_chat"}
    )
    assert status == 200, body
    other_state = await pr.room.hs.storage.state.get_current_state_ids(body["room_id"])
    state = await pr.room.state_events()
    auth = [state[("m.room.member", pr.room.bob)], other_state[("m.room.power_levels", "")]]
    return dict((await pr.room.message("power levels of another room", auth=auth)).json)


async def _depth_lower_than_prev(pr: PdusRoom) -> dict[str, Any]:
    return dict((await pr.room.message("depth 1", depth=1)).json)


async def _depth_max(pr: PdusRoom) -> dict[str, Any]:
    return dict((await pr.room.message("depth max", depth=2**53 - 1)).json)


# Room / version


async def _unknown_room(pr: PdusRoom) -> dict[str, Any]:
    return await mutated(pr, _set("room_id", "!unknown:example.org"))


async def _room_not_joined_by_peer(pr: PdusRoom) -> dict[str, Any]:
    status, body = await pr.room.alice.call(
        "POST", "/_matrix/client/v3/createRoom", {"preset": "private_chat"}
    )
    assert status == 200, body
    return await mutated(pr, _set("room_id", body["room_id"]))


async def _room_id_missing(pr: PdusRoom) -> dict[str, Any]:
    return await mutated(pr, _drop("room_id"))


async def _v1_event_shape(pr: PdusRoom) -> dict[str, Any]:
    # A v1-format event (carried event_id, hashed prev_events) in a v12 room.
    def change(d: dict[str, Any]) -> None:
        d["event_id"] = f"$abc:{pr.room.peer.name}"
        d["prev_events"] = [[p, {"sha256": "x"}] for p in d["prev_events"]]
        d["auth_events"] = [[a, {"sha256": "x"}] for a in d["auth_events"]]

    return await mutated(pr, change)


async def _create_in_auth_v12(pr: PdusRoom) -> dict[str, Any]:
    # v12 forbids citing the create event in auth_events.
    state = await pr.room.state_events()
    auth = [
        state[("m.room.create", "")],
        state[("m.room.member", pr.room.bob)],
        state[("m.room.power_levels", "")],
    ]
    return dict((await pr.room.message("cites create", auth=auth)).json)


async def _valid(pr: PdusRoom) -> dict[str, Any]:
    return dict((await pr.room.message("plainly valid")).json)


async def _valid_state_of_own(pr: PdusRoom) -> dict[str, Any]:
    # bob changes his own display name: allowed.
    return await state_event(
        pr, "m.room.member", {"membership": "join", "displayname": "Bobby"}, state_key=pr.room.bob
    )


CASES = [
    # signatures
    PduCase("forged_signature_same_key_id", SIG, _forged_sig, "dropped"),
    PduCase("no_signatures", SIG, _no_signatures, "dropped"),
    PduCase("empty_signatures", SIG, _empty_signatures, "dropped"),
    PduCase("signed_by_another_server_only", SIG, _signed_by_other_server, "dropped"),
    PduCase("unknown_key_id", SIG, _unknown_key_id, "dropped"),
    PduCase("signature_not_base64", SIG, _sig_not_base64, "dropped"),
    PduCase("signatures_of_server_a_list", SIG, _sig_wrong_type, "dropped"),
    PduCase("signatures_a_list", SIG, _sig_list, "dropped"),
    PduCase("signature_truncated", SIG, _sig_truncated, "dropped"),
    PduCase("signature_other_algorithm", SIG, _sig_other_algorithm, "dropped"),
    # hashes
    PduCase("content_tampered_after_signing", HASH, _content_tampered, "redacted"),
    PduCase("hash_wrong", HASH, _hash_wrong, "redacted"),
    PduCase("hash_missing", HASH, _hash_missing, "dropped"),
    PduCase("hash_not_string", HASH, _hash_not_string, "dropped"),
    # authorization
    PduCase("topic_without_power", AUTH, _topic, "rejected"),
    PduCase("name_without_power", AUTH, _name, "rejected"),
    PduCase("power_levels_self_promotion", AUTH, _power_levels, "rejected"),
    PduCase("users_default_100", AUTH, _creator_power_claim, "rejected"),
    PduCase("join_rules_without_power", AUTH, _join_rules, "rejected"),
    PduCase("server_acl_without_power", AUTH, _server_acl, "rejected"),
    PduCase("history_visibility_without_power", AUTH, _history_visibility, "rejected"),
    PduCase("tombstone_without_power", AUTH, _tombstone, "rejected"),
    PduCase("ban_the_admin", AUTH, _ban_alice, "rejected"),
    PduCase("kick_a_member", AUTH, _kick_carol, "rejected"),
    PduCase("leave_for_another_user", AUTH, _self_invite_ban_bypass, "rejected"),
    PduCase("join_as_another_user", AUTH, _join_as_alice, "rejected"),
    PduCase("join_for_a_user_of_ours", AUTH, _join_for_other_user, "rejected"),
    PduCase("message_from_non_member", AUTH, _message_from_non_member, "rejected"),
    PduCase("second_create_event", AUTH, _second_create, "dropped"),
    PduCase("unknown_membership", AUTH, _bad_membership, "rejected"),
    PduCase("redact_others_without_power", AUTH, _redact_alice, "not_applied"),
    PduCase("auth_events_without_power_levels", AUTH, _auth_events_missing_power, "rejected"),
    PduCase("auth_events_with_a_message", AUTH, _auth_events_wrong_type, "rejected"),
    PduCase("auth_events_two_members", AUTH, _auth_events_duplicate_kind, "rejected"),
    PduCase("auth_events_unknown_event", AUTH, _auth_events_unknown, "rejected"),
    PduCase("auth_events_empty", AUTH, _auth_events_empty, "rejected"),
    PduCase("auth_events_cite_create_v12", AUTH, _create_in_auth_v12, "rejected"),
    PduCase("auth_events_of_another_room", AUTH, _auth_other_room_event, "rejected"),
    PduCase("prev_event_before_sender_joined", AUTH, _old_prev_before_join, "rejected"),
    # origin / sender
    PduCase("sender_of_another_server", ORIGIN, _sender_other_server, "dropped"),
    PduCase("sender_of_our_server", ORIGIN, _sender_our_server, "dropped"),
    PduCase("sender_not_a_user_id", ORIGIN, _sender_not_user_id, "dropped"),
    PduCase("other_server_user_not_in_room", ORIGIN, _sender_other_server_signed_by_both, "rejected"),
    PduCase("origin_field_names_us", ORIGIN, _origin_field_other, "accepted"),
    # size
    PduCase("content_over_64k", SIZE, _oversize_content, "dropped"),
    PduCase("nested_content_over_64k", SIZE, _oversize_nested, "dropped"),
    PduCase("just_under_64k", SIZE, _just_under_limit, "accepted"),
    PduCase("type_over_255_bytes", SIZE, _long_type, "dropped"),
    PduCase("state_key_over_255_bytes", SIZE, _long_state_key, "dropped"),
    PduCase("sender_over_255_bytes", SIZE, _long_sender, "dropped"),
    PduCase("room_id_over_255_bytes", SIZE, _long_room_id, "dropped"),
    PduCase("three_thousand_keys", SIZE, _many_keys, "accepted"),
    PduCase("nested_400_deep", SIZE, _deep_nesting, "accepted"),
    # format
    PduCase("depth_negative", FORMAT, _depth_negative, "dropped"),
    PduCase("depth_string", FORMAT, _depth_string, "dropped"),
    PduCase("depth_2_53", FORMAT, _depth_2_53, "dropped"),
    PduCase("depth_float", FORMAT, _depth_float, "dropped"),
    PduCase("depth_missing", FORMAT, _depth_missing, "dropped"),
    PduCase("origin_server_ts_string", FORMAT, _ts_string, "dropped"),
    PduCase("origin_server_ts_missing", FORMAT, _ts_missing, "dropped"),
    PduCase("origin_server_ts_negative", FORMAT, _ts_negative, "accepted"),
    PduCase("origin_server_ts_year_3000", FORMAT, _ts_far_future, "dropped"),
    PduCase("type_missing", FORMAT, _type_missing, "dropped"),
    PduCase("type_int", FORMAT, _type_int, "dropped"),
    PduCase("type_empty", FORMAT, _type_empty, "accepted"),
    PduCase("content_a_list", FORMAT, _content_list, "dropped"),
    PduCase("content_missing", FORMAT, _content_missing, "dropped"),
    PduCase("content_null", FORMAT, _content_null, "dropped"),
    PduCase("state_key_int", FORMAT, _state_key_int, "dropped"),
    PduCase("sender_missing", FORMAT, _sender_missing, "dropped"),
    PduCase("room_id_int", FORMAT, _room_id_int, "dropped"),
    PduCase("unsigned_forged_redacted_because", FORMAT, _unsigned_forged, "accepted"),
    PduCase("unsigned_not_an_object", FORMAT, _unsigned_not_object, "accepted"),
    PduCase("extra_top_level_key", FORMAT, _extra_top_level, "accepted"),
    PduCase("nul_in_body", FORMAT, _nul_in_body, "accepted"),
    PduCase("event_id_field_names_another_event", FORMAT, _event_id_field_v12, "dropped"),
    PduCase("redaction_of_unknown_event", FORMAT, _redacts_unknown, ("accepted", "hidden")),
    PduCase("pdu_a_string", FORMAT, _not_an_object, "dropped"),
    PduCase("pdu_a_list", FORMAT, _a_list, "dropped"),
    PduCase("pdu_null", FORMAT, _null, "dropped"),
    # prev / auth events
    PduCase("21_prev_events", REFS, _too_many_prev, "dropped"),
    PduCase("11_auth_events", REFS, _too_many_auth, "dropped"),
    PduCase("prev_events_empty", REFS, _prev_empty, "rejected"),
    PduCase("prev_events_a_string", REFS, _prev_not_list, "dropped"),
    PduCase("prev_events_ints", REFS, _prev_ints, "dropped"),
    PduCase("prev_events_v1_format", REFS, _prev_v1_format, "dropped"),
    PduCase("prev_events_duplicated", REFS, _prev_duplicate, "accepted"),
    PduCase("prev_event_unfetchable", REFS, _prev_self_loop, "dropped"),
    PduCase("prev_event_of_another_room", REFS, _prev_other_room_event, "rejected"),
    PduCase("depth_lower_than_prev", REFS, _depth_lower_than_prev, "accepted"),
    PduCase("depth_max_safe", REFS, _depth_max, "accepted"),
    # room / version
    PduCase("unknown_room", ROOM, _unknown_room, "dropped"),
    PduCase("room_the_peer_is_not_in", ROOM, _room_not_joined_by_peer, "rejected"),
    PduCase("room_id_missing", ROOM, _room_id_missing, "dropped"),
    PduCase("v1_event_format_in_v12_room", ROOM, _v1_event_shape, "dropped"),
    # controls: the harness sees acceptance when there is acceptance
    PduCase("control_valid_message", FORMAT, _valid, "accepted"),
    PduCase("control_own_displayname", AUTH, _valid_state_of_own, "accepted"),
]


def event_id_of(pr: PdusRoom, raw: Any) -> str | None:
    if not isinstance(raw, dict):
        return None
    try:
        return compute_event_id(raw, lenient(pr.room.rv))
    except Exception:
        return None


async def fate_of(pr: PdusRoom, raw: Any, result: dict[str, Any] | None) -> Fate | None:
    room = pr.room
    event_id = event_id_of(pr, raw)
    if event_id is None:
        return "dropped"
    held, rejected = await room.stored(event_id)
    if not held:
        assert result is None or "error" in result, result
        return "dropped"
    if rejected:
        return "rejected"
    status, body = await room.alice.call(
        "GET", f"/_matrix/client/v3/rooms/{path_segment(room.room_id)}/event/{path_segment(event_id)}"
    )
    if status != 200:
        meta = await room.hs.storage.events.get_event_meta(event_id)
        return "soft_failed" if meta is not None and meta.soft_failed else "hidden"
    if isinstance(raw.get("content"), dict) and raw["content"] and body.get("content") == {}:
        return "redacted"
    return "accepted"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_hostile_pdu(pr: PdusRoom, case: PduCase) -> None:
    room = pr.room
    raw = await case.make(pr)
    valid = await room.message(f"valid beside {case.name}", prev=await room.tips())
    reply = await room.send_txn([valid, raw])
    if reply.status >= 500:
        record(case.category, "5xx")
    assert reply.status == 200, reply
    results = reply.body["pdus"]
    assert results.get(valid.event_id) == {}, results
    assert await room.visible_to_alice(valid.event_id)
    event_id = event_id_of(pr, raw)
    fate = await fate_of(pr, raw, results.get(event_id) if event_id else None)
    if case.fate == "not_applied":
        # The redaction is kept or refused, but alice's message is whole.
        status, body = await room.alice.call(
            "GET",
            f"/_matrix/client/v3/rooms/{path_segment(room.room_id)}/event/{path_segment(pr.alice_message)}",
        )
        assert status == 200 and body["content"].get("body") == "alice's words", body
        fate = "not_applied"
    outcome: Outcome = "refused" if fate in REFUSED else "accepted"
    record(case.category, outcome)
    allowed = case.fate if isinstance(case.fate, tuple) else (case.fate,)
    assert fate in allowed, f"{case.name}: expected {case.fate}, got {fate} ({results})"
    if fate == "dropped" and event_id is not None and isinstance(raw, dict) and "room_id" in raw:
        # Every PDU we can name is answered: an error under its id.
        errors = [r for k, r in results.items() if k != valid.event_id and "error" in r]
        assert errors or raw.get("room_id") != room.room_id, results
    if case.name == "unsigned_forged_redacted_because" and event_id is not None:
        # What the sender put in "unsigned" is not believed: no forged redaction, no transaction id.
        status, body = await room.alice.call(
            "GET", f"/_matrix/client/v3/rooms/{path_segment(room.room_id)}/event/{path_segment(event_id)}"
        )
        assert status == 200, body
        unsigned = body.get("unsigned", {})
        assert "redacted_because" not in unsigned and "transaction_id" not in unsigned, unsigned
        assert body["content"].get("body") == "with forged unsigned"
    if case.name == "control_own_displayname":
        await room.snapshot()
    await room.assert_works()


async def test_duplicates_in_one_transaction_and_across(pr: PdusRoom) -> None:
    room = pr.room
    pdu = await room.message("said twice")
    reply = await room.send_txn([pdu, pdu, pdu])
    assert reply.status == 200 and reply.body["pdus"] == {pdu.event_id: {}}, reply
    again = await room.send_txn([pdu])
    record(FORMAT, "accepted")
    assert again.status == 200 and again.body["pdus"] == {pdu.event_id: {}}, again
    assert (await room.recent_bodies(20)).count("said twice") == 1
    await room.assert_works()


async def test_a_retried_transaction_id_is_not_processed_again(pr: PdusRoom) -> None:
    room = pr.room
    first = await room.message("first of the txn")
    assert (await room.send_txn([first], txn_id="retry-1")).body["pdus"] == {first.event_id: {}}
    second = await room.message("smuggled in the retry")
    reply = await room.send_txn([second], txn_id="retry-1")
    record(FORMAT, "refused" if reply.body["pdus"] == {first.event_id: {}} else "accepted")
    assert reply.body["pdus"] == {first.event_id: {}}
    held, _ = await room.stored(second.event_id)
    assert not held
    await room.assert_works()


async def test_transaction_limits(pr: PdusRoom) -> None:
    """More than 50 PDUs or 100 EDUs, or a body that is not a transaction, is refused as a whole (400)
    and nothing of it is kept; the next transaction goes through."""
    room = pr.room
    tips = await room.tips()
    many = [await room.message(f"m{i}", prev=tips) for i in range(51)]
    for pdus, edus in (
        (many, []),
        ([], [{"edu_type": "m.typing", "content": {}}] * 101),
    ):
        reply = await room.send_txn(pdus, edus)
        record(FORMAT, "refused" if reply.status == 400 else ("5xx" if reply.status >= 500 else "accepted"))
        assert reply.status == 400 and reply.errcode == "M_BAD_JSON", reply
    held, _ = await room.stored(many[0].event_id)
    assert not held
    shapes: list[Any] = [[], {"pdus": "x"}, {"pdus": [], "edus": {}}]
    for i, body in enumerate(shapes):
        reply = await room.request("PUT", f"/_matrix/federation/v1/send/badshape{i}", body)
        record(FORMAT, "refused" if 400 <= reply.status < 500 else "5xx")
        assert reply.status == 400 and reply.errcode == "M_BAD_JSON", reply
    await room.assert_works()


async def test_body_origin_differs_from_the_signer(pr: PdusRoom) -> None:
    room = pr.room
    pdu = await room.message("who sent me")
    reply = await room.send_txn([pdu], body_origin=pr.other.name)
    record(ORIGIN, "refused" if 400 <= reply.status < 500 else "accepted")
    assert reply.status == 400, reply
    held, _ = await room.stored(pdu.event_id)
    assert not held
    await room.assert_works()


async def test_relayed_by_another_server(pr: PdusRoom) -> None:
    """A PDU of the peer, relayed in a transaction of a server that is not in the room: the PDU's own
    signatures are what count (Synapse accepts such relays too)."""
    room = pr.room
    pdu = await room.message("relayed")
    reply = await room.send_txn([pdu], origin=pr.other.name, key=pr.other.key)
    assert reply.status == 200, reply
    record(ORIGIN, "accepted" if reply.body["pdus"] == {pdu.event_id: {}} else "refused")
    assert reply.body["pdus"] == {pdu.event_id: {}}
    assert await room.visible_to_alice(pdu.event_id)
    await room.assert_works()


async def test_lone_surrogate_in_one_pdu(pr: PdusRoom) -> None:
    """Not valid Unicode: the body is not JSON a server may sign, so the whole request is refused (4xx),
    and the room goes on."""
    room = pr.room
    valid = await room.message("beside a surrogate")
    body: dict[str, Any] = {"origin": room.peer.name, "origin_server_ts": 1, "pdus": [valid.json], "edus": []}
    text = encode_canonical_json(body, strict=False).decode()
    raw = text.replace('"edus":[]', '"edus":[{"edu_type":"x","content":{"s":"\\ud800"}}]').encode()
    reply = await room.request("PUT", "/_matrix/federation/v1/send/surrogate", body, raw=raw)
    record(FORMAT, "5xx" if reply.status >= 500 else ("refused" if reply.status >= 400 else "accepted"))
    assert reply.status < 500, reply
    await room.assert_works()


async def test_odd_transaction_ids(pr: PdusRoom) -> None:
    """Transaction ids are the sender's: long, encoded or odd ones are answered (never 5xx)."""
    room = pr.room
    for txn_id in ("t" * 4000, "a%2Fb", "%00", "..", "%F0%9F%92%A9"):
        pdu = await room.message(f"txn {txn_id[:8]}")
        body = {"origin": room.peer.name, "origin_server_ts": 1, "pdus": [pdu.json], "edus": []}
        reply = await room.request("PUT", f"/_matrix/federation/v1/send/{txn_id}", body)
        outcome: Outcome = (
            "5xx" if reply.status >= 500 else ("accepted" if reply.status == 200 else "refused")
        )
        record(FORMAT, outcome)
        assert reply.status < 500, (txn_id, reply)
        if reply.status == 200:
            assert reply.body["pdus"] == {pdu.event_id: {}}
    await room.assert_works()


async def test_fifty_pdus_for_fifty_unknown_rooms(pr: PdusRoom) -> None:
    room = pr.room
    raws = [
        room.resign({**(await base(pr, f"nowhere {i}")), "room_id": f"!nowhere{i}:example.org"})
        for i in range(50)
    ]
    reply = await room.send_txn(raws)
    record(ROOM, "5xx" if reply.status >= 500 else "refused")
    assert reply.status == 200, reply
    # Without the room, its version and so the PDUs' ids are unknown: like Synapse, they are ignored
    # (an entry, when there is one, is an error); none is kept.
    assert all("error" in r for r in reply.body["pdus"].values()), reply
    for raw in raws:
        assert await room.stored(compute_event_id(raw, lenient(room.rv))) == (False, False)
    await room.assert_works()


async def test_the_same_transaction_sent_twice_at_once(pr: PdusRoom) -> None:
    """A retry racing the original: both get the same answer, the PDUs are processed once."""
    room = pr.room
    pdus = [await room.message(f"racing {i}") for i in range(3)]
    first, second = await asyncio.gather(
        room.send_txn(pdus, txn_id="racing"), room.send_txn(pdus, txn_id="racing")
    )
    record(FORMAT, "accepted")
    assert first.status == second.status == 200
    assert first.body == second.body == {"pdus": {p.event_id: {} for p in pdus}}
    recent = await room.recent_bodies(20)
    assert all(recent.count(f"racing {i}") == 1 for i in range(3)), recent
    await room.assert_works()


@pytest.mark.parametrize("after", ["left", "banned", "kicked"])
async def test_a_former_member_speaks_and_rejoins(pr: PdusRoom, after: str) -> None:
    """A peer user who left, was banned or was kicked sends a message, then (banned) tries to rejoin or
    unban themself: refused by the authorization rules; the room works and its state is as alice left it."""
    room = pr.room
    user = room.peer.user(f"former-{after}")
    join = await room.build("m.room.member", {"membership": "join"}, sender=user, state_key=user)
    assert (await room.send_txn([join])).body["pdus"] == {join.event_id: {}}
    if after == "left":
        leave = await room.build("m.room.member", {"membership": "leave"}, sender=user, state_key=user)
        assert (await room.send_txn([leave])).body["pdus"] == {leave.event_id: {}}
    else:
        action = "ban" if after == "banned" else "kick"
        status, body = await room.alice.call(
            "POST", f"/_matrix/client/v3/rooms/{room.room_id}/{action}", {"user_id": user}
        )
        assert status == 200, body
    await room.snapshot()
    attempts = [await room.message(f"{after} still talks", sender=user)]
    if after == "banned":
        attempts.append(
            await room.build("m.room.member", {"membership": "join"}, sender=user, state_key=user)
        )
        attempts.append(
            await room.build("m.room.member", {"membership": "leave"}, sender=user, state_key=user)
        )
    for pdu in attempts:
        reply = await room.send_txn([pdu])
        assert reply.status == 200, reply
        held, rejected = await room.stored(pdu.event_id)
        refused = not held or rejected
        record(AUTH, "refused" if refused else "accepted")
        assert refused, (after, pdu.type, reply)
        assert not await room.visible_to_alice(pdu.event_id)
    await room.assert_works()
