"""The m.room.member rule (rule 5 in v1-v5 and v12, rule 4 in v6-v11): join, invite, leave, ban, knock."""

from __future__ import annotations

import pytest

from ranvier.protocol.events import Pdu
from ranvier.protocol.room_versions import get_room_version

from .helpers import ALICE, BOB, CAROL, CORE_VERSIONS, DAVE, Room, accepts, new_room, rejects

KNOCK_VERSIONS = ["7", "10", "11", "12"]  # knock since v7


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_member_without_membership_rejected(version: str) -> None:
    room = new_room(version)
    rejects(room.make(BOB, "m.room.member", {"displayname": "bob"}, BOB), room.state, "member", "fields")
    # and a member event without a state_key
    rejects(room.make(BOB, "m.room.member", {"membership": "join"}), room.state, "member", "fields")


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_unknown_membership_rejected(version: str) -> None:
    room = new_room(version)
    rejects(room.member(BOB, BOB, "wander"), room.state, "member", "unknown")


# -- join -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_creator_first_join(version: str) -> None:
    room = Room(version)
    room.apply(room.make(ALICE, "m.room.create", room.create_content(), ""))
    accepts(room.member(ALICE, ALICE, "join"), room.state)
    # anyone else straight after the create event: no join rule yet, so treated as "invite" and refused
    rejects(room.member(BOB, BOB, "join"), room.state, "member", "join", "otherwise")


@pytest.mark.parametrize("version", ["1", "6", "10"])
def test_creator_first_join_uses_content_creator_before_v11(version: str) -> None:
    room = Room(version)
    # v1-v10: "the creator" is content.creator, which may differ from the sender
    room.apply(room.make(ALICE, "m.room.create", {"room_version": version, "creator": "@zed:a.example"}, ""))
    accepts(room.member("@zed:a.example", "@zed:a.example", "join"), room.state)
    rejects(room.member(ALICE, ALICE, "join"), room.state, "member", "join", "otherwise")


@pytest.mark.parametrize("version", ["11", "12"])
def test_creator_first_join_uses_sender_since_v11(version: str) -> None:
    room = Room(version)
    room.apply(room.make(ALICE, "m.room.create", {"room_version": version, "creator": "@zed:a.example"}, ""))
    accepts(room.member(ALICE, ALICE, "join"), room.state)
    rejects(
        room.member("@zed:a.example", "@zed:a.example", "join"), room.state, "member", "join", "otherwise"
    )


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_join_for_someone_else_rejected(version: str) -> None:
    room = new_room(version)
    rejects(room.member(ALICE, BOB, "join"), room.state, "member", "join", "sender_is_target")


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_banned_user_cannot_join(version: str) -> None:
    room = new_room(version)
    room.send(ALICE, "m.room.member", {"membership": "ban"}, BOB)
    rejects(room.member(BOB, BOB, "join"), room.state, "member", "join", "banned")


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_public_room_join(version: str) -> None:
    room = new_room(version, join_rule="public")
    accepts(room.member(BOB, BOB, "join"), room.state)


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_invite_only_room_join(version: str) -> None:
    room = new_room(version, join_rule="invite")
    rejects(room.member(BOB, BOB, "join"), room.state, "member", "join", "otherwise")
    room.send(ALICE, "m.room.member", {"membership": "invite"}, BOB)
    accepts(room.member(BOB, BOB, "join"), room.state)
    room.join(BOB)
    accepts(room.member(BOB, BOB, "join"), room.state)  # join -> join (e.g. a profile change)


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_unknown_join_rule_rejects_joins(version: str) -> None:
    room = new_room(version, join_rule="private")
    rejects(room.member(BOB, BOB, "join"), room.state, "member", "join", "otherwise")


@pytest.mark.parametrize("version", KNOCK_VERSIONS)
def test_knock_room_join_needs_invite(version: str) -> None:
    room = new_room(version, join_rule="knock")
    rejects(room.member(BOB, BOB, "join"), room.state, "member", "join", "otherwise")
    room.set_member(ALICE, BOB, "invite")
    accepts(room.member(BOB, BOB, "join"), room.state)


