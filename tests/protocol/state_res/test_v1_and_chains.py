"""Room v1 resolution, auth chains and the auth difference."""

from __future__ import annotations

from ranvier.protocol.state_res import AuthChainIndex, auth_difference, conflicted_subgraph
from tests.protocol.dag import PL_KEY, Dag, user

TOPIC = ("m.room.topic", "")


def test_v1_power_levels_conflict_takes_the_later_allowed_change() -> None:
    # v1: conflicting power levels sorted by ascending depth; IPOWER first, then PL2 (allowed) replaces it;
    # Bob's ban is then checked against PL2, where he has 0, and the older join stays.
    dag = Dag("1").public_room("alice", members=["bob", "zara"], users={"bob": 50})
    dag.member("BAN", "bob", "ban", target="zara", prev=["IMZ"])
    dag.power_levels("PL2", "alice", {"alice": 100, "bob": 0}, prev=["IMZ"])
    resolved = dag.resolve("BAN", "PL2")
    assert resolved[PL_KEY] == "PL2"
    assert resolved[("m.room.member", user("zara"))] == "IMZ"


def test_v1_ordinary_conflict_takes_the_deepest_allowed_event() -> None:
    # The topic of greatest depth wins, unless it fails auth in R (Bob's topic after his demotion).
    dag = Dag("1").public_room("alice", members=["bob"], users={"bob": 50})
    dag.topic("T1", "alice", prev=["IMB"])
    dag.topic("T2", "alice", prev=["IMB"])
    dag.topic("T3", "alice")
    assert dag.resolve("T1", "T3")[TOPIC] == "T3"
    dag.power_levels("PL2", "alice", {"alice": 100, "bob": 0}, prev=["IMB"])
    dag.topic("TB1", "bob", prev=["IMB"])
    dag.topic("TB2", "bob")
    # TB2 is deeper than T1 but fails against the resolved PL2 (Bob has 0): T1 is picked.
    resolved = dag.resolve("T1", "TB2", "PL2")
    assert resolved[PL_KEY] == "PL2"
    assert resolved[TOPIC] == "T1"
    # Only Bob's topics conflict and neither passes: the lowest ranked one is kept.
    assert dag.resolve("TB1", "TB2", "PL2")[TOPIC] == "TB1"


def test_v1_key_in_only_some_sets_is_not_a_conflict() -> None:
    dag = Dag("1").public_room("alice", members=["bob"])
    dag.topic("T", "alice", prev=["IMB"])
    dag.join("IMC", "charlie", prev=["IMB"])
    resolved = dag.resolve("T", "IMC")
    assert resolved[TOPIC] == "T"
    assert resolved[("m.room.member", user("charlie"))] == "IMC"


def test_auth_chain_follows_auth_events_and_v12_implies_create() -> None:
    for version in ("11", "12"):
        dag = Dag(version).public_room("alice", members=["bob"])
        dag.topic("T", "bob")
        index = AuthChainIndex()
        chain = index.chain(dag.id("T"), dag.source)
        assert {dag.names[e] for e in chain} == {"CREATE", "IMA", "IPOWER", "IJR", "IMB"}
        assert dag.id("T") not in chain
        assert index.chain(dag.id("CREATE"), dag.source) == frozenset()
        # A missing event has an empty chain, and chains through it are not memoised.
        assert index.chain("$missing", dag.source) == frozenset()


def test_auth_chain_of_missing_auth_event_is_not_memoised() -> None:
    dag = Dag("11").public_room("alice", members=["bob"])
    dag.topic("T", "bob")
    from ranvier.protocol.state_res import DictEventSource

    partial = DictEventSource({e.event_id: e for n, e in dag.events.items() if n != "IPOWER"})
    index = AuthChainIndex()
    short = index.chain(dag.id("T"), partial)
    assert dag.id("IPOWER") in short and dag.id("IMA") in short  # IMA via IMB and IJR, not IPOWER
    assert index.chain(dag.id("T"), dag.source) == AuthChainIndex().chain(dag.id("T"), dag.source)


def test_auth_difference_matches_the_definition() -> None:
    # The full auth chain of a state set counts the state events themselves (interop with Synapse and
    # ruma; see auth_difference). Bob's and Zara's joins are in the state of both forks, and in BAN's auth
    # chain only: with chains that left the state events out they were (wrongly, for the network) in the
    # difference.
    dag = Dag("11").public_room("alice", members=["bob", "zara"], users={"alice": 100, "bob": 50})
    dag.member("BAN", "bob", "ban", target="zara", prev=["IMZ"])
    dag.power_levels("PL2", "alice", {"alice": 100, "bob": 0}, prev=["IMZ"])
    s1, s2 = dag.states["BAN"], dag.states["PL2"]
    index = AuthChainIndex()

    def full_chain(state: dict[tuple[str, str], str]) -> set[str]:
        out: set[str] = set(state.values())
        for e in state.values():
            out |= index.chain(e, dag.source)
        return out

    c1, c2 = full_chain(s1), full_chain(s2)
    expected = (c1 | c2) - (c1 & c2)
    unconflicted = [v for k, v in s1.items() if s2.get(k) == v]
    conflicted = [{v for k, v in s.items() if s1.get(k) != s2.get(k)} for s in (s1, s2)]
    got = auth_difference(index, dag.source, unconflicted, conflicted)
    assert got == expected
    assert {dag.names[e] for e in got} == {"BAN", "PL2"}


def test_conflicted_subgraph_holds_the_events_between_conflicted_events() -> None:
    dag = Dag("12").public_room("alice", members=["bob", "charlie"])
    dag.power_levels("PL1", "alice", {"bob": 50})
    dag.power_levels("PL2", "bob", {"bob": 50, "charlie": 50})
    dag.topic("T", "charlie")
    sub = conflicted_subgraph(AuthChainIndex(), dag.source, {dag.id("IPOWER"), dag.id("PL2")})
    # PL2 -> PL1 -> IPOWER, and PL2 -> IMB (Bob's join) -> IJR -> IPOWER; not IMA, CREATE or T.
    assert {dag.names[e] for e in sub} == {"IPOWER", "PL1", "PL2", "IMB", "IJR"}
