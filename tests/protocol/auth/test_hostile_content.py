"""Hostile content never crashes the rules: an event is either allowed or rejected with a rule number."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ranvier.protocol.auth import check_auth_rules
from ranvier.protocol.errors import AuthRejected

from .helpers import ALICE, BOB, CAROL, new_room

_ROOMS = {v: new_room(v, members=(BOB,)) for v in ("1", "6", "10", "12")}

_json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1),
    st.text(max_size=8),
    st.sampled_from([ALICE, BOB, CAROL, "50", " 7 ", "join", "invite", "knock", "ban", "leave"]),
)
_json = st.recursive(
    _json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.one_of(st.text(max_size=6), st.sampled_from([ALICE, BOB, "room", "m.room.name"])),
            inner,
            max_size=3,
        ),
    ),
    max_leaves=10,
)
_KEYS = [
    "membership",
    "users",
    "users_default",
    "events",
    "notifications",
    "ban",
    "kick",
    "invite",
    "third_party_invite",
    "join_authorised_via_users_server",
    "signed",
    "mxid",
    "token",
    "signatures",
    "join_rule",
]
_content = st.dictionaries(st.sampled_from(_KEYS), _json, max_size=5)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    version=st.sampled_from(sorted(_ROOMS)),
    event_type=st.sampled_from(
        ["m.room.member", "m.room.power_levels", "m.room.join_rules", "m.room.message"]
    ),
    sender=st.sampled_from([ALICE, BOB, CAROL]),
    state_key=st.sampled_from([None, "", ALICE, BOB, CAROL]),
    content=_content,
)
def test_rules_reject_or_allow_but_never_crash(
    version: str, event_type: str, sender: str, state_key: str | None, content: dict[str, Any]
) -> None:
    room = _ROOMS[version]
    event = room.make(sender, event_type, content, state_key)
    try:
        check_auth_rules(event, room.state)
    except AuthRejected as e:
        assert e.rule[0].isdigit()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    version=st.sampled_from(sorted(_ROOMS)),
    event_type=st.sampled_from(
        ["m.room.member", "m.room.power_levels", "m.room.join_rules", "m.room.third_party_invite"]
    ),
    state_key=st.sampled_from(["", BOB, CAROL, "tok"]),
    content=_content,
)
def test_hostile_state_never_crashes_the_rules(
    version: str, event_type: str, state_key: str, content: dict[str, Any]
) -> None:
    room = _ROOMS[version]
    hostile = room.make(ALICE, event_type, content, state_key)
    state = {**room.state, (event_type, state_key): hostile}
    signed = {"mxid": CAROL, "token": "tok", "signatures": {"id.example": {"ed25519:0": "AAAA"}}}
    follow_ups = [
        room.make(BOB, "m.room.message", {"body": "x"}),
        room.make(BOB, "m.room.member", {"membership": "join"}, BOB),
        room.make(CAROL, "m.room.member", {"membership": "knock"}, CAROL),
        room.make(
            BOB, "m.room.member", {"membership": "invite", "third_party_invite": {"signed": signed}}, CAROL
        ),
        room.make(ALICE, "m.room.power_levels", {"users": {BOB: 10}}, ""),
        room.make(BOB, "m.room.member", {"membership": "ban"}, CAROL),
    ]
    for event in follow_ups:
        try:
            check_auth_rules(event, state)
        except AuthRejected as e:
            assert e.rule[0].isdigit()
