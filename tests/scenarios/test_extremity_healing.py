"""Forward-extremity healing: when a room gathers more forward extremities than
``rooms.max_forward_extremities``, a local user ties them together with an ``org.matrix.dummy_event``."""

from __future__ import annotations

from .servers import eventually
from .test_inbound_send import Room, room  # noqa: F401 - the fixture


async def test_many_concurrent_branches_are_tied_together(room: Room) -> None:  # noqa: F811
    fork_point = room.last
    branches = [room.message(f"branch {i}", prev=fork_point) for i in range(12)]
    results = await room.send(branches)
    assert results == {p.event_id: {} for p in branches}

    async def healed() -> bool:
        return len(await room.hs.storage.events.get_forward_extremities(room.room_id)) == 1

    await eventually(healed)
    (tip,) = await room.hs.storage.events.get_forward_extremities(room.room_id)
    dummy = await room.hs.storage.events.get_event(tip)
    assert dummy is not None and dummy.type == "org.matrix.dummy_event"
    assert dummy.sender == room.alice.user_id
    assert set(dummy.prev_event_ids) == {p.event_id for p in branches}


async def test_a_few_branches_are_left_alone(room: Room) -> None:  # noqa: F811
    fork_point = room.last
    branches = [room.message(f"branch {i}", prev=fork_point) for i in range(3)]
    await room.send(branches)
    await room.hs.resident.wait_for_healing()
    assert len(await room.hs.storage.events.get_forward_extremities(room.room_id)) == 3
