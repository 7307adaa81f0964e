"""The rules after the member rule: sender must be joined, required power level, state keys starting with
"@", redactions (v1-v2 only), and the final "otherwise, allow"."""

from __future__ import annotations

import pytest

from .helpers import ALICE, BOB, CAROL, CORE_VERSIONS, Room, accepts, new_room, rejects


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_message_by_member_allowed(version: str) -> None:
    room = new_room(version, members=(BOB,))
    accepts(room.make(BOB, "m.room.message", {"body": "hi"}), room.state)


@pytest.mark.parametrize("version", CORE_VERSIONS)
@pytest.mark.parametrize("membership", [None, "invite", "leave", "ban", "knock"])
def test_sender_must_be_joined(version: str, membership: str | None) -> None:
    room = new_room(version)
    if membership is not None:
        room.set_member(ALICE, BOB, membership)
    rejects(room.make(BOB, "m.room.message", {"body": "hi"}), room.state, "sender_joined")


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_required_power_level_for_messages(version: str) -> None:
    room = Room(version)
    pl = room.default_power_levels(events_default=10, events={"m.room.power_levels": 100, "m.reaction": 0})
    room = new_room(version, power_levels=pl, members=(BOB,))
    rejects(room.make(BOB, "m.room.message", {"body": "hi"}), room.state, "required_power")
    accepts(room.make(BOB, "m.reaction", {}), room.state)  # "events" overrides events_default
    accepts(room.make(ALICE, "m.room.message", {"body": "hi"}), room.state)


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_required_power_level_for_state(version: str) -> None:
    room = new_room(version, members=(BOB,))
    rejects(room.make(BOB, "m.room.topic", {"topic": "t"}, ""), room.state, "required_power")
    accepts(room.make(ALICE, "m.room.topic", {"topic": "t"}, ""), room.state)


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_required_power_level_without_power_levels_event(version: str) -> None:
    room = new_room(version, with_power_levels=False, members=(BOB,))
    rejects(
        room.make(BOB, "m.room.topic", {"topic": "t"}, ""), room.state, "required_power"
    )  # state_default 50
    accepts(room.make(BOB, "m.room.message", {"body": "hi"}), room.state)  # events_default 0
    accepts(room.make(ALICE, "m.room.topic", {"topic": "t"}, ""), room.state)  # creator: 100 / infinite


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_state_key_starting_with_at_must_be_sender(version: str) -> None:
    room = Room(version)
    pl = room.default_power_levels(events={"m.room.power_levels": 100, "m.custom": 0})
    room = new_room(version, power_levels=pl, members=(BOB,))
    accepts(room.make(BOB, "m.custom", {}, BOB), room.state)
    accepts(room.make(BOB, "m.custom", {}, "not-a-user"), room.state)
    rejects(room.make(BOB, "m.custom", {}, CAROL), room.state, "state_key")
    rejects(room.make(ALICE, "m.custom", {}, BOB), room.state, "state_key")  # even the creator


# -- redactions -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "2"])
def test_redaction_rule_in_v1_v2(version: str) -> None:
    room = new_room(version, members=(BOB,))
    by_alice = room.send(ALICE, "m.room.message", {"body": "hi"})
    by_bob = room.send(BOB, "m.room.message", {"body": "hi"})
    # BOB is below the redact level (50): only events whose id has his server's domain
    accepts(room.make(BOB, "m.room.redaction", {}, redacts=by_bob.event_id), room.state)
    rejects(
        room.make(BOB, "m.room.redaction", {}, redacts=by_alice.event_id),
        room.state,
        "redaction",
        "otherwise",
    )
    rejects(room.make(BOB, "m.room.redaction", {}), room.state, "redaction", "otherwise")
    # ALICE has the redact level
    accepts(room.make(ALICE, "m.room.redaction", {}, redacts=by_bob.event_id), room.state)


@pytest.mark.parametrize("version", ["3", "6", "10", "11", "12"])
def test_redaction_passes_auth_since_v3(version: str) -> None:
    # since v3 the redact level is checked when the redaction is applied, not by the auth rules
    room = new_room(version, members=(BOB,))
    by_alice = room.send(ALICE, "m.room.message", {"body": "hi"})
    accepts(room.make(BOB, "m.room.redaction", {}, redacts=by_alice.event_id), room.state)


@pytest.mark.parametrize("version", ["1", "10", "12"])
def test_redaction_is_subject_to_its_required_level(version: str) -> None:
    room = Room(version)
    pl = room.default_power_levels(events={"m.room.power_levels": 100, "m.room.redaction": 20})
    room = new_room(version, power_levels=pl, members=(BOB,))
    own = room.send(BOB, "m.room.message", {"body": "hi"})
    rejects(room.make(BOB, "m.room.redaction", {}, redacts=own.event_id), room.state, "required_power")
