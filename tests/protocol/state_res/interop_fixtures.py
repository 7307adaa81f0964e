"""Rooms on which Ranvier once resolved state differently from Synapse, as readable DAGs.

Each builder returns the ``Dag``, the state sets to resolve and the expected resolution (event names), as
Synapse 1.163.2 resolves it. ``test_interop_fixtures.py`` checks Ranvier against the expected states (pure,
fast); ``test_synapse_diff.py`` also runs every fixture through Synapse itself, so an expectation cannot
drift from what the network does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ranvier.protocol.events import StateKey
from tests.protocol.dag import JR_KEY, Dag, user

TOPIC: StateKey = ("m.room.topic", "")


def member(name: str) -> StateKey:
    return ("m.room.member", user(name))


@dataclass
class Fixture:
    dag: Dag
    state_sets: list[dict[StateKey, str]]
    expected: dict[StateKey, str | None]  # event name per key; None: the key must be absent


def unconflicted_join_in_one_chain_only_v12() -> Fixture:
    """Found by the differential run (seed 5589 of the first generator), shrunk; the auth difference.

    Bob makes the room invite-only (E1). Dave's topic E2 merges E1 with Bob's old join IMB; the state
    before it lost Charlie, Dave and Eve (their joins are in one side only and fail against E1), so E2 is
    rejected and the state after it is that merge. Charlie re-joins through Dave (E3) on top of E1.
    Resolving the two: Bob's join IMB is in both state sets but in the auth chain of only one (E1 cites
    it). With auth chains that leave the state events out, IMB and the events above it came into the auth
    difference, and v2.1's replay from an empty state dropped Dave's and Eve's joins. Synapse counts the
    state events in their own set's chain: they are not in the difference and the joins stand.
    """
    dag = Dag("12")
    dag.create("CREATE", "alice").join("IMA", "alice")
    dag.power_levels("IPOWER", "alice", {"bob": 100, "charlie": 0, "dave": 100, "eve": 75})
    dag.join_rules("IJR", "alice", "public")
    for who in ("bob", "charlie", "dave", "eve"):
        dag.join(f"IM{who[0].upper()}", who)
    allow = [{"type": "m.room_membership", "room_id": "!other:example.org"}]
    dag.add("IJR2", "m.room.join_rules", "alice", {"join_rule": "restricted", "allow": allow}, state_key="")
    dag.join_rules("E1", "bob", "invite")
    dag.topic("E2", "dave", prev=["IMB", "E1"])
    via_dave = {"join_authorised_via_users_server": user("dave")}
    dag.member("E3", "charlie", "join", content=via_dave, prev=["E1"])
    assert dag.rejected("E2") and not dag.rejected("E3")
    return Fixture(
        dag,
        [dag.states["E2"], dag.states["E3"]],
        {
            JR_KEY: "E1",
            member("bob"): "IMB",
            member("charlie"): "E3",
            member("dave"): "IMD",
            member("eve"): "IME",
        },
    )


def rejected_event_in_a_state_set(version: str) -> Fixture:
    """A rejected event is never admitted, even where it would pass (rejected flag; rooms/v2 "Rejected
    events" is loose, Synapse never admits one).

    Bob's topic T2 was rejected on receipt here (say our state before it had Bob demoted); another server
    accepted it and its state set holds it. T2 is later than Alice's T1 and passes against the resolved
    power levels, so replaying it "as usual" would make it the topic; Synapse keeps T1.
    """
    levels = {"bob": 50} if version == "12" else {"alice": 100, "bob": 50}
    dag = Dag(version).public_room("alice", members=["bob"], users=levels)
    dag.topic("T1", "alice", prev=["IMB"])
    dag.topic("T2", "bob", prev=["IMB"], rejected=True)
    elsewhere = dict(dag.states["IMB"])
    elsewhere[TOPIC] = dag.id("T2")
    return Fixture(dag, [dag.states["T1"], elsewhere], {TOPIC: "T1"})


def join_reached_only_through_unconflicted_power_levels_v11() -> Fixture:
    """Power events and "their auth chain that is in the full conflicted set" (step 1), read as Synapse
    and ruma read it: only events reached through auth events that are themselves in the set.

    Charlie's join IMC is conflicted (one server's state lacks Charlie) and is an auth event of Charlie's
    power levels PL1, which every state set holds. Alice's kick of Zara cites PL1. Taking the kick's whole
    auth chain put IMC among the power events, where it was applied before Alice's invite-only JR2 (older
    timestamp); Synapse orders IMC by the mainline after all power events, and it fails against JR2.
    """
    dag = Dag("11").public_room("alice", members=["zara", "charlie"], users={"alice": 100, "charlie": 100})
    dag.power_levels("PL1", "charlie", {"alice": 100, "charlie": 100}, content={"events_default": 0})
    dag.join_rules("JR2", "alice", "invite", prev=["PL1"])
    dag.member("KICK", "alice", "leave", target="zara", prev=["PL1"])
    with_charlie = dict(dag.states["KICK"])
    without_charlie = dict(dag.states["JR2"])
    without_charlie[JR_KEY] = dag.id("JR2")
    del without_charlie[member("charlie")]
    return Fixture(
        dag,
        [with_charlie, without_charlie],
        {JR_KEY: "JR2", member("charlie"): None, member("zara"): "KICK"},
    )


FIXTURES: dict[str, Callable[[], Fixture]] = {
    "unconflicted_join_in_one_chain_only_v12": unconflicted_join_in_one_chain_only_v12,
    "rejected_event_in_a_state_set_v11": lambda: rejected_event_in_a_state_set("11"),
    "rejected_event_in_a_state_set_v12": lambda: rejected_event_in_a_state_set("12"),
    "rejected_event_in_a_state_set_v10": lambda: rejected_event_in_a_state_set("10"),
    "join_reached_only_through_unconflicted_power_levels_v11": (
        join_reached_only_through_unconflicted_power_levels_v11
    ),
}
