"""Rule 2 (v1-v11) / rule 3 (v12): the claimed auth events; the auth events selection; m.federate (rule 3/4);
and the v1-v5 m.room.aliases special case (rule 4)."""

from __future__ import annotations

import pytest

from ranvier.protocol.auth import auth_types_for_event, check_auth_events_list, check_auth_rules, rule_number
from ranvier.protocol.errors import AuthRejected
from ranvier.protocol.events import Pdu
from ranvier.protocol.room_versions import get_room_version

from .helpers import ALICE, BOB, CAROL, CORE_VERSIONS, accepts, new_room, rejects

CREATE = ("m.room.create", "")
PL = ("m.room.power_levels", "")
JR = ("m.room.join_rules", "")


def _list_rejects(event: Pdu, auth: list[Pdu], *path: str) -> None:
    with pytest.raises(AuthRejected) as info:
        check_auth_events_list(event, auth)
    assert info.value.rule == rule_number(event.room_version, *path), info.value


# -- auth events selection ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_selection_for_a_message(version: str) -> None:
    rv = get_room_version(version)
    keys = auth_types_for_event(rv, "m.room.message", None, BOB, {"body": "x"})
    expected = {PL, ("m.room.member", BOB)}
    if version != "12":
        expected.add(CREATE)  # since v12 the room id implies the create event
    assert keys == expected


def test_selection_for_create_is_empty() -> None:
    assert auth_types_for_event(get_room_version("10"), "m.room.create", "", ALICE, {}) == set()


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_selection_for_memberships(version: str) -> None:
    rv = get_room_version(version)
    base = {PL, ("m.room.member", BOB), ("m.room.member", CAROL)} | (set() if version == "12" else {CREATE})
    assert auth_types_for_event(rv, "m.room.member", CAROL, BOB, {"membership": "ban"}) == base
    assert auth_types_for_event(rv, "m.room.member", CAROL, BOB, {"membership": "invite"}) == base | {JR}
    tpi = {"membership": "invite", "third_party_invite": {"signed": {"token": "tok", "mxid": CAROL}}}
    assert auth_types_for_event(rv, "m.room.member", CAROL, BOB, tpi) == base | {
        JR,
        ("m.room.third_party_invite", "tok"),
    }
    via = {"membership": "join", "join_authorised_via_users_server": ALICE}
    joined = auth_types_for_event(rv, "m.room.member", BOB, BOB, via)
    if rv.restricted_join_rule:  # since v8
        assert ("m.room.member", ALICE) in joined
    else:
        assert ("m.room.member", ALICE) not in joined
    knock = auth_types_for_event(rv, "m.room.member", BOB, BOB, {"membership": "knock"})
    assert (JR in knock) == rv.knock_join_rule  # since v7


# -- check_auth_events_list -----------------------------------------------------------------------------


def _auth_of(room_state: dict[tuple[str, str], Pdu], event: Pdu) -> list[Pdu]:
    by_id = {e.event_id: e for e in room_state.values()}
    return [by_id[i] for i in event.auth_event_ids]


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_auth_events_list_accepted(version: str) -> None:
    room = new_room(version, members=(BOB,))
    event = room.make(BOB, "m.room.message", {"body": "hi"})
    auth_map = check_auth_events_list(event, _auth_of(room.state, event))
    assert CREATE not in auth_map if version == "12" else CREATE in auth_map
    if version == "12":
        auth_map[CREATE] = room.state[CREATE]  # the caller adds it
    check_auth_rules(event, auth_map)


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_auth_events_duplicates_rejected(version: str) -> None:
    room = new_room(version, members=(BOB,))
    old_pl = room.state[PL]
    room.send(ALICE, "m.room.power_levels", room.default_power_levels(users_default=1), "")
    wanted = [room.state[k] for k in (PL, ("m.room.member", BOB)) if k in room.state]
    if version != "12":
        wanted.append(room.state[CREATE])
    event = room.make(BOB, "m.room.message", {"body": "hi"}, auth=[*wanted, old_pl])
    _list_rejects(event, [*wanted, old_pl], "auth_events", "duplicates")


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_auth_events_citing_one_event_twice_rejected(version: str) -> None:
    room = new_room(version, members=(BOB,))
    event = room.make(BOB, "m.room.message", {"body": "hi"})
    auth = _auth_of(room.state, event)
    twice = room.make(BOB, "m.room.message", {"body": "hi"}, auth=[*auth, room.state[PL]])
    _list_rejects(twice, auth, "auth_events", "duplicates")


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_auth_events_not_selected_rejected(version: str) -> None:
    room = new_room(version, members=(BOB,))
    auth = [
        room.state[PL],
        room.state[("m.room.member", BOB)],
        room.state[JR],
    ]  # join rules: not for messages
    if version != "12":
        auth.append(room.state[CREATE])
    event = room.make(BOB, "m.room.message", {"body": "hi"}, auth=auth)
    _list_rejects(event, auth, "auth_events", "selection")


