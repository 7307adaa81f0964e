"""One batch holding both an event and its child: what the batch's single read of held events (taken
before anything is written) must still get right, on both databases: backward extremities, the state
after a parent of the same batch, the ordering depth and the stream positions of events held already."""

from __future__ import annotations

import itertools

from ranvier.storage.interfaces import EventToPersist
from ranvier.storage.sql import RoomStorage

from .test_events import new_room


async def test_an_outlier_and_its_child_in_one_batch(storage: RoomStorage) -> None:
    dag, state = await new_room(storage)
    dag.add("o", ["create"])
    dag.add("c", ["o"])
    ev = storage.events
    await ev.persist_events(
        dag.room_id,
        [
            EventToPersist(dag.by_name["o"], outlier=True),
            EventToPersist(dag.by_name["c"], state_before=state),
        ],
    )
    # The outlier written by this very batch is no timeline event: it is the hole before its child.
    assert await ev.get_backward_extremities(dag.room_id) == [dag.id("o")]
    assert set(await ev.get_forward_extremities(dag.room_id)) == {dag.id("create"), dag.id("c")}


async def test_deoutliering_a_parent_with_its_child_in_one_batch(storage: RoomStorage) -> None:
    dag, state = await new_room(storage)
    dag.add("o", ["create"])
    dag.add("c", ["o"])
    dag.add("d", ["c"])
    ev = storage.events
    [s_o] = await ev.persist_events(dag.room_id, [EventToPersist(dag.by_name["o"], outlier=True)])
    streams = await ev.persist_events(
        dag.room_id,
        [
            EventToPersist(dag.by_name["o"], state_before=state),
            EventToPersist(dag.by_name["c"], state_before_is_after_prev=True),
            EventToPersist(dag.by_name["d"], state_before_is_after_prev=True),
        ],
    )
    assert streams[0] > s_o  # held as an outlier when the batch began: a new position
    assert await ev.get_backward_extremities(dag.room_id) == []
    assert await ev.get_forward_extremities(dag.room_id) == [dag.id("d")]
    # The state after a parent written earlier in the same batch, and ordering depths parents first.
    assert await storage.state.get_state_ids_before(dag.id("d")) == state
    metas = [await ev.get_event_meta(dag.id(n)) for n in ("o", "c", "d")]
    assert all(m is not None for m in metas)
    depths = [m.topo_depth for m in metas if m is not None]
    assert depths == sorted(depths) and len(set(depths)) == 3


async def test_a_batch_repeating_held_events_returns_their_positions(storage: RoomStorage) -> None:
    dag, state = await new_room(storage)
    dag.add("a", ["create"])
    dag.add("b", ["a"])
    ev = storage.events
    first = await ev.persist_events(dag.room_id, [EventToPersist(dag.by_name["a"], state_before=state)])
    again = await ev.persist_events(
        dag.room_id,
        [
            EventToPersist(dag.by_name["a"], state_before=state),
            EventToPersist(dag.by_name["b"], state_before_is_after_prev=True),
        ],
    )
    assert again[0] == first[0] and again[1] > first[0]
    assert await ev.get_forward_extremities(dag.room_id) == [dag.id("b")]
    assert await storage.state.get_state_ids_before(dag.id("b")) == state


async def test_a_batch_larger_than_one_statement_reads_the_same(storage: RoomStorage) -> None:
    """Past 500 ids the batch's first read is split into its separate queries (persist.py
    ``_read_at_start``): a chain of 600 whose first event was a backward extremity (its child held) ends
    with the same extremities as a small batch would."""
    dag, state = await new_room(storage)
    names = [f"e{i}" for i in range(601)]
    dag.add(names[0], ["create"])
    for prev, name in itertools.pairwise(names):
        dag.add(name, [prev])
    ev = storage.events
    await ev.persist_events(dag.room_id, [EventToPersist(dag.by_name["e1"], state_before=state)])
    assert await ev.get_backward_extremities(dag.room_id) == [dag.id("e0")]
    batch = [EventToPersist(dag.by_name["e0"], state_before=state)]
    batch += [EventToPersist(dag.by_name[n], state_before_is_after_prev=True) for n in names[2:]]
    await ev.persist_events(dag.room_id, batch)
    assert await ev.get_backward_extremities(dag.room_id) == []
    # e0 had a live child before it was held (e1): no extremity; the chain's head is the only one.
    assert await ev.get_forward_extremities(dag.room_id) == [dag.id("e600")]
