"""The classic state resolution scenarios, as readable DAGs, for room v11 (v2) and v12 (v2.1).

Expected states are worked out by hand from rooms/fragments/v2-state-res.md; the comments give the steps
that decide each outcome. ``resolve`` returns event *names*.
"""

from __future__ import annotations

import pytest

from tests.protocol.dag import JR_KEY, PL_KEY, Dag, user

TOPIC = ("m.room.topic", "")
V2_VERSIONS = ["11", "12"]


def member(name: str) -> tuple[str, str]:
    return ("m.room.member", user(name))


def levels(version: str, **users: int) -> dict[str, int]:
    """Power levels users: before v12 alice (the creator) is listed with 100; since v12 she may not be."""
    return users if version == "12" else {"alice": 100, **users}


@pytest.mark.parametrize("version", V2_VERSIONS)
def test_ban_racing_a_demotion_loses(version: str) -> None:
    # Bob (50) bans Zara while Alice concurrently demotes Bob to 0. Power events go first, ordered with
    # Alice's PL2 before Bob's BAN (higher sender power); BAN then fails against PL2.
    dag = Dag(version).public_room("alice", members=["bob", "zara"], users=levels(version, bob=50))
    dag.member("BAN", "bob", "ban", target="zara", prev=["IMZ"])
    dag.power_levels("PL2", "alice", levels(version, bob=0), prev=["IMZ"])
    resolved = dag.resolve("BAN", "PL2")
    assert resolved[PL_KEY] == "PL2"
    assert resolved[member("zara")] == "IMZ"
    assert resolved == dag.resolve("PL2", "BAN")


@pytest.mark.parametrize("version", V2_VERSIONS)
def test_ban_racing_an_unrelated_power_level_change_stands(version: str) -> None:
    # Alice's concurrent PL2 keeps Bob at 50, so BAN (sorted after PL2) still passes.
    dag = Dag(version).public_room("alice", members=["bob", "zara"], users=levels(version, bob=50))
    dag.member("BAN", "bob", "ban", target="zara", prev=["IMZ"])
    dag.power_levels("PL2", "alice", levels(version, bob=50), content={"events_default": 10}, prev=["IMZ"])
    resolved = dag.resolve("BAN", "PL2")
    assert resolved[PL_KEY] == "PL2"
    assert resolved[member("zara")] == "BAN"


@pytest.mark.parametrize("version", V2_VERSIONS)
def test_topic_set_before_a_power_level_reset(version: str) -> None:
    # Alice sets T1; then Bob (50) sets T2 while Alice resets Bob to 0. The mainline of PL2 puts T1 and T2
    # at the same position (both cite IPOWER); T1 is older and passes, T2 fails against PL2.
    dag = Dag(version).public_room("alice", members=["bob"], users=levels(version, bob=50))
    dag.topic("T1", "alice")
    dag.topic("T2", "bob", prev=["T1"])
    dag.power_levels("PL2", "alice", levels(version, bob=0), prev=["T1"])
    resolved = dag.resolve("T2", "PL2")
    assert resolved[TOPIC] == "T1"
    assert resolved[PL_KEY] == "PL2"


@pytest.mark.parametrize("version", V2_VERSIONS)
def test_join_rule_change_racing_a_join(version: str) -> None:
    # Alice makes the room invite-only while Zara joins. JR2 is a power event, applied first; Zara's join
    # (mainline phase) then fails the join rule.
    dag = Dag(version).public_room("alice", members=["bob"])
    dag.join_rules("JR2", "alice", "invite", prev=["IMB"])
    dag.join("IMZ", "zara", prev=["IMB"])
    resolved = dag.resolve("JR2", "IMZ")
    assert resolved[JR_KEY] == "JR2"
    assert member("zara") not in resolved


@pytest.mark.parametrize("version", V2_VERSIONS)
def test_offtopic_power_level_fork(version: str) -> None:
    # PA (Alice: Bob 50), PB (Bob: Charlie 50), PC (Charlie lowers himself to 0) on one fork; the other
    # fork only saw PA. Reverse topological power ordering replays PA, PB, PC in order: PC wins.
    dag = Dag(version).public_room("alice", members=["bob", "charlie"])
    dag.power_levels("PA", "alice", levels(version, bob=50))
    dag.power_levels("PB", "bob", levels(version, bob=50, charlie=50))
    dag.power_levels("PC", "charlie", levels(version, bob=50, charlie=0))
    dag.topic("T", "alice", prev=["PA"])
    assert dag.resolve("PC", "T")[PL_KEY] == "PC"


