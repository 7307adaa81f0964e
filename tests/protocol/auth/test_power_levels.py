"""The m.room.power_levels rule (rule 10 in v1-v5 and v12, rule 9 in v6-v11) and the power-level helpers."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ranvier.protocol.auth import (
    get_named_level,
    get_notification_level,
    get_required_level_for_event,
    get_user_power_level,
    parse_power_level,
    room_creators,
)
from ranvier.protocol.room_versions import get_room_version

from .helpers import ALICE, BOB, CAROL, CORE_VERSIONS, Room, accepts, new_room, rejects

CREATE = ("m.room.create", "")
V1, V6, V9, V10 = (get_room_version(v) for v in ("1", "6", "9", "10"))


# -- parsing values -------------------------------------------------------------------------------------


@given(st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1), st.sampled_from(["", " ", "\t", "\n "]))
def test_stringy_levels_parse_before_v10(n: int, pad: str) -> None:
    for text in (str(n), f"{pad}{n}{pad}", f"{pad}{'+' if n >= 0 else '-'}000{abs(n)}{pad}"):
        assert parse_power_level(text, V1) == n
        assert parse_power_level(text, V9) == n
        assert parse_power_level(text, V10) is None  # since v10: integers only
    assert parse_power_level(n, V10) == n


@pytest.mark.parametrize(
    "text", ["", "1.5", "1e3", "++1", "+-1", "0x10", "ten", "\u0661\u0660", "1 0", "\u00a010", "5_0"]
)
def test_non_integer_strings_are_not_levels(text: str) -> None:
    assert parse_power_level(text, V1) is None
    assert parse_power_level(text, V9) is None


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_floats_truncate_in_v1_to_v5_only(x: float) -> None:
    expected = int(x) if math.isfinite(x) else None
    assert parse_power_level(x, V1) == expected
    assert parse_power_level(x, V6) is None  # v6+ canonical JSON has no floats


@pytest.mark.parametrize("value", [True, False, None, [], {}, [50]])
@pytest.mark.parametrize("rv", [V1, V6, V10])
def test_booleans_and_others_are_not_levels(value: Any, rv: Any) -> None:
    assert parse_power_level(value, rv) is None


# -- reading levels -------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "6", "10", "11"])
def test_without_power_levels_creator_has_100(version: str) -> None:
    room = new_room(version, with_power_levels=False)
    rv = room.version
    assert get_user_power_level(ALICE, room.state, rv) == 100
    assert get_user_power_level(BOB, room.state, rv) == 0
    assert get_required_level_for_event("m.room.topic", True, room.state) == 50
    assert get_required_level_for_event("m.room.message", False, room.state) == 0
    assert [get_named_level(room.state, n) for n in ("ban", "kick", "redact", "invite")] == [50, 50, 50, 0]
    assert get_notification_level(room.state) == 50


def test_v10_creator_is_content_creator_v11_the_sender() -> None:
    for version, expected in (("10", "@zed:a.example"), ("11", ALICE)):
        room = Room(version)
        create = room.make(ALICE, "m.room.create", {"room_version": version, "creator": "@zed:a.example"}, "")
        assert room_creators(create) == {expected}
        assert get_user_power_level(expected, {CREATE: create}, room.version) == 100


def test_v12_creators_are_infinite() -> None:
    room = new_room("12", create_extra={"additional_creators": [BOB]})
    assert room_creators(room.state[CREATE]) == {ALICE, BOB}
    assert get_user_power_level(ALICE, room.state, room.version) == math.inf
    assert get_user_power_level(BOB, room.state, room.version) == math.inf
    assert get_user_power_level(CAROL, room.state, room.version) == 0
    bare = new_room("12", with_power_levels=False)
    assert get_user_power_level(ALICE, bare.state, bare.version) == math.inf
    assert get_user_power_level(CAROL, bare.state, bare.version) == 0


def test_levels_from_the_power_levels_event() -> None:
    room = Room("10")
    pl = room.default_power_levels(
        users={ALICE: 100, BOB: 0},
        users_default=5,
        events={"m.room.topic": 20, "m.custom": 7},
        state_default=40,
        events_default=3,
        kick=60,
        notifications={"room": 75},
    )
    room = new_room("10", power_levels=pl)
    assert get_user_power_level(BOB, room.state, room.version) == 0  # an explicit 0 is not the default
    assert get_user_power_level(CAROL, room.state, room.version) == 5
    assert get_required_level_for_event("m.room.topic", True, room.state) == 20
    assert get_required_level_for_event("m.custom", False, room.state) == 7
    assert get_required_level_for_event("m.room.name", True, room.state) == 40
    assert get_required_level_for_event("m.room.message", False, room.state) == 3
    assert get_named_level(room.state, "kick") == 60
    assert get_named_level(room.state, "ban") == 50
    assert get_notification_level(room.state, "room") == 75


def test_stringy_levels_are_read_before_v10() -> None:
    room = Room("9")
    pl = {"users": {ALICE: "100", BOB: " 60 "}, "ban": "+70", "events": {"m.room.topic": "020"}}
    room = new_room("9", power_levels=pl)
    assert get_user_power_level(BOB, room.state, room.version) == 60
    assert get_named_level(room.state, "ban") == 70
    assert get_required_level_for_event("m.room.topic", True, room.state) == 20


# -- the power levels rule ------------------------------------------------------------------------------


def _room(version: str, **pl: Any) -> Room:
    """ALICE is creator (100 before v12), BOB at 50 and CAROL at 50; BOB may send power levels."""
    room = Room(version)
    content = room.default_power_levels(users=room.users(**{BOB: 50, CAROL: 50}))
    content["events"] = {"m.room.power_levels": 50}
    content.update(pl)
    return new_room(version, power_levels=content, members=(BOB, CAROL))


def _change(room: Room, sender: str = BOB, **changes: Any) -> Any:
    content = {**room.state[("m.room.power_levels", "")].content, **changes}
    return room.make(sender, "m.room.power_levels", content, "")


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_users_keys_must_be_user_ids(version: str) -> None:
    room = _room(version)
    users = {**room.users(), BOB: 50, CAROL: 50, "carol": 10}
    rejects(_change(room, users=users), room.state, "power_levels", "users")


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_users_values_must_be_levels(version: str) -> None:
    room = _room(version)
    users = {**room.users(), BOB: 50, CAROL: "fifty"}
    rejects(_change(room, users=users), room.state, "power_levels", "users")
    rejects(_change(room, users=[BOB]), room.state, "power_levels", "users")


@pytest.mark.parametrize("version", ["10", "11", "12"])
def test_string_levels_rejected_since_v10(version: str) -> None:
    room = _room(version)
    rejects(_change(room, users={**room.users(), BOB: "50"}), room.state, "power_levels", "users")
    rejects(_change(room, ban="50"), room.state, "power_levels", "level_ints")
    rejects(_change(room, ban=True), room.state, "power_levels", "level_ints")
    rejects(_change(room, events={"m.room.power_levels": "50"}), room.state, "power_levels", "maps_ints")
    rejects(_change(room, notifications={"room": "50"}), room.state, "power_levels", "maps_ints")
    rejects(_change(room, events=[]), room.state, "power_levels", "maps_ints")
    rejects(_change(room, events=None), room.state, "power_levels", "maps_ints")
    rejects(_change(room, users=None), room.state, "power_levels", "users")


@pytest.mark.parametrize("version", ["1", "6", "9"])
def test_string_levels_accepted_before_v10(version: str) -> None:
    room = _room(version)
    users = {ALICE: "100", BOB: "50", CAROL: " 050 "}
    event = _change(
        room, users=users, ban="50", events={"m.room.power_levels": "50"}, notifications={"room": "50"}
    )
    accepts(event, room.state)
    room.apply(event)
    # and they count as the integers they stand for: CAROL (50) cannot be changed by BOB (50)
    rejects(_change(room, users={**users, CAROL: 10}), room.state, "power_levels", "users_old", "only")


@pytest.mark.parametrize("version", ["1", "6", "9"])
def test_unparseable_levels_rejected_when_compared_before_v10(version: str) -> None:
    room = _room(version)
    rejects(_change(room, kick="lots"), room.state, "power_levels", "levels", "new")
    rejects(_change(room, events={"m.room.topic": "x"}), room.state, "power_levels", "events_new", "only")


def test_floats_accepted_in_v1() -> None:
    room = _room("1")
    event = _change(room, users={ALICE: 100, BOB: 50, CAROL: 50.57})
    accepts(event, room.state)
    room.apply(event)
    assert get_user_power_level(CAROL, room.state, room.version) == 50


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_first_power_levels_event_allowed(version: str) -> None:
    room = new_room(version, with_power_levels=False)
    huge = room.default_power_levels(users=room.users(**{BOB: 2**53 - 1}), ban=2**53 - 1)
    accepts(room.make(ALICE, "m.room.power_levels", huge, ""), room.state)


def test_v12_creators_cannot_be_listed() -> None:
    room = new_room("12", create_extra={"additional_creators": [BOB]}, with_power_levels=False)
    rejects(
        room.make(ALICE, "m.room.power_levels", {"users": {ALICE: 100}}, ""),
        room.state,
        "power_levels",
        "creators",
    )
    rejects(
        room.make(ALICE, "m.room.power_levels", {"users": {BOB: 100}}, ""),
        room.state,
        "power_levels",
        "creators",
    )
    accepts(room.make(ALICE, "m.room.power_levels", {"users": {CAROL: 100}}, ""), room.state)


def test_v11_creator_may_be_listed() -> None:
    room = new_room("11", with_power_levels=False)
    accepts(room.make(ALICE, "m.room.power_levels", {"users": {ALICE: 100}}, ""), room.state)


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_named_levels(version: str) -> None:
    room = _room(version, kick=60)
    accepts(_change(room, ban=40), room.state)  # from 50 to 40, both within BOB's 50
    rejects(_change(room, ban=70), room.state, "power_levels", "levels", "new")
    rejects(_change(room, kick=50), room.state, "power_levels", "levels", "old")  # 60 is above BOB
    content = {k: v for k, v in room.state[("m.room.power_levels", "")].content.items() if k != "kick"}
    rejects(room.make(BOB, "m.room.power_levels", content, ""), room.state, "power_levels", "levels", "old")
    accepts(_change(room, ALICE, kick=90), room.state)  # the creator (100, or infinite) may
    accepts(_change(room, kick=60), room.state)  # unchanged values above one's level are fine


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_events_levels(version: str) -> None:
    room = _room(version, events={"m.room.power_levels": 50, "m.room.tombstone": 100})
    keep = {"m.room.power_levels": 50, "m.room.tombstone": 100}
    accepts(_change(room, events={**keep, "m.room.topic": 50}), room.state)
    rejects(
        _change(room, events={**keep, "m.room.topic": 51}), room.state, "power_levels", "events_new", "only"
    )
    rejects(
        _change(room, events={"m.room.power_levels": 50, "m.room.tombstone": 50}),
        room.state,
        "power_levels",
        "events_old",
        "only",
    )
    rejects(
        _change(room, events={"m.room.power_levels": 50}), room.state, "power_levels", "events_old", "only"
    )


@pytest.mark.parametrize("version", ["6", "10", "11", "12"])
def test_notifications_limited_since_v6(version: str) -> None:
    room = _room(version, notifications={"room": 100})
    rejects(_change(room, notifications={"room": 0}), room.state, "power_levels", "events_old", "only")
    rejects(
        _change(room, notifications={"room": 100, "x": 60}), room.state, "power_levels", "events_new", "only"
    )


@pytest.mark.parametrize("version", ["1", "5"])
def test_notifications_unchecked_before_v6(version: str) -> None:
    room = _room(version, notifications={"room": 100})
    accepts(_change(room, notifications={"room": 0}), room.state)
    accepts(_change(room, notifications="not even an object"), room.state)


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_users_levels(version: str) -> None:
    room = _room(version)
    base = {**room.users(), BOB: 50, CAROL: 50}
    accepts(_change(room, users={**base, BOB: 10}), room.state)  # demote oneself
    accepts(_change(room, users={**base, "@dan:d.example": 50}), room.state)  # up to one's own level
    rejects(
        _change(room, users={**base, "@dan:d.example": 51}), room.state, "power_levels", "users_new", "only"
    )
    rejects(_change(room, users={**base, CAROL: 10}), room.state, "power_levels", "users_old", "only")
    removed = {k: v for k, v in base.items() if k != CAROL}
    rejects(_change(room, users=removed), room.state, "power_levels", "users_old", "only")
    rejects(_change(room, users={**base, BOB: 60}), room.state, "power_levels", "users_new", "only")


def test_v12_creator_changes_anything() -> None:
    room = _room("12", kick=2**53 - 1)
    users = {BOB: 2**53 - 1, CAROL: 0}
    accepts(_change(room, ALICE, users=users, kick=0, events={"m.room.tombstone": 150}), room.state)
