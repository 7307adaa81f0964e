"""Properties of resolve_state over random small forked DAGs (hypothesis)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ranvier.protocol.auth import check_auth_rules
from ranvier.protocol.events import StateKey
from ranvier.protocol.state_res import AuthChainIndex, resolve_state
from ranvier.protocol.state_res.auth_chain import auth_event_ids
from tests.protocol.dag import Dag

USERS = ["alice", "bob", "charlie", "dave", "eve"]
OPS = ["topic", "power_levels", "join", "leave", "kick", "ban", "join_rules", "name"]


def _levels(version: str, levels: dict[str, int]) -> dict[str, int]:
    return levels if version == "12" else {"alice": 100, **levels}


@st.composite
def forked_dags(draw: st.DrawFn, version: str) -> tuple[Dag, list[str]]:
    """A public room, then 2-3 forks of 1-5 random events each, sometimes merged; returns the fork tips.

    Events that the rules refuse are kept but marked rejected, like a server would."""
    dag = Dag(version).public_room("alice", members=["bob", "charlie"], users=_levels(version, {"bob": 50}))
    tips = []
    counter = 0
    for _ in range(draw(st.integers(2, 3))):
        base = draw(st.sampled_from(["IJR", "IMB", "IMC"]))
        prev = [base]
        for _ in range(draw(st.integers(1, 5))):
            counter += 1
            name = f"E{counter}"
            op = draw(st.sampled_from(OPS))
            sender = draw(st.sampled_from(USERS))
            target = draw(st.sampled_from(USERS))
            if op == "topic":
                dag.topic(name, sender, prev=prev)
            elif op == "name":
                dag.add(name, "m.room.name", sender, {"name": name}, state_key="", prev=prev)
            elif op == "power_levels":
                levels = {u: draw(st.sampled_from([0, 50, 100])) for u in ("bob", "charlie", "dave")}
                dag.power_levels(name, sender, _levels(version, levels), prev=prev)
            elif op == "join":
                dag.join(name, sender, prev=prev)
            elif op == "leave":
                dag.member(name, sender, "leave", prev=prev)
            elif op in ("kick", "ban"):
                dag.member(name, sender, "leave" if op == "kick" else "ban", target=target, prev=prev)
            else:
                dag.join_rules(name, sender, draw(st.sampled_from(["public", "invite"])), prev=prev)
            prev = [name]
            if tips and draw(st.booleans()) and draw(st.booleans()):
                counter += 1
                merge = f"M{counter}"
                dag.topic(merge, "alice", prev=[name, draw(st.sampled_from(tips))])
                prev = [merge]
        tips.append(prev[0])
    return dag, tips


def _states(dag: Dag, tips: list[str]) -> list[dict[StateKey, str]]:
    return [dag.states[t] for t in tips]


SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(data=st.data(), version=st.sampled_from(["1", "11", "12"]))
def test_independent_of_input_order(data: st.DataObject, version: str) -> None:
    dag, tips = data.draw(forked_dags(version))
    states = _states(dag, tips)
    expected = resolve_state(dag.room_version, states, dag.source)
    permuted = data.draw(st.permutations(states))
    shuffled = [dict(data.draw(st.permutations(list(s.items())))) for s in permuted]
    assert resolve_state(dag.room_version, shuffled, dag.source, index=AuthChainIndex()) == expected
    # Keeping an index across calls must not change anything either.
    assert resolve_state(dag.room_version, shuffled, dag.source, index=dag.index) == expected


@SETTINGS
@given(data=st.data(), version=st.sampled_from(["1", "11", "12"]))
def test_single_and_repeated_state_set_unchanged(data: st.DataObject, version: str) -> None:
    dag, tips = data.draw(forked_dags(version))
    for state in _states(dag, tips):
        assert resolve_state(dag.room_version, [state], dag.source) == state
        assert resolve_state(dag.room_version, [state, dict(state)], dag.source) == state


@SETTINGS
@given(data=st.data(), version=st.sampled_from(["11", "12"]))
def test_resolved_events_pass_auth_and_keep_unconflicted_state(data: st.DataObject, version: str) -> None:
    dag, tips = data.draw(forked_dags(version))
    states = _states(dag, tips)
    resolved = resolve_state(dag.room_version, states, dag.source)
    for key, event_id in resolved.items():
        event = dag.source.get_event(event_id)
        assert event is not None and event.state_tuple == key
        # Every resolved event passes the rules against its own (not rejected) auth events.
        own = {
            a.state_tuple: a
            for i in auth_event_ids(event)
            if (a := dag.source.get_event(i)) is not None and a.state_tuple and not dag.source.is_rejected(i)
        }
        check_auth_rules(event, own)
    # Unconflicted state is kept (step 5), and nothing outside the inputs' history appears.
    for key, event_id in states[0].items():
        if all(s.get(key) == event_id for s in states[1:]):
            assert resolved[key] == event_id
    assert resolved[("m.room.create", "")] == dag.id("CREATE")
    # Resolving the result with any input again is stable: the result is a fixed point.
    assert resolve_state(dag.room_version, [resolved, resolved], dag.source) == resolved