@pytest.mark.parametrize("version", V2_VERSIONS)
def test_mainline_ordering_with_several_forks(version: str) -> None:
    # After PA1: one fork T2, PA2 (Charlie 50), T3 (Bob); the other PB (Bob re-sends PA1's levels) and
    # T4 (Alice). PA2 sorts before PB (Alice outranks Bob); PB then fails: against PA2 it removes
    # Charlie's 50, which is not below Bob's own level. Mainline of PA2: [PA2, PA1, IPOWER]. T4 cites PB whose
    # power levels parent is PA1 (position 1); T3 cites PA2 (position 0): T4 first, then T3 wins.
    dag = Dag(version).public_room("alice", members=["bob", "charlie"])
    dag.topic("T1", "alice")
    dag.power_levels("PA1", "alice", levels(version, bob=50))
    dag.topic("T2", "alice")
    dag.power_levels("PA2", "alice", levels(version, bob=50, charlie=50))
    dag.topic("T3", "bob")
    dag.power_levels("PB", "bob", levels(version, bob=50), prev=["PA1"])
    dag.topic("T4", "alice")
    resolved = dag.resolve("T3", "T4")
    assert resolved[PL_KEY] == "PA2"
    assert resolved[TOPIC] == "T3"


@pytest.mark.parametrize("version", V2_VERSIONS)
def test_mainline_position_beats_timestamp(version: str) -> None:
    # T_OLD (sent late, ts 1000) cites an older power level than T_NEW (ts 1): the older mainline position
    # is applied first, so T_NEW is the topic although its timestamp is smaller.
    dag = Dag(version).public_room("alice", members=["bob"])
    dag.topic("T_OLD", "alice", ts=1000, prev=["IMB"])
    dag.power_levels("P1", "alice", levels(version, bob=10), prev=["IMB"])
    dag.topic("T_NEW", "alice", ts=1)
    assert dag.resolve("T_OLD", "T_NEW")[TOPIC] == "T_NEW"


@pytest.mark.parametrize("version", V2_VERSIONS)
def test_rejoin_after_a_ban_on_another_fork_fails(version: str) -> None:
    # Bob bans Zara; concurrently Zara leaves and re-joins. BAN (a power event) is applied first; then
    # Zara's leave and re-join both fail because she is banned.
    dag = Dag(version).public_room("alice", members=["bob", "zara"], users=levels(version, bob=50))
    dag.member("BAN", "bob", "ban", target="zara", prev=["IMZ"])
    dag.member("LEAVE", "zara", "leave", prev=["IMZ"])
    dag.join("REJOIN", "zara")
    assert dag.resolve("BAN", "REJOIN")[member("zara")] == "BAN"


@pytest.mark.parametrize("version", V2_VERSIONS)
def test_rejoin_after_unban_on_the_same_fork_stands(version: str) -> None:
    # BAN, UNBAN and REJOIN on one fork, a topic on the other: the ban and unban come back through the
    # auth difference, are replayed in order, and the re-join passes after them.
    dag = Dag(version).public_room("alice", members=["bob", "zara"], users=levels(version, bob=50))
    dag.member("BAN", "bob", "ban", target="zara")
    dag.member("UNBAN", "bob", "leave", target="zara")
    dag.join("REJOIN", "zara")
    dag.topic("T", "alice", prev=["IMZ"])
    resolved = dag.resolve("REJOIN", "T")
    assert resolved[member("zara")] == "REJOIN"
    assert resolved[TOPIC] == "T"


@pytest.mark.parametrize("version", V2_VERSIONS)
def test_membership_changes_across_forks(version: str) -> None:
    # Each fork changes different members: all changes survive, each key from the fork that changed it.
    dag = Dag(version).public_room("alice", members=["bob", "zara"])
    dag.join("IMC", "charlie", prev=["IMZ"])
    dag.member("BOB2", "bob", "join", content={"displayname": "Bob"})
    dag.join("IMD", "dave", prev=["IMZ"])
    dag.member("KICK", "alice", "leave", target="zara")
    resolved = dag.resolve("BOB2", "KICK")
    assert resolved[member("charlie")] == "IMC"
    assert resolved[member("dave")] == "IMD"
    assert resolved[member("bob")] == "BOB2"
    assert resolved[member("zara")] == "KICK"