# -- restricted joins (v8+) and knock_restricted (v10+) -------------------------------------------------


def _via(room: Room, joiner: str, authoriser: str, signed: bool = True) -> Pdu:
    signers = (authoriser.split(":", 1)[1],) if signed else ()
    content = {"membership": "join", "join_authorised_via_users_server": authoriser}
    return room.make(joiner, "m.room.member", content, joiner, extra_signers=signers)


RESTRICTED_CASES = [
    ("8", "restricted"),
    ("10", "restricted"),
    ("10", "knock_restricted"),
    ("11", "restricted"),
    ("11", "knock_restricted"),
    ("12", "restricted"),
    ("12", "knock_restricted"),
]


@pytest.mark.parametrize(("version", "rule"), RESTRICTED_CASES)
def test_restricted_join_authorised_by_a_joined_member(version: str, rule: str) -> None:
    room = new_room(version, join_rule=rule, members=(CAROL,))
    event = _via(room, BOB, CAROL)  # CAROL is at users_default 0 = the invite level
    accepts(event, room.state)


@pytest.mark.parametrize(("version", "rule"), RESTRICTED_CASES)
def test_restricted_join_without_authoriser_rejected(version: str, rule: str) -> None:
    room = new_room(version, join_rule=rule)
    rejects(room.member(BOB, BOB, "join"), room.state, "member", "join", "restricted", "authoriser")


@pytest.mark.parametrize(("version", "rule"), RESTRICTED_CASES)
def test_restricted_join_by_invited_user_needs_no_authoriser(version: str, rule: str) -> None:
    room = new_room(version, join_rule=rule)
    room.set_member(ALICE, BOB, "invite")
    accepts(room.member(BOB, BOB, "join"), room.state)


@pytest.mark.parametrize(("version", "rule"), RESTRICTED_CASES)
def test_restricted_join_authoriser_not_joined_rejected(version: str, rule: str) -> None:
    room = new_room(version, join_rule=rule)
    event = _via(room, BOB, DAVE)  # DAVE never joined
    rejects(event, room.state, "member", "join", "restricted", "authoriser")


@pytest.mark.parametrize(("version", "rule"), RESTRICTED_CASES)
def test_restricted_join_authoriser_below_invite_level_rejected(version: str, rule: str) -> None:
    room = Room(version)
    room = new_room(version, join_rule=rule, power_levels=room.default_power_levels(invite=50), members=())
    room.set_member(ALICE, CAROL, "invite")
    room.join(CAROL)
    event = _via(room, BOB, CAROL)
    rejects(event, room.state, "member", "join", "restricted", "authoriser")


@pytest.mark.parametrize(("version", "rule"), RESTRICTED_CASES)
def test_restricted_join_not_signed_by_authoriser_rejected(version: str, rule: str) -> None:
    room = new_room(version, join_rule=rule, members=(CAROL,))
    event = _via(room, BOB, CAROL, signed=False)
    rejects(event, room.state, "member", "authorised_via_signed", "only")


@pytest.mark.parametrize("version", ["10", "12"])
def test_join_authorised_via_must_be_a_user_id(version: str) -> None:
    room = new_room(version, join_rule="restricted")
    content = {"membership": "join", "join_authorised_via_users_server": "carol"}
    event = room.make(BOB, "m.room.member", content, BOB)
    rejects(event, room.state, "member", "authorised_via_signed", "only")


@pytest.mark.parametrize(
    ("version", "rule"), [("1", "restricted"), ("6", "restricted"), ("9", "knock_restricted")]
)
def test_restricted_rules_unknown_before_their_version(version: str, rule: str) -> None:
    room = new_room(version, join_rule=rule, members=())
    room.set_member(ALICE, CAROL, "join")
    rejects(_via(room, BOB, CAROL), room.state, "member", "join", "otherwise")


# -- invite ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_invite_by_member(version: str) -> None:
    room = new_room(version, join_rule="invite")
    accepts(room.member(ALICE, BOB, "invite"), room.state)


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_invite_by_non_member_rejected(version: str) -> None:
    room = new_room(version, join_rule="invite")
    rejects(room.member(CAROL, BOB, "invite"), room.state, "member", "invite", "sender_joined")