def test_v12_auth_events_citing_create_rejected() -> None:
    room = new_room("12", members=(BOB,))
    auth = [room.state[PL], room.state[("m.room.member", BOB)], room.state[CREATE]]
    event = room.make(BOB, "m.room.message", {"body": "hi"}, auth=auth)
    _list_rejects(event, auth[:2], "auth_events", "selection")
    _list_rejects(event, auth, "auth_events", "selection")


@pytest.mark.parametrize("version", ["1", "6", "10", "11"])
def test_auth_events_without_create_rejected(version: str) -> None:
    room = new_room(version, members=(BOB,))
    auth = [room.state[PL], room.state[("m.room.member", BOB)]]
    event = room.make(BOB, "m.room.message", {"body": "hi"}, auth=auth)
    _list_rejects(event, auth, "auth_events", "no_create")


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_auth_events_of_another_room_rejected(version: str) -> None:
    room = new_room(version, members=(BOB,))
    other = new_room(version, members=(BOB,), room_id="!elsewhere:a.example")
    assert other.room_id != room.room_id
    auth = [room.state[PL], other.state[("m.room.member", BOB)]]
    if version != "12":
        auth.append(room.state[CREATE])
    event = room.make(BOB, "m.room.message", {"body": "hi"}, auth=auth)
    _list_rejects(event, auth, "auth_events", "room_id")
    # check_auth_rules looks at the room of the entries it uses as well
    state = dict(room.state)
    state[("m.room.member", BOB)] = other.state[("m.room.member", BOB)]
    rejects(event, state, "auth_events", "room_id")


def test_auth_events_list_uncited_event_is_a_caller_bug() -> None:
    room = new_room("10", members=(BOB,))
    event = room.make(BOB, "m.room.message", {"body": "hi"})
    with pytest.raises(ValueError):
        check_auth_events_list(event, [*_auth_of(room.state, event), room.state[JR]])


def test_auth_events_list_of_create_is_empty() -> None:
    room = new_room("10")
    assert check_auth_events_list(room.state[CREATE], []) == {}


# -- m.federate (rule 3; rule 4 in v12) -----------------------------------------------------------------


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_unfederated_room_rejects_other_servers(version: str) -> None:
    room = new_room(version, create_extra={"m.federate": False})
    rejects(room.member(BOB, BOB, "join"), room.state, "federate")
    # a user of the creator's server is fine
    accepts(room.member("@alice2:a.example", "@alice2:a.example", "join"), room.state)


@pytest.mark.parametrize("version", CORE_VERSIONS)
def test_federated_room_accepts_other_servers(version: str) -> None:
    room = new_room(version, create_extra={"m.federate": True})
    accepts(room.member(BOB, BOB, "join"), room.state)


# -- m.room.aliases (rule 4, v1-v5 only) ----------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "3", "5"])
def test_aliases_special_case(version: str) -> None:
    room = new_room(version)
    # BOB is not even in the room: aliases are his server's business alone
    accepts(room.make(BOB, "m.room.aliases", {"aliases": ["#x:b.example"]}, "b.example"), room.state)
    rejects(room.make(BOB, "m.room.aliases", {"aliases": []}, "a.example"), room.state, "aliases", "domain")
    rejects(room.make(BOB, "m.room.aliases", {"aliases": []}), room.state, "aliases", "state_key")


@pytest.mark.parametrize("version", ["6", "10", "11", "12"])
def test_aliases_are_ordinary_state_since_v6(version: str) -> None:
    room = new_room(version)
    # no special case: a non-member is rejected by "sender must be joined"
    rejects(room.make(BOB, "m.room.aliases", {"aliases": []}, "b.example"), room.state, "sender_joined")
    accepts(room.make(ALICE, "m.room.aliases", {"aliases": []}, "a.example"), room.state)