@pytest.mark.parametrize("version", V2_VERSIONS)
def test_three_forks(version: str) -> None:
    # Three forks: a demotion of Bob, Bob's topic and Bob's kick of Zara. The demotion wins over both.
    dag = Dag(version).public_room("alice", members=["bob", "zara"], users=levels(version, bob=50))
    dag.power_levels("PL2", "alice", levels(version), prev=["IMZ"])
    dag.topic("T", "bob", prev=["IMZ"])
    dag.member("KICK", "bob", "leave", target="zara", prev=["IMZ"])
    for order in (("PL2", "T", "KICK"), ("KICK", "PL2", "T"), ("T", "KICK", "PL2")):
        resolved = dag.resolve(*order)
        assert resolved[PL_KEY] == "PL2"
        assert TOPIC not in resolved
        assert resolved[member("zara")] == "IMZ"


def _problem_a(version: str) -> tuple[Dag, dict[tuple[str, str], str], dict[tuple[str, str], str]]:
    """MSC4297 problem A: Alice makes the room invite-only, then leaves; Bob and Charlie change their names.

    Charlie's server holds a stale state (the old join rules and Bob's old join)."""
    dag = Dag(version).public_room("alice", members=["bob", "charlie"])
    dag.join_rules("JR1", "alice", "invite")
    dag.member("LEAVE_A", "alice", "leave")
    dag.member("BOB2", "bob", "join", content={"displayname": "bob++"})
    dag.member("CHARLIE2", "charlie", "join", content={"displayname": "charlie++"}, prev=["LEAVE_A"])
    bob_view = dict(dag.states["BOB2"])
    charlie_view = dict(dag.states["CHARLIE2"])
    charlie_view[JR_KEY] = dag.id("IJR")
    charlie_view[member("bob")] = dag.id("IMB")
    return dag, bob_view, charlie_view


def test_msc4297_problem_a_v11_loses_the_join_rules() -> None:
    # v2 starts the checks from the unconflicted state, where Alice has left: both join rules fail.
    dag, bob_view, charlie_view = _problem_a("11")
    resolved = dag.resolve(states=[bob_view, charlie_view])
    assert JR_KEY not in resolved
    assert resolved[member("bob")] == "BOB2"
    assert resolved[member("charlie")] == "CHARLIE2"


def test_msc4297_problem_a_v12_keeps_the_join_rules() -> None:
    # v2.1 starts from an empty map: each join rules event is checked against its own auth events.
    dag, bob_view, charlie_view = _problem_a("12")
    resolved = dag.resolve(states=[bob_view, charlie_view])
    assert resolved[JR_KEY] == "JR1"
    assert resolved[member("alice")] == "LEAVE_A"
    assert resolved[member("bob")] == "BOB2"
    assert resolved[member("charlie")] == "CHARLIE2"
    assert resolved[("m.room.create", "")] == "CREATE"


def _problem_b(version: str) -> tuple[Dag, dict[tuple[str, str], str], dict[tuple[str, str], str]]:
    """MSC4297 problem B: Alice promotes Bob (PL1), Bob promotes Charlie (PL2); Eve's server holds a stale
    state with the room's first power levels, while every auth chain has seen PL1 and PL2."""
    dag = Dag(version).public_room("alice", members=["bob", "charlie"])
    dag.power_levels("PL1", "alice", levels(version, bob=50))
    dag.power_levels("PL2", "bob", levels(version, bob=50, charlie=50))
    dag.join("IMZ", "zara")
    dag.join("IME", "eve", prev=["PL2"])
    dag.member("EVE2", "eve", "join", content={"displayname": "eve++"})
    eve_view = dict(dag.states["EVE2"])
    eve_view[PL_KEY] = dag.id("IPOWER")
    assert member("zara") not in eve_view
    return dag, eve_view, dict(dag.states["IMZ"])


def test_msc4297_problem_b_v11_resets_power_levels() -> None:
    # PL1 is in both auth chains, so not in the auth difference: PL2 is replayed on IPOWER and fails.
    dag, eve_view, zara_view = _problem_b("11")
    assert dag.resolve(states=[eve_view, zara_view])[PL_KEY] == "IPOWER"


def test_msc4297_problem_b_v12_keeps_power_levels() -> None:
    # The conflicted state subgraph (IPOWER -> PL1 -> PL2) brings PL1 back: PL2 passes.
    dag, eve_view, zara_view = _problem_b("12")
    resolved = dag.resolve(states=[eve_view, zara_view])
    assert resolved[PL_KEY] == "PL2"
    assert resolved[member("zara")] == "IMZ"
    assert resolved[member("eve")] == "EVE2"
