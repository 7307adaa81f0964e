"""Rule 1: m.room.create (and v12's rule 2: the room id is the create event's)."""

from __future__ import annotations

from typing import Any

import pytest

from ranvier.protocol.auth import check_auth_rules
from ranvier.protocol.events import Pdu

from .helpers import ALICE, ALL_VERSIONS, BOB, CORE_VERSIONS, Room, accepts, new_room, rejects


def _create(version: str, content: dict[str, Any] | None = None, sender: str = ALICE, **kw: Any) -> Pdu:
    room = Room(version, sender)
    return room.make(sender, "m.room.create", room.create_content() if content is None else content, "", **kw)


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_create_accepted(version: str) -> None:
    accepts(_create(version), {})


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_create_with_prev_events_rejected(version: str) -> None:
    room = new_room(version)
    assert room.last is not None
    rejects(_create(version, prev=[room.last]), {}, "create", "prev_events")


@pytest.mark.parametrize("version", ["1", "6", "10", "11"])
def test_create_room_id_domain_must_be_senders(version: str) -> None:
    rejects(_create(version, room_id="!room:elsewhere.example"), {}, "create", "room_id")
    accepts(_create(version, room_id="!other:a.example"), {})


def test_v12_create_derives_the_room_id() -> None:
    create = _create("12")
    assert "room_id" not in create.json
    assert create.room_id == "!" + create.event_id[1:]


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_create_unknown_room_version_rejected(version: str) -> None:
    room = Room(version)
    rejects(_create(version, room.create_content(room_version="999")), {}, "create", "room_version")
    rejects(_create(version, room.create_content(room_version=12)), {}, "create", "room_version")
    # absent is fine ("if present")
    content = room.create_content()
    del content["room_version"]
    accepts(_create(version, content), {})


@pytest.mark.parametrize("version", ["1", "6", "10"])
def test_create_without_creator_rejected_before_v11(version: str) -> None:
    rejects(_create(version, {"room_version": version}), {}, "create", "creator")


@pytest.mark.parametrize("version", ["11", "12"])
def test_create_without_creator_accepted_since_v11(version: str) -> None:
    accepts(_create(version, {"room_version": version}), {})


@pytest.mark.parametrize(
    "additional",
    [[BOB], [], [BOB, "@carol:c.example"], ["@historical=ID:example.org"]],
)
def test_v12_additional_creators_accepted(additional: list[str]) -> None:
    accepts(_create("12", {"room_version": "12", "additional_creators": additional}), {})


@pytest.mark.parametrize(
    "additional",
    [BOB, [BOB, 5], ["bob"], ["@bob"], [None], {"@bob:b.example": 1}, ["@bob:not a server"]],
)
def test_v12_additional_creators_malformed_rejected(additional: Any) -> None:
    rejects(
        _create("12", {"room_version": "12", "additional_creators": additional}),
        {},
        "create",
        "additional_creators",
    )


def test_additional_creators_ignored_before_v12() -> None:
    # before v12 the property means nothing to the rules: even a malformed one is accepted
    accepts(_create("11", {"room_version": "11", "additional_creators": "nonsense"}), {})


def test_v12_rule_2_room_id_must_be_the_create_events() -> None:
    room = new_room("12")
    message = room.make(ALICE, "m.room.message", {"body": "hi"})
    accepts(message, room.state)
    # another room's create event under the create key: rule 2
    other = new_room("12", creator=BOB)
    state = dict(room.state)
    state[("m.room.create", "")] = other.state[("m.room.create", "")]
    rejects(message, state, "room_id")
    # no create event at all: rule 2 too
    del state[("m.room.create", "")]
    rejects(message, state, "room_id")


def test_v12_event_in_room_with_made_up_id_rejected() -> None:
    room = new_room("12")
    stray = room.make(ALICE, "m.room.message", {"body": "hi"}, room_id="!" + "A" * 43)
    rejects(stray, room.state, "room_id")


@pytest.mark.parametrize("version", ["1", "6", "10", "11"])
def test_missing_create_event_rejected_before_v12(version: str) -> None:
    room = new_room(version)
    message = room.make(ALICE, "m.room.message", {"body": "hi"})
    state = {k: v for k, v in room.state.items() if k[0] != "m.room.create"}
    rejects(message, state, "auth_events", "no_create")


def test_create_is_decided_by_rule_1_alone() -> None:
    # the state passed does not matter for a create event
    room = new_room("10")
    check_auth_rules(_create("10"), room.state)