@pytest.mark.parametrize("version", CORE_VERSIONS)
@pytest.mark.parametrize("target_membership", ["join", "ban"])
def test_invite_of_joined_or_banned_rejected(version: str, target_membership: str) -> None:
    room = new_room(version, members=(BOB,))
    room.set_member(ALICE, BOB, target_membership)
    rejects(room.member(ALICE, BOB, "invite"), room.state, "member", "invite", "target_state")


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_invite_below_invite_level_rejected(version: str) -> None:
    room = Room(version)
    room = new_room(version, power_levels=room.default_power_levels(invite=10), members=(BOB,))
    rejects(room.member(BOB, CAROL, "invite"), room.state, "member", "invite", "otherwise")
    accepts(room.member(ALICE, CAROL, "invite"), room.state)


# -- leave and kick -------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", CORE_VERSIONS)
@pytest.mark.parametrize("before", ["join", "invite"])
def test_leave_self(version: str, before: str) -> None:
    room = new_room(version, join_rule="invite")
    room.set_member(ALICE, BOB, before)
    accepts(room.member(BOB, BOB, "leave"), room.state)


@pytest.mark.parametrize("version", KNOCK_VERSIONS)
def test_rescind_knock(version: str) -> None:
    room = new_room(version, join_rule="knock")
    room.set_member(BOB, BOB, "knock")
    accepts(room.member(BOB, BOB, "leave"), room.state)


@pytest.mark.parametrize("version", ["1", "6"])
def test_leave_from_knock_rejected_before_v7(version: str) -> None:
    room = new_room(version)
    room.set_member(BOB, BOB, "knock")  # cannot happen in these versions, but the rule must not allow it
    rejects(room.member(BOB, BOB, "leave"), room.state, "member", "leave", "self")


@pytest.mark.parametrize("version", CORE_VERSIONS)
@pytest.mark.parametrize("before", ["leave", "ban", None])
def test_leave_self_from_leave_or_ban_rejected(version: str, before: str | None) -> None:
    room = new_room(version)
    if before is not None:
        room.set_member(ALICE, BOB, before)
    rejects(room.member(BOB, BOB, "leave"), room.state, "member", "leave", "self")


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_kick(version: str) -> None:
    room = new_room(version, members=(BOB, CAROL))
    accepts(room.member(ALICE, BOB, "leave"), room.state)
    # BOB (0) is below the kick level (50)
    rejects(room.member(BOB, CAROL, "leave"), room.state, "member", "leave", "otherwise")


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_kick_by_non_member_rejected(version: str) -> None:
    room = new_room(version, members=(BOB,))
    room.set_member(ALICE, ALICE, "leave")
    rejects(room.member(ALICE, BOB, "leave"), room.state, "member", "leave", "sender_joined")


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_kick_of_equal_level_rejected(version: str) -> None:
    room = Room(version)
    users = {**room.users(), BOB: 50, CAROL: 50}
    room = new_room(version, power_levels=room.default_power_levels(users=users), members=(BOB, CAROL))
    rejects(room.member(BOB, CAROL, "leave"), room.state, "member", "leave", "otherwise")


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_unban_needs_ban_level(version: str) -> None:
    users = {BOB: 60} if version == "12" else {ALICE: 100, BOB: 60}
    room = new_room(
        version, power_levels=Room(version).default_power_levels(users=users, ban=70), members=(BOB,)
    )
    room.set_member(ALICE, CAROL, "ban")
    # BOB has the kick level (50) but not the ban level (70)
    rejects(room.member(BOB, CAROL, "leave"), room.state, "member", "leave", "unban")
    accepts(room.member(ALICE, CAROL, "leave"), room.state)


