"""State of rooms as the room layer needs it: state before an event, resolution, events of a state map.

Resolution itself is the pure core (ranvier.protocol.state_res); here we fetch what it needs from storage
first (sans-I/O: fetch, then compute) and run it in a worker thread so a big resolution does not stall
the event loop. Each room keeps its own AuthChainIndex so auth chains are computed once per event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from typing import Any, Protocol

from ..logs.tracing import Tracing
from ..protocol.events import Pdu, StateKey
from ..protocol.room_versions import RoomVersion
from ..protocol.state_res import AuthChainIndex, DictEventSource, resolve_state
from ..storage.interfaces import EventToPersist
from ..storage.protocols.composite import HasEvents, HasState

logger = logging.getLogger(__name__)

StateIds = dict[StateKey, str]


class StateServiceStorage(HasEvents, HasState, Protocol):
    """What rooms/state.py asks of storage."""


def state_after(item: EventToPersist) -> StateIds:
    """The state after a non-outlier event of a batch: the state before it, plus the event itself if it
    is an accepted state event (a rejected event changes nothing)."""
    assert item.state_before is not None, "a non-outlier needs the state before it"
    after = dict(item.state_before)
    pdu = item.pdu
    if item.rejected_reason is None and pdu.state_key is not None:
        after[(pdu.type, pdu.state_key)] = pdu.event_id
    return after


def state_after_map(before: StateIds, item: EventToPersist) -> StateIds:
    """``state_after`` from the state before the event, given apart. When the event changes nothing (a
    message, a rejected event) this is ``before`` itself, not a copy: callers never mutate these maps, and
    a room of 100,000 state events is not copied per message."""
    pdu = item.pdu
    if item.rejected_reason is not None or pdu.state_key is None:
        return before
    if before.get((pdu.type, pdu.state_key)) == pdu.event_id:
        return before
    after = dict(before)
    after[(pdu.type, pdu.state_key)] = pdu.event_id
    return after


# Rooms whose AuthChainIndex is kept (the most recently resolved ones): an index holds the auth chain of
# every event a resolution touched, so one per room ever resolved would grow without bound.
MAX_ROOM_INDEXES = 256


class StateService:
    def __init__(self, storage: StateServiceStorage, max_room_indexes: int = MAX_ROOM_INDEXES) -> None:
        self._storage = storage
        # room id -> (its index, the lock that keeps it to one resolution at a time: AuthChainIndex is not
        # thread-safe), least recently used first. Evicting a pair while it is in use is safe: the holder
        # keeps its objects, and a later resolution of that room starts a fresh pair.
        self._indexes: OrderedDict[str, tuple[AuthChainIndex, asyncio.Lock]] = OrderedDict()
        self._max_room_indexes = max(1, max_room_indexes)
        # Told how long each resolution of several state sets took (the metrics' histogram).
        self.on_resolved: Callable[[float], None] | None = None
        # Set by the app: a span per resolution (with the conflicted-set size) when tracing is on.
        self.tracing: Tracing | None = None

    def _index_for(self, room_id: str) -> tuple[AuthChainIndex, asyncio.Lock]:
        pair = self._indexes.get(room_id)
        if pair is None:
            pair = self._indexes[room_id] = (AuthChainIndex(), asyncio.Lock())
            while len(self._indexes) > self._max_room_indexes:
                self._indexes.popitem(last=False)
        else:
            self._indexes.move_to_end(room_id)
        return pair

    async def state_after(self, event_id: str) -> StateIds:
        return await self._storage.state.get_state_ids_after(event_id)

    async def state_before_prev_events(
        self, room_id: str, room_version: RoomVersion, prev_event_ids: Sequence[str]
    ) -> StateIds:
        """The state before a new event with these prev_events: the resolution of the states after them."""
        states = [await self.state_after(e) for e in prev_event_ids]
        return await self.resolve(room_id, room_version, states)

    async def resolve(
        self,
        room_id: str,
        room_version: RoomVersion,
        state_sets: Sequence[StateIds],
        unpersisted: Iterable[Pdu] = (),
    ) -> StateIds:
        """Resolve ``state_sets``; ``unpersisted`` are events they cite that storage does not hold yet
        (the batch being persisted)."""
        unique: list[StateIds] = []
        for s in state_sets:
            if s not in unique:
                unique.append(s)
        if not unique:
            return {}
        if len(unique) == 1:
            return dict(unique[0])
        source = await self._load_for_resolution(unique, list(unpersisted))
        index, lock = self._index_for(room_id)
        async with lock:
            # CPU work in a worker thread: pure Python holds the GIL, but the interpreter switches threads
            # every few ms, so requests keep being served while a big room resolves.
            start = time.perf_counter()
            span: Any = nullcontext()
            if self.tracing is not None and self.tracing.enabled:
                keys = set().union(*unique)
                conflicted = sum(1 for k in keys if len({s.get(k) for s in unique}) > 1)
                attributes = {"ranvier.room_id": room_id, "ranvier.state_sets": len(unique)}
                attributes["ranvier.conflicted_keys"] = conflicted
                span = self.tracing.internal_span("resolve state", attributes)
            with span:
                resolved = await asyncio.to_thread(resolve_state, room_version, unique, source, index=index)
            if self.on_resolved is not None:
                self.on_resolved(time.perf_counter() - start)
            return resolved

    async def _load_for_resolution(
        self, state_sets: Sequence[StateIds], unpersisted: list[Pdu]
    ) -> DictEventSource:
        ids: set[str] = set()
        for s in state_sets:
            ids.update(s.values())
        extra = {p.event_id: p for p in unpersisted}
        ids -= extra.keys()
        auth_roots = ids | {a for p in unpersisted for a in p.auth_event_ids}
        chain = await self._storage.events.get_auth_chain_ids(list(auth_roots))
        ids.update(a for p in unpersisted for a in p.auth_event_ids)
        ids.update(chain)
        ids -= extra.keys()
        # Events of state sets and their auth chains are accepted events by construction (an event citing
        # a rejected auth event is itself rejected). Should a rejected one appear all the same, it is loaded
        # with its verdict: resolution orders it but never admits it (the rejected flag travels with it).
        verdicts = await self._storage.events.get_events_with_verdicts(list(ids))
        events = {event_id: pdu for event_id, (pdu, _) in verdicts.items()}
        rejected = [event_id for event_id, (_, reason) in verdicts.items() if reason is not None]
        events.update(extra.items())  # EventId keys, as str
        return DictEventSource(events, rejected=[e for e in rejected if e not in extra])

    async def load_state_events(self, state: Mapping[StateKey, str]) -> dict[StateKey, Pdu]:
        events = await self._storage.events.get_events(list(state.values()), allow_rejected=True)
        return {k: events[v] for k, v in state.items() if v in events}

    async def current_state_events(
        self, room_id: str, keys: Iterable[StateKey] | None = None
    ) -> dict[StateKey, Pdu]:
        if keys is None:
            state = await self._storage.state.get_current_state_ids(room_id)
        else:
            # Key by key: a few indexed lookups, not the room's whole current state (its members).
            state = {}
            for key in set(keys):
                event_id = await self._storage.state.get_current_state_id(room_id, *key)
                if event_id is not None:
                    state[key] = event_id
        return await self.load_state_events(state)
