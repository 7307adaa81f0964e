"""Backfill: a room's older history from another server (S2S "Backfilling and retrieving missing events").

Our copy of a room joined over federation starts at our join; a client paging ``/messages`` backwards past
the oldest event we hold reaches the room's *backward extremities* (prev events we do not hold). We then
ask a server in the room for the events before them with ``/backfill`` and persist what passes the checks
as backfilled events: negative stream orderings, so ``/sync`` never reports them as new, while
``/messages`` (ordered by depth) finds them where the DAG puts them.

Each fetched event goes through S2S "Checks performed on receipt of a PDU":
  1-3. format, signatures, content hash            RemoteEvents.verified
  4.   auth against its own auth events            pdu_checks.check_against_auth_events (missing ones
                                                   fetched as outliers)
  5.   auth against the state before it            pdu_checks.check_against_state -> rejected
  (6, soft failure, is about the room's current state: it does not apply to history.)
The state before an event is the state after its prev events when we know it (older events of the same
chunk, or held non-outliers), resolved if they differ. At the chunk's old edge, where a prev event is not
held, the server is asked for the state before the event itself (``/state_ids``, one request per edge
event, usually one per chunk); the events it names are fetched and checked as outliers.

The room lock is held while the chunk is judged and persisted (not during the ``/backfill`` request), so no
local event can pick a half-persisted chunk's event as a forward extremity.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from ..federation.client import FederationClient, FederationError
from ..federation.keys import Keyring
from ..protocol.events import Pdu
from ..protocol.room_versions import RoomVersion
from ..storage.interfaces import EventToPersist
from ..storage.protocols.composite import HasEvents, HasRooms, HasState
from .incoming_fetch import RemoteEvents
from .pdu_checks import (
    CREATE_KEY,
    MISSING_AUTH_EVENTS,
    auth_order,
    check_against_auth_events,
    check_against_state,
    dag_order,
    may_redact,
)
from .persister import EventPersister
from .state import StateIds, StateService, state_after

logger = logging.getLogger(__name__)

MAX_BACKFILL = 100  # events per /backfill request (what our own /backfill serves at most)
MAX_EXTREMITIES = 20  # ids in one request's ``v``
# After a round that brought nothing for the same extremities, how long before asking again (seconds):
# a room whose history no server will give must not cost a remote request on every /messages.
RETRY_FRUITLESS_AFTER = 60.0


class BackfillStorage(HasRooms, HasEvents, HasState, Protocol):
    """What rooms/backfill.py asks of storage."""


class _Skip(Exception):
    """The event cannot be judged (e.g. the state before it could not be had): it is not persisted."""


@dataclass
class _Run:
    """One chunk being judged: its events and their verdicts (None: accepted), the state after each
    non-outlier, and the batch to persist (parents first)."""

    room_id: str
    rv: RoomVersion
    origin: str
    known: dict[str, tuple[Pdu, str | None]] = field(default_factory=dict)
    after: dict[str, StateIds] = field(default_factory=dict)
    batch: list[EventToPersist] = field(default_factory=list)

    def add(self, item: EventToPersist) -> None:
        pdu = item.pdu
        if not item.outlier:
            # The non-outlier replaces an outlier copy queued earlier (storage keeps the first of an id).
            self.batch = [i for i in self.batch if i.pdu.event_id != pdu.event_id]
            self.after[pdu.event_id] = state_after(item)
        self.batch.append(item)
        self.known[pdu.event_id] = (pdu, item.rejected_reason)


class Backfiller:
    def __init__(
        self,
        storage: BackfillStorage,
        state: StateService,
        persister: EventPersister,
        client: FederationClient,
        keyring: Keyring,
        server_name: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._storage = storage
        self._state = state
        self._persister = persister
        self._client = client
        self._remote = RemoteEvents(client, keyring)
        self.server_name = server_name
        self._clock = clock
        self._locks: dict[str, asyncio.Lock] = {}
        self._fruitless: dict[str, tuple[frozenset[str], float]] = {}

    async def backfill(self, room_id: str, limit: int, extremities: Sequence[str] | None = None) -> bool:
        """Fetch up to ``limit`` events before the room's backward extremities (or those of
        ``extremities`` that still are: a hole a client's page reached) from a server in the room.
        True if any event was added to the room's history (the caller reads its page again)."""
        async with self._locks.setdefault(room_id, asyncio.Lock()):
            chosen = await self._still_backward(room_id, extremities)
            if not chosen:
                return False  # we hold the room back to its creation, or the hole was filled meanwhile
            key = frozenset(chosen)
            fruitless = self._fruitless.get(room_id)
            if (
                fruitless is not None
                and fruitless[0] == key
                and self._clock() - fruitless[1] < RETRY_FRUITLESS_AFTER
            ):
                return False
            if await self._round(room_id, chosen, limit):
                self._fruitless.pop(room_id, None)
                return True
            self._fruitless[room_id] = (key, self._clock())
            return False

    async def fill_from(self, room_id: str, extremities: Sequence[str], limit: int) -> int:
        """One ``/backfill`` round before ``extremities`` (the gap filler's step: it keeps its own
        back-off, so the fruitless memory is not consulted). The number of events added to the history."""
        async with self._locks.setdefault(room_id, asyncio.Lock()):
            chosen = await self._still_backward(room_id, extremities)
            return await self._round(room_id, chosen, limit) if chosen else 0

    async def _still_backward(self, room_id: str, extremities: Sequence[str] | None) -> list[str]:
        current = await self._storage.events.get_backward_extremities(room_id)
        if extremities is None:
            return sorted(current)
        held = set(current)
        return [e for e in dict.fromkeys(extremities) if e in held]

    async def _round(self, room_id: str, extremities: list[str], limit: int) -> int:
        rv = await self._storage.rooms.get_room_version(room_id)
        if rv is None:
            return 0
        limit = max(1, min(limit, MAX_BACKFILL))
        for server in await self._servers(room_id):
            added = await self._from(server, room_id, rv, extremities[:MAX_EXTREMITIES], limit)
            if added:
                return added
        return 0

    async def _servers(self, room_id: str) -> list[str]:
        """The servers to ask, in order: only servers joined to the room now (they may read its history,
        and ours is not theirs to withhold), the room creator's first as the likeliest to hold it all."""
        joined = set(await self._storage.state.get_joined_servers(room_id)) - {self.server_name}
        record = await self._storage.rooms.get_room(room_id)
        creator_server = record.creator.partition(":")[2] if record is not None else ""
        return sorted(joined, key=lambda s: (s != creator_server, s))

    async def _from(self, origin: str, room_id: str, rv: RoomVersion, v: list[str], limit: int) -> int:
        """One ``/backfill`` from ``origin``: the number of events added to the room's history."""
        try:
            answer = await self._client.backfill(origin, room_id, v, limit)
        except FederationError as e:
            logger.info("backfill of %s from %s failed: %s", room_id, origin, e)
            return 0
        raws = answer.get("pdus")
        if not isinstance(raws, list):
            return 0
        events = await self._remote.verified(raws[:limit], room_id, rv)  # steps 1-3
        fresh = await self._not_in_history(events)
        if not fresh:
            return 0
        run = _Run(room_id, rv, origin)
        async with self._persister.room_lock(room_id):
            for pdu in dag_order(fresh):
                try:
                    await self._judge(run, pdu)
                except _Skip as e:
                    logger.info("not backfilling %s: %s", pdu.event_id, e)
            await self._flush(run)
        added = [e for e in fresh if e.event_id in run.after]
        logger.info("backfilled %d events of %s from %s", len(added), room_id, origin)
        return len(added)

    async def _not_in_history(self, events: list[Pdu]) -> list[Pdu]:
        """The events we do not hold as non-outliers (outliers, e.g. a join's auth chain, get their state
        now and join the timeline)."""
        held = await self._storage.events.have_events([e.event_id for e in events])
        out = []
        for pdu in {e.event_id: e for e in events}.values():
            if pdu.event_id in held:
                meta = await self._storage.events.get_event_meta(pdu.event_id)
                if meta is None or not meta.outlier:
                    continue
            out.append(pdu)
        return out

    # -- the checks ---------------------------------------------------------------------------------

    async def _judge(self, run: _Run, pdu: Pdu) -> None:
        await self._fetch_auth_events(run, pdu)
        load = partial(self._load, run)
        reason = await check_against_auth_events(run.rv, pdu, load)  # step 4
        state = await self._state_before(run, pdu)
        if reason is None:
            reason = await check_against_state(pdu, state, load)  # step 5
        permitted = reason is None and pdu.redacts is not None and await may_redact(run.rv, pdu, state, load)
        if reason is not None:
            logger.info("backfilled %s is rejected: %s", pdu.event_id, reason)
        run.add(
            EventToPersist(
                pdu=pdu,
                backfilled=True,
                rejected_reason=reason,
                state_before=state,
                redaction_permitted_by_power=permitted,
            )
        )

    async def _fetch_auth_events(self, run: _Run, pdu: Pdu) -> None:
        held = await self._storage.events.have_events(pdu.auth_event_ids)
        if all(a in held or a in run.known for a in pdu.auth_event_ids):
            return
        chain = await self._remote.auth_chain(run.origin, run.room_id, run.rv, pdu.event_id)
        await self._accept_outliers(run, chain)

    async def _accept_outliers(self, run: _Run, events: Iterable[Pdu]) -> None:
        """Step 4 for fetched events held without their state, auth events first; those whose auth events
        cannot be found are left out (not rejected: a later fetch may find them)."""
        todo = {e.event_id: e for e in events if e.event_id not in run.known}
        held = await self._storage.events.have_events(list(todo))
        for pdu in auth_order([e for k, e in todo.items() if k not in held]):
            reason = await check_against_auth_events(run.rv, pdu, partial(self._load, run))
            if reason is not None and reason.startswith(MISSING_AUTH_EVENTS):
                logger.info("leaving out fetched %s: %s", pdu.event_id, reason)
                continue
            run.add(EventToPersist(pdu=pdu, outlier=True, rejected_reason=reason))

    async def _state_before(self, run: _Run, pdu: Pdu) -> StateIds:
        states: list[StateIds] = []
        for prev_id in dict.fromkeys(pdu.prev_event_ids):
            if prev_id in run.after:
                states.append(run.after[prev_id])
                continue
            meta = await self._storage.events.get_event_meta(prev_id)
            if meta is None or meta.outlier:
                # The chunk's old edge: the origin says what the state before the event is.
                return await self._remote_state_before(run, pdu)
            states.append(await self._storage.state.get_state_ids_after(prev_id))
        if not states:
            return {}  # the create event
        if all(s == states[0] for s in states[1:]):
            return dict(states[0])
        await self._flush(run)  # resolution reads the events of the state sets from storage
        return await self._state.resolve(run.room_id, run.rv, states)

    async def _remote_state_before(self, run: _Run, pdu: Pdu) -> StateIds:
        answer = await self._remote.state_ids(run.origin, run.room_id, pdu.event_id)
        if answer is None:
            raise _Skip("the origin did not give the state before it")
        state_ids, chain_ids = answer
        needed = list(dict.fromkeys([*chain_ids, *state_ids]))
        held = await self._storage.events.have_events(needed)
        lacking = [e for e in needed if e not in held and e not in run.known]
        if lacking:
            fetched = await self._remote.fetch_many(run.origin, run.room_id, run.rv, pdu.event_id, lacking)
            await self._accept_outliers(run, fetched.values())
        loaded = await self._load(run, state_ids)
        state: StateIds = {}
        for event_id in state_ids:
            entry = loaded.get(event_id)
            # Rejected events never belong to a state (S2S "Rejection").
            if entry is not None and entry[1] is None and entry[0].state_key is not None:
                state[(entry[0].type, entry[0].state_key)] = event_id
        if CREATE_KEY not in state:
            raise _Skip("the state the origin gave has no usable create event")
        return state

    # -- storage ------------------------------------------------------------------------------------

    async def _load(self, run: _Run, event_ids: Iterable[str]) -> dict[str, tuple[Pdu, str | None]]:
        """Events with their verdicts (None: accepted), from this run or from storage."""
        out: dict[str, tuple[Pdu, str | None]] = {}
        rest = []
        for event_id in dict.fromkeys(event_ids):
            if event_id in run.known:
                out[event_id] = run.known[event_id]
            else:
                rest.append(event_id)
        if rest:
            out.update(await self._storage.events.get_events_with_verdicts(rest))
        return out

    async def _flush(self, run: _Run) -> None:
        """Persist the run so far (the caller holds the room lock). Backfilled events leave the room's
        current state and forward extremities alone, and are not sent anywhere."""
        if run.batch:
            batch, run.batch = run.batch, []
            await self._persister.persist(run.room_id, run.rv, batch)