# -- ban ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_ban(version: str) -> None:
    room = new_room(version, members=(BOB,))
    accepts(room.member(ALICE, CAROL, "ban"), room.state)  # banning a non-member is fine
    accepts(room.member(ALICE, BOB, "ban"), room.state)
    rejects(room.member(BOB, CAROL, "ban"), room.state, "member", "ban", "otherwise")


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_ban_of_equal_level_rejected(version: str) -> None:
    room = Room(version)
    users = {**room.users(), BOB: 50, CAROL: 50}
    room = new_room(version, power_levels=room.default_power_levels(users=users), members=(BOB, CAROL))
    rejects(room.member(BOB, CAROL, "ban"), room.state, "member", "ban", "otherwise")
    accepts(room.member(BOB, "@dan:d.example", "ban"), room.state)


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_ban_by_non_member_rejected(version: str) -> None:
    room = new_room(version)
    rejects(room.member(BOB, CAROL, "ban"), room.state, "member", "ban", "sender_joined")


def test_v12_nobody_can_ban_a_creator() -> None:
    room = Room("12")
    top = 2**53 - 1
    room = new_room("12", power_levels=room.default_power_levels(users={BOB: top}), members=(BOB,))
    rejects(room.member(BOB, ALICE, "ban"), room.state, "member", "ban", "otherwise")
    rejects(room.member(BOB, ALICE, "leave"), room.state, "member", "leave", "otherwise")
    # and the creator can ban even the highest power level
    accepts(room.member(ALICE, BOB, "ban"), room.state)


def test_v11_creator_is_not_special_once_power_levels_exist() -> None:
    room = Room("11")
    top = 2**53 - 1
    pl = room.default_power_levels(users={ALICE: 100, BOB: top})
    room = new_room("11", power_levels=pl, members=(BOB,))
    accepts(room.member(BOB, ALICE, "ban"), room.state)


def test_v12_additional_creator_has_infinite_power() -> None:
    room = new_room("12", create_extra={"additional_creators": [BOB]}, members=(BOB, CAROL))
    accepts(room.member(BOB, CAROL, "ban"), room.state)
    # creators are equal: neither may kick the other (infinity is not above infinity)
    rejects(room.member(BOB, ALICE, "leave"), room.state, "member", "leave", "otherwise")


# -- knock (v7+) ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KNOCK_VERSIONS)
def test_knock(version: str) -> None:
    room = new_room(version, join_rule="knock")
    accepts(room.member(BOB, BOB, "knock"), room.state)
    rejects(room.member(ALICE, BOB, "knock"), room.state, "member", "knock", "sender_is_target")


@pytest.mark.parametrize("version", KNOCK_VERSIONS)
@pytest.mark.parametrize("before", ["ban", "invite", "join"])
def test_knock_from_ban_invite_join_rejected(version: str, before: str) -> None:
    room = new_room(version, join_rule="knock")
    room.set_member(ALICE, BOB, before)
    rejects(room.member(BOB, BOB, "knock"), room.state, "member", "knock", "otherwise")


@pytest.mark.parametrize("version", KNOCK_VERSIONS)
@pytest.mark.parametrize("rule", ["public", "invite", "restricted"])
def test_knock_needs_knock_join_rule(version: str, rule: str) -> None:
    room = new_room(version, join_rule=rule)
    rejects(room.member(BOB, BOB, "knock"), room.state, "member", "knock", "join_rule")


@pytest.mark.parametrize("version", ["10", "11", "12"])
def test_knock_on_knock_restricted_since_v10(version: str) -> None:
    room = new_room(version, join_rule="knock_restricted")
    accepts(room.member(BOB, BOB, "knock"), room.state)


@pytest.mark.parametrize("version", ["8", "9"])
def test_knock_on_knock_restricted_rejected_before_v10(version: str) -> None:
    room = new_room(version, join_rule="knock_restricted")
    rejects(room.member(BOB, BOB, "knock"), room.state, "member", "knock", "join_rule")


@pytest.mark.parametrize("version", ["1", "6"])
def test_knock_is_unknown_before_v7(version: str) -> None:
    room = new_room(version, join_rule="knock")
    rejects(room.member(BOB, BOB, "knock"), room.state, "member", "unknown")
    assert not get_room_version(version).knock_join_rule
