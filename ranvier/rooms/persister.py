"""The one way events enter a room's history: persist a batch atomically with the new current state.

Callers hold the room's lock (``room_lock``) from computing an event's state to persisting it, so two
events of one room never race on forward extremities or current state. In-transaction hooks run inside
the persist transaction, so what they write commits with the events or not at all (the federation outbox:
S2S sends must survive a crash right after the commit). After a commit, listeners are told (the sync
notifier, the federation sender's wake-up, extremity healing).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from contextlib import nullcontext
from typing import Any

from ..logs.tracing import Tracing
from ..protocol.events import StateKey
from ..protocol.room_versions import RoomVersion
from ..storage.interfaces import EventToPersist, StateDelta
from ..storage.protocols.composite import HasEvents
from .state import StateIds, StateService, state_after

logger = logging.getLogger(__name__)

Placement = Callable[[str, Sequence[EventToPersist]], Sequence[EventToPersist]]
PersistedListener = Callable[[str, Sequence[EventToPersist]], Awaitable[None]]
# (transaction, room id, the events written with their stream orderings): see storage's ``InTxnHook``.
TxnHook = Callable[[Any, str, list[tuple[EventToPersist, int]]], Awaitable[None]]


class EventPersister:
    def __init__(self, storage: HasEvents, state: StateService) -> None:
        self._storage = storage
        self._state = state
        self._locks: dict[str, asyncio.Lock] = {}
        self._listeners: list[PersistedListener] = []
        self._txn_hooks: list[TxnHook] = []
        self._out_of_band_hooks: list[tuple[TxnHook, PersistedListener | None]] = []
        self._placement: Placement | None = None
        # Told how long each batch took to write (the metrics' persist histogram).
        self.on_batch_seconds: Callable[[float], None] | None = None
        # Set by the app: a span per persisted batch when tracing is on.
        self.tracing: Tracing | None = None
        # While a batch's listeners run: the room's forward extremities as predicted for after the batch
        # (None where the batch changed no timeline), so a listener need not read them back.
        self._predicted: dict[str, frozenset[str]] = {}

    def room_lock(self, room_id: str) -> asyncio.Lock:
        return self._locks.setdefault(room_id, asyncio.Lock())

    def add_listener(self, listener: PersistedListener) -> None:
        self._listeners.append(listener)

    def set_placement(self, placement: Placement) -> None:
        """Let ``placement`` choose topological positions for a batch's events before they are persisted
        (the joining side uses it to put the join-gap events before the join)."""
        self._placement = placement

    def predicted_extremities(self, room_id: str) -> frozenset[str] | None:
        """For a listener of ``persist``: the forward extremities of ``room_id`` after the batch being
        told of, as predicted before writing it (exact but for an event that had children before it was
        held, which storage does not make an extremity); None when not known (no timeline event)."""
        return self._predicted.get(room_id)

    def add_txn_hook(self, hook: TxnHook) -> None:
        """Run ``hook`` inside every persist transaction; if it raises, the batch is not persisted."""
        self._txn_hooks.append(hook)

    def add_out_of_band_hook(self, hook: TxnHook, listener: PersistedListener | None = None) -> None:
        """Run ``hook`` in the transaction of ``persist_out_of_band`` too, and ``listener`` (if any) after
        it (the appservice queue: a bridge hears of an invite to a room the server is not in; push
        actions: the invitee is notified)."""
        self._out_of_band_hooks.append((hook, listener))

    async def persist_out_of_band(
        self, room_id: str, batch: Sequence[EventToPersist], new_current_state: Any
    ) -> None:
        """Persist out-of-band membership events (outliers of a room we are not in: an invite from another
        server, our rejection of one) with their current-state delta. The caller holds room_lock. Only
        the out-of-band hooks run: the others are about rooms we are in."""
        hooks = list(self._out_of_band_hooks)

        async def in_txn(txn: Any, written: list[tuple[EventToPersist, int]]) -> None:
            for hook, _ in hooks:
                await hook(txn, room_id, written)

        await self._storage.events.persist_events(
            room_id, list(batch), new_current_state=new_current_state, on_txn=in_txn if hooks else None
        )
        for _, listener in hooks:
            if listener is None:
                continue
            try:
                await listener(room_id, batch)
            except Exception:
                logger.exception("listener failed after persisting out-of-band events in %s", room_id)

    async def persist(
        self,
        room_id: str,
        room_version: RoomVersion,
        batch: Sequence[EventToPersist],
        extra_txn_hook: TxnHook | None = None,
        extremities: Collection[str] | None = None,
    ) -> None:
        """Persist ``batch`` (in order) and the room's new current state. The caller holds room_lock.

        ``extra_txn_hook`` runs inside the transaction too, for this batch only (e.g. queueing a remote
        join we accepted for the room's other servers, in the same commit as the join). ``extremities``:
        the room's stored forward extremities when the caller read them under the lock already (the
        intake does, once per run), else they are read here."""
        if self._placement is not None:
            batch = self._placement(room_id, batch)
        new_current, predicted = await self._new_current_state(room_id, room_version, batch, extremities)
        hooks = list(self._txn_hooks)
        if extra_txn_hook is not None:
            hooks.append(extra_txn_hook)

        async def in_txn(txn: Any, written: list[tuple[EventToPersist, int]]) -> None:
            for hook in hooks:
                await hook(txn, room_id, written)

        start = time.perf_counter()
        attributes = {"ranvier.room_id": room_id, "ranvier.events": len(batch)}
        with self.tracing.internal_span("persist events", attributes) if self.tracing else nullcontext():
            await self._storage.events.persist_events(
                room_id, list(batch), new_current_state=new_current, on_txn=in_txn if hooks else None
            )
        if self.on_batch_seconds is not None:
            self.on_batch_seconds(time.perf_counter() - start)
        if predicted is not None:
            self._predicted[room_id] = predicted
        try:
            for listener in self._listeners:
                try:
                    await listener(room_id, batch)
                except Exception:
                    logger.exception("listener failed after persisting events in %s", room_id)
        finally:
            self._predicted.pop(room_id, None)

    async def _new_current_state(
        self,
        room_id: str,
        room_version: RoomVersion,
        batch: Sequence[EventToPersist],
        stored_extremities: Collection[str] | None,
    ) -> tuple[StateIds | StateDelta | None, frozenset[str] | None]:
        """The resolution of the states after the room's forward extremities once ``batch`` is in, and
        those extremities.

        The extremities are predicted exactly as storage will compute them: the old ones, minus every
        event a new timeline event cites, plus new timeline events that nothing in the batch cites.
        None means the current state does not change. When the batch extends the room's one extremity
        into one new extremity by a chain of events whose state is that after their prev, the answer is
        the chain's state events as a delta: the current state is the state after the old extremity, so
        neither the whole map nor its comparison with the stored one is needed.
        """
        timeline = [
            item
            for item in batch
            if not item.outlier
            and item.rejected_reason is None
            and not item.soft_failed
            and not item.backfilled
        ]
        if not timeline:
            return None, None
        if stored_extremities is None:
            stored_extremities = await self._storage.events.get_forward_extremities(room_id)
        old = set(stored_extremities)
        cited = {p for item in timeline for p in item.pdu.prev_event_ids}
        new_ids = {item.pdu.event_id for item in timeline}
        extremities = frozenset((old - cited) | (new_ids - cited))
        queued: dict[str, EventToPersist] = {item.pdu.event_id: item for item in batch if not item.outlier}
        if len(old) == 1 and len(extremities) == 1:
            (head,) = extremities
            chain, reached = _chain_back(head, queued)
            if reached is not None and reached in old:
                return StateDelta(changed=_state_changes(chain)), extremities
        states = []
        for event_id in sorted(extremities):
            if event_id in queued:
                states.append(await self._after_queued(event_id, queued))
            else:
                states.append(await self._state.state_after(event_id))
        resolved = await self._state.resolve(room_id, room_version, states, [item.pdu for item in batch])
        return resolved, extremities

    async def _after_queued(self, event_id: str, queued: dict[str, EventToPersist]) -> StateIds:
        """The state after a queued event. Items whose state is that after their prev event
        (``state_before_is_after_prev``) carry no map: walk back to one that does (or to a held event)
        and apply the state events on the way, so a chain of 50 events costs one copy of the map (none
        for messages) rather than one per event."""
        chain, reached = _chain_back(event_id, queued)
        if reached is not None:
            base = await self._state.state_after(reached)
        else:
            base = state_after(chain.pop())  # raises for an item carrying only a state group
        changes = _state_changes(chain)
        if all(base.get(k) == v for k, v in changes.items()):
            return base
        return {**base, **changes}


def _chain_back(event_id: str, queued: dict[str, EventToPersist]) -> tuple[list[EventToPersist], str | None]:
    """The queued events from ``event_id`` back through prev events while their state is that after
    their prev (newest first), and the held event reached (None: the chain ends at its last item, a
    queued event that carries its own state before)."""
    chain: list[EventToPersist] = []
    current = event_id
    while True:
        item = queued.get(current)
        if item is None:
            return chain, current
        chain.append(item)
        if not item.state_before_is_after_prev:
            return chain, None
        current = item.pdu.prev_event_ids[0]


def _state_changes(chain: list[EventToPersist]) -> dict[StateKey, str]:
    """What a chain (newest first) of events changes in the state: its accepted state events, the newest
    of each key winning."""
    return {
        (item.pdu.type, item.pdu.state_key): item.pdu.event_id
        for item in reversed(chain)
        if item.rejected_reason is None and item.pdu.state_key is not None
    }
