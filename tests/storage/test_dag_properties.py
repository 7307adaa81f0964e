"""Properties over random DAGs persisted in random orders and batches (hypothesis), on both databases:

- forward extremities are exactly the live events with no live child;
- backward extremities are exactly the prev events of accepted non-outliers that we hold as no non-outlier;
- the state before and after every non-outlier event is what a naive full-map computation gives.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ranvier.protocol.events import StateKey
from ranvier.storage.interfaces import EventToPersist
from ranvier.storage.sql import RoomStorage

from .conftest import ALICE, Dag

STATE_KEYS: list[StateKey] = [("m.room.topic", ""), ("m.room.name", ""), ("m.room.member", ALICE)]


@dataclass
class Node:
    prevs: list[int]
    state_key: StateKey | None
    outlier: bool
    rejected: bool
    soft_failed: bool
    backfilled: bool
    persisted: bool
    outlier_first: bool  # held as an outlier first, then de-outliered
    share_group: bool  # say "same as after the prev" instead of passing a map, when that is possible


@st.composite
def dags(draw: st.DrawFn) -> tuple[list[Node], list[list[int]]]:
    n = draw(st.integers(2, 18))
    nodes = [Node([], ("m.room.create", ""), False, False, False, False, True, False, False)]
    for i in range(1, n):
        prevs = draw(st.lists(st.integers(0, i - 1), min_size=1, max_size=3, unique=True))
        flag = draw(st.sampled_from(["live"] * 5 + ["outlier", "rejected", "soft_failed"]))
        nodes.append(
            Node(
                prevs=prevs,
                state_key=draw(st.sampled_from([None, None, *STATE_KEYS])),
                outlier=flag == "outlier",
                rejected=flag == "rejected",
                soft_failed=flag == "soft_failed",
                backfilled=draw(st.booleans()) and draw(st.booleans()),
                persisted=draw(st.integers(0, 9)) > 0,
                outlier_first=flag != "outlier" and draw(st.integers(0, 5)) == 0,
                share_group=draw(st.booleans()),
            )
        )
    order = draw(st.permutations([i for i in range(n) if nodes[i].persisted]))
    cuts = sorted(draw(st.lists(st.integers(0, len(order)), max_size=4)))
    batches = [list(order[a:b]) for a, b in zip([0, *cuts], [*cuts, len(order)], strict=True)]
    return nodes, [b for b in batches if b]


def naive_states(
    nodes: list[Node], ids: list[str]
) -> tuple[list[dict[StateKey, str]], list[dict[StateKey, str]]]:
    """State before each event: the prevs' states after, merged left to right; after adds the event's key."""
    before: list[dict[StateKey, str]] = []
    after: list[dict[StateKey, str]] = []
    for i, node in enumerate(nodes):
        state: dict[StateKey, str] = {}
        for p in node.prevs:
            state.update(after[p])
        before.append(state)
        new = dict(state)
        if node.state_key is not None and not node.rejected:
            new[node.state_key] = ids[i]
        after.append(new)
    return before, after


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=dags())
async def test_extremities_and_state_match_brute_force(storage: RoomStorage, case: tuple) -> None:
    nodes, batches = case
    dag = Dag()
    await storage.rooms.store_room(dag.room_id, "11", ALICE)
    for i, node in enumerate(nodes):
        etype, skey = node.state_key if node.state_key else ("m.room.message", None)
        dag.add(str(i), [str(p) for p in node.prevs], etype=etype, state_key=skey, content={"n": i})
    ids = [dag.id(str(i)) for i in range(len(nodes))]
    before, after = naive_states(nodes, ids)

    with_state: set[int] = set()  # events held as non-outliers so far
    for batch in batches:
        if any(nodes[i].outlier_first for i in batch):
            await storage.events.persist_events(
                dag.room_id,
                [EventToPersist(dag.by_name[str(i)], outlier=True) for i in batch if nodes[i].outlier_first],
            )
        items = []
        for i in batch:
            node = nodes[i]
            state: dict = {}
            if not node.outlier:
                # With one prev held with its state, the state before is the state after it: say so in one
                # of the two cheap ways (the group id, or the flag); otherwise pass the full map.
                state = {"state_before": before[i]}
                if node.share_group and len(node.prevs) == 1 and node.prevs[0] in with_state:
                    state = {"state_before_is_after_prev": True}
                    if i % 2:
                        group = await storage.state.get_state_group_after(ids[node.prevs[0]])
                        state = {"state_group_before": group} if group is not None else state
                with_state.add(i)
            items.append(
                EventToPersist(
                    dag.by_name[str(i)],
                    outlier=node.outlier,
                    rejected_reason="rejected" if node.rejected else None,
                    soft_failed=node.soft_failed,
                    backfilled=node.backfilled,
                    **state,
                )
            )
        streams = await storage.events.persist_events(dag.room_id, items)
        for i, stream in zip(batch, streams, strict=True):
            assert (stream < 0) == nodes[i].backfilled

    held = {i for b in batches for i in b}
    non_outliers = {i for i in held if not nodes[i].outlier}
    live = {i for i in non_outliers if not nodes[i].rejected and not nodes[i].soft_failed}
    forward = {i for i in live if not any(i in nodes[c].prevs for c in live)}
    backward = {p for i in non_outliers if not nodes[i].rejected for p in nodes[i].prevs} - non_outliers
    assert set(await storage.events.get_forward_extremities(dag.room_id)) == {ids[i] for i in forward}
    assert set(await storage.events.get_backward_extremities(dag.room_id)) == {ids[i] for i in backward}

    cold = await RoomStorage.open(storage.db, cached_state_entries=0)
    for i in non_outliers:
        for store in (storage, cold):
            assert await store.state.get_state_ids_before(ids[i]) == before[i]
            assert await store.state.get_state_ids_after(ids[i]) == after[i]
        assert await cold.state.get_state_ids_after(ids[i], keys=STATE_KEYS[:2]) == {
            k: v for k, v in after[i].items() if k in STATE_KEYS[:2]
        }
    timeline = await storage.stream.get_recent_events(dag.room_id, 100)
    assert {e.event_id for e in timeline} == {ids[i] for i in live}
