"""The prev events of our join to a room still partial (MSC3706): points whose state we know.

The resident built our join on its forward extremities of then (the join's prev events) and send_join gave
us the state before the join, i.e. the state after those prev events (their resolution, when there are
several): the partial state. We hold neither the prev events nor the full state at them, so an event that
continues them, typically one the resident created between make_join and send_join (the join gap), used
to look like a hole in the DAG: the intake asked the resident for the state at it (``/state_ids`` then
``/state``), which is the room's full state (18.5 s for a 5,000-member Synapse room), only to show one
message. Instead, while the room is partial, the state after each of the join's prev events is taken to
be the state before our join, and an event continuing them is authorised against that like any event
received while partial; the resync re-checks it against the full state (``partial_resync``: an event
whose prev events are not held gets its partial state completed with the full state's members).

With several prev events the state after each one alone is not known; the state before the join stands in
for each (exact for an event citing all of them, which is what a resident creates) until the resync.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..storage.protocols.composite import HasEvents, HasPartialState, HasState
from .state import StateIds


class JoinPointStorage(HasPartialState, HasEvents, HasState, Protocol):
    """What the join points read from storage."""


@dataclass(frozen=True)
class JoinPoints:
    join_event_id: str
    prev_event_ids: frozenset[str]


class PartialJoinPoints:
    """The join's prev events of each partial room, read once per join (the join event never changes)."""

    def __init__(self, storage: JoinPointStorage) -> None:
        self._storage = storage
        self._by_join: dict[str, JoinPoints] = {}

    async def of(self, room_id: str) -> JoinPoints | None:
        """The join points of ``room_id`` if its state is partial, else None (a full room holds the state
        at every event it has; one whose resync completed re-checked everything already)."""
        if not await self._storage.partial_state.is_partial(room_id):
            return None
        record = await self._storage.partial_state.get(room_id)
        if record is None or record.complete:
            return None
        known = self._by_join.get(record.join_event_id)
        if known is None:
            join = await self._storage.events.get_event(record.join_event_id)
            if join is None:
                return None
            known = JoinPoints(join.event_id, frozenset(join.prev_event_ids))
            self._by_join[join.event_id] = known
        return known

    async def state_after(self, points: JoinPoints) -> StateIds:
        """The state taken as the state after each join point: the partial state before our join."""
        return await self._storage.state.get_state_ids_before(points.join_event_id)
