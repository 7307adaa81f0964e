"""The PDU intake pipeline: S2S "Checks performed on receipt of a PDU", one small function per step.

    1. parse (format)                 incoming_verify.parse_pdu            whole transaction, no lock, in
    2. signatures                     incoming_verify.verify_pdu           two worker threads (intake)
    3. content hash (else redact)     incoming_verify.verify_pdu
    -  fetch missing prev events      _prefetch (/get_missing_events, before the room lock), _fill_gap
                                      (the prefetched events, then /state_ids at what is left; the prev
                                      events of our join to a partial room are not missing:
                                      partial_join_points.py)
    4. auth against its auth events   pdu_checks.check_against_auth_events (missing ones fetched as outliers)
    5. auth against the state before  _state_before, pdu_checks.check_against_state -> rejected
    6. auth against current state     _soft_fails                                -> soft failed
    -  persist                        _flush (EventPersister, under the room lock, one batch per run)

(Step 7, policy servers, is not implemented.) A room's PDUs are handled in DAG order under the persister's
room lock, in *runs*: every event of a run is judged against an in-memory view (the states after the run's
events, the forward extremities) and the run is persisted as one batch before the lock is released, so a
transaction of 50 chained PDUs costs one database transaction. A PDU whose prev event is still being
handled by another transaction waits for it (after persisting its own run) instead of fetching it back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from ..federation.client import FederationClient
from ..federation.keys import Keyring
from ..logs.tracing import Tracing
from ..protocol.auth import check_auth_rules
from ..protocol.errors import AuthRejected
from ..protocol.events import Pdu
from ..protocol.room_versions import RoomVersion
from ..storage.interfaces import EventToPersist, UnknownEvent
from ..storage.protocols.composite import Storage
from ..storage.sql.deferred_pdus import DeferredPduStore
from .deferred_pdus import DeferredPdus
from .incoming_acl import ACL_KEY, server_allowed_by_acl
from .incoming_fetch import RemoteEvents, prefetch_missing
from .incoming_verify import (
    Dropped,
    Unverified,
    intake_in_threads,
    key_requests,
    raw_room_id,
    verify_in_thread,
)
from .partial_auth import with_cited_member_ids
from .partial_join_points import JoinPoints, PartialJoinPoints
from .pdu_checks import (
    auth_order,
    auth_state,
    check_against_auth_events,
    check_against_state,
    dag_order,
    may_redact,
)
from .persister import EventPersister
from .state import StateIds, StateService, state_after_map

logger = logging.getLogger(__name__)

# How long a PDU waits for a prev event another transaction is handling before fetching it itself.
INFLIGHT_WAIT_SECONDS = 30.0
MAX_OUTLIER_ROUNDS = 3
# /get_missing_events requests made before the room lock is taken, per run (each up to 20 events).
PREFETCH_ROUNDS = 2


class CannotProcess(Exception):
    """The PDU could not be judged (e.g. the state at a gap could not be had): not stored, error returned."""


@dataclass
class _View:
    """A room as the events of one run see it, under the room lock."""

    room_id: str
    rv: RoomVersion
    extremities: set[str]
    batch: list[EventToPersist] = field(default_factory=list)
    # Events of this run (outliers too) and their verdicts (None: accepted).
    events: dict[str, Pdu] = field(default_factory=dict)
    verdicts: dict[str, str | None] = field(default_factory=dict)
    # State after each non-outlier of this run; state after a gap's prev event, from the remote.
    after: dict[str, StateIds] = field(default_factory=dict)
    gap_after: dict[str, StateIds] = field(default_factory=dict)
    live_ids: set[str] = field(default_factory=set)  # held non-outliers, learnt from storage
    # Events read from storage by _load, with their verdicts: a run's PDUs mostly cite the same few auth
    # events, so each is read once per run rather than twice per PDU. Cleared by _flush, after which
    # storage may hold newer copies (a redaction or an outlier persisted with its state).
    loaded: dict[str, tuple[Pdu, str | None]] = field(default_factory=dict)
    # State after events persisted before this run (it never changes once stored), read once: with two
    # branches in flight, every PDU of one needs the state after the other's head.
    stored_after: dict[str, StateIds] = field(default_factory=dict)
    # A missing prev event was left unfetched (its state taken from the origin): a hole to fill later.
    gapped: bool = False
    # /get_missing_events asked before the room lock was taken (``_prefetch``), used by the first gap
    # met under it; ``origin_down``: the origin stopped answering then, so no more is asked of it under
    # the lock (its PDUs with gaps are deferred).
    prefetched: list[Pdu] = field(default_factory=list)
    prefetch_seen: bool = False
    origin_down: bool = False
    # The last resolution of the current state by ``_soft_fails``: the identities of the state sets
    # resolved (kept alive by the list beside them, so no id is reused while held) and the result.
    last_current: tuple[tuple[int, ...], list[StateIds], StateIds] | None = None
    # The room was joined with partial state (MSC3706): members the state lacks are taken from the
    # member events a PDU cites (partial_auth.py); the resync re-checks these PDUs later.
    partial: bool = False
    # The prev events of our join while the room is partial (partial_join_points.py) and, once an event
    # continues them, the state after each (the partial state before our join): not a hole to fetch.
    join_points: JoinPoints | None = None
    join_after: dict[str, StateIds] = field(default_factory=dict)
    # The room's forward extremities as stored, read when the lock was taken: handed to the persister
    # for the run's first batch (one read per run, not one more per batch); None after a flush.
    stored_extremities: frozenset[str] | None = None


class IncomingPdus:
    def __init__(
        self,
        storage: Storage,
        state: StateService,
        persister: EventPersister,
        keyring: Keyring,
        client: FederationClient,
        server_name: str,
    ) -> None:
        self._storage = storage
        self._state = state
        self._persister = persister
        self._keyring = keyring
        self._remote = RemoteEvents(client, keyring)
        self._join_points = PartialJoinPoints(storage)
        self.server_name = server_name
        # Event ids being handled by some transaction -> done when persisted (or given up).
        self._inflight: dict[str, asyncio.Future[None]] = {}
        # The joining side of remote joins (rooms.remote_join), set by the app: queues PDUs during joins.
        self.joins: Any = None
        # Set by the app (rooms.resident): takes a PDU of a room we are not in that ends a local user's
        # invite or knock there (withdrawn, refused); True when taken.
        self.out_of_room: Callable[[str, Pdu], Awaitable[bool]] | None = None
        # Told of a room whose timeline now has a hole (persisted already): the app wires the gap filler.
        self.on_gap: Callable[[str], None] | None = None
        # PDUs that could not be judged (CannotProcess), tried again durably (rooms.deferred_pdus).
        self.deferred = DeferredPdus(DeferredPduStore(storage.db), self._retry_deferred)
        # Set by the app: a span per PDU's checks when tracing is on.
        self.tracing: Tracing | None = None

    # -- the transaction -------------------------------------------------------------------------

    async def receive_pdus(self, origin: str, raw_pdus: Sequence[Any]) -> dict[str, dict[str, str]]:
        """Handle the PDUs of one ``/send`` transaction; returns the per-PDU results of the response.

        Returns after everything accepted is committed, and every PDU that could not be judged yet is kept
        to be tried again (``self.deferred``). One bad PDU never fails the others.
        """
        deferrals: list[Pdu] = []
        results = await self._receive(origin, raw_pdus, deferrals)
        for pdu in deferrals:
            await self.deferred.add(origin, pdu.room_id, pdu.event_id, pdu.to_federation())
        return results

    async def _retry_deferred(self, origin: str, raw: dict[str, Any]) -> bool:
        """One more try of a deferred PDU: whether it is judged now (stored with a verdict, or taken)."""
        deferrals: list[Pdu] = []
        results = await self._receive(origin, [raw], deferrals)
        if deferrals:
            return False
        if results and not any(a.get("error") for a in results.values()):
            return True
        for event_id in results:  # rejected is judged too; held only as an outlier is not
            meta = await self._storage.events.get_event_meta(event_id)
            if meta is None or meta.outlier:
                return False
        return bool(results)

    async def _receive(
        self, origin: str, raw_pdus: Sequence[Any], deferrals: list[Pdu]
    ) -> dict[str, dict[str, str]]:
        results: dict[str, dict[str, str]] = {}
        by_room: dict[str, list[Any]] = {}
        for raw in raw_pdus:
            room_id = raw_room_id(raw)
            if room_id is None:
                _report(results, raw, "PDU has no room_id")
            else:
                by_room.setdefault(room_id, []).append(raw)

        # A room whose join is in flight: keep its PDUs durably, to be handled once the join is persisted
        # (the resident's dummy event may come before our send_join answer). Acknowledged once queued.
        if self.joins is not None:
            for room_id in [r for r in by_room if self.joins.is_joining(r)]:
                for raw in by_room.pop(room_id):
                    await self.joins.queue_pdu(room_id, origin, raw)

        # Steps 1-3 for the whole transaction in worker threads (incoming_verify.intake): every PDU
        # parsed, and checked at once when its keys are known; rooms we do not know are refused per PDU.
        versions: dict[str, RoomVersion] = {}
        for room_id in list(by_room):
            rv = await self._storage.rooms.get_room_version(room_id)
            if rv is None:
                for raw in by_room.pop(room_id):
                    _report(results, raw, f"unknown room {room_id}")
            else:
                versions[room_id] = rv
        items = [(raw, room_id, versions[room_id]) for room_id, raws in by_room.items() for raw in raws]
        intaken = await intake_in_threads(items, self._keyring.lookup)
        # The keys not known yet, once for the transaction, then the signatures they made.
        unverified = [r.pdu for r in intaken if isinstance(r, Unverified)]
        if unverified:
            await self._keyring.prefetch(key_requests(unverified))
            late = iter(await verify_in_thread(unverified, self._keyring.lookup))
            intaken = [next(late) if isinstance(r, Unverified) else r for r in intaken]
        checked = iter(intaken)
        per_room: dict[str, tuple[RoomVersion, list[Pdu]]] = {}
        for room_id, raws in by_room.items():
            rv = versions[room_id]
            kept = []
            for _ in raws:
                p = next(checked)
                if isinstance(p, Dropped):
                    results[p.event_id or ""] = {"error": p.reason}
                elif isinstance(p, Pdu):
                    kept.append(p)
            if kept and self.out_of_room is not None:
                # A room we are not in, known from an invite or knock: only the end of it is taken.
                taken = {p.event_id for p in kept if await self.out_of_room(origin, p)}
                for event_id in taken:
                    results[event_id] = {}
                kept = [p for p in kept if p.event_id not in taken]
            if kept and not await self.server_allowed(room_id, origin):
                # S2S "Server Access Control Lists": ACLs apply to PDUs one by one.
                for p in kept:
                    results[p.event_id] = {"error": f"server {origin} is denied by the room's server ACL"}
                continue
            per_room[room_id] = (rv, list({p.event_id: p for p in kept}.values()))
        results.pop("", None)

        mine = self._register_inflight(p for _, pdus in per_room.values() for p in pdus)
        try:
            await asyncio.gather(
                *(
                    self._receive_room(origin, room_id, rv, pdus, results, mine, deferrals)
                    for room_id, (rv, pdus) in per_room.items()
                )
            )
        finally:
            self._release_inflight(mine)
        return results

    async def close(self) -> None:
        """Stop trying deferred PDUs (the server is stopping; they stay in the database)."""
        await self.deferred.close()

    async def server_allowed(self, room_id: str, server: str) -> bool:
        acl = await self._storage.state.get_current_state_event(room_id, *ACL_KEY)
        return server_allowed_by_acl(server, acl.content if acl is not None else None)

    def _register_inflight(self, pdus: Iterable[Pdu]) -> set[str]:
        loop = asyncio.get_running_loop()
        mine: set[str] = set()
        for p in pdus:
            if p.event_id not in self._inflight:
                self._inflight[p.event_id] = loop.create_future()
                mine.add(p.event_id)
        return mine

    def _release_inflight(self, event_ids: Iterable[str]) -> None:
        for event_id in event_ids:
            fut = self._inflight.pop(event_id, None)
            if fut is not None and not fut.done():
                fut.set_result(None)

    async def _receive_room(
        self,
        origin: str,
        room_id: str,
        rv: RoomVersion,
        pdus: list[Pdu],
        results: dict[str, dict[str, str]],
        mine: set[str],
        deferrals: list[Pdu],
    ) -> None:
        pending = dag_order(pdus)
        waited: set[str] = set()
        while pending:
            wait_for: list[asyncio.Future[None]] = []
            prefetched, origin_down = await self._prefetch(origin, room_id, rv, pending, mine)
            async with self._persister.room_lock(room_id):
                stored = frozenset(await self._storage.events.get_forward_extremities(room_id))
                view = _View(room_id, rv, set(stored), stored_extremities=stored)
                view.prefetched, view.origin_down = prefetched, origin_down
                view.partial = await self._storage.partial_state.is_partial(room_id)
                view.join_points = await self._join_points.of(room_id) if view.partial else None
                # The run's PDUs and their prev events at once: the first PDU's prev is usually held.
                await self._learn_live(view, [*(p.event_id for p in pending), *_outside_prevs(pending)])
                while pending:
                    pdu = pending[0]
                    if pdu.event_id in view.live_ids:
                        results[pdu.event_id] = {}  # already held: nothing to do
                        pending.pop(0)
                        continue
                    missing = await self._missing_prevs(view, pdu)
                    elsewhere = [m for m in missing if m in self._inflight and m not in mine]
                    if elsewhere and pdu.event_id not in waited:
                        waited.add(pdu.event_id)
                        wait_for = [self._inflight[m] for m in elsewhere]
                        break
                    try:
                        if missing:
                            await self._fill_gap(view, origin, pdu, missing)
                        results[pdu.event_id] = await self._handle(view, origin, pdu)
                    except CannotProcess as e:
                        results[pdu.event_id] = {"error": str(e)}
                        deferrals.append(pdu)
                    except Exception:
                        # A bug or a hostile corner must not fail the other PDUs of the transaction.
                        logger.exception("failed to handle %s from %s", pdu.event_id, origin)
                        results[pdu.event_id] = {"error": "internal error while handling the event"}
                    pending.pop(0)
                await self._flush(view)
            if view.gapped and self.on_gap is not None:
                self.on_gap(room_id)
            if wait_for:
                # Another transaction holds the prev events: let it persist them rather than fetch them.
                await asyncio.wait(wait_for, timeout=INFLIGHT_WAIT_SECONDS)

    # -- fetching missing prev events ------------------------------------------------------------

    async def _learn_live(self, view: _View, event_ids: Iterable[str]) -> None:
        """Note which of ``event_ids`` are held as non-outliers (one query for those not known yet)."""
        ids = [e for e in event_ids if e not in view.live_ids and e not in view.after]
        if not ids:
            return  # the common case (prev events of this run): no storage call at all
        view.live_ids.update(await self._storage.events.held_in_timeline(ids))

    async def _missing_prevs(self, view: _View, pdu: Pdu) -> list[str]:
        """Prev events we hold no state after (unknown, or held only as outliers). The prev events of our
        join to a partial room are not missing: the state after them is the partial state before it."""
        prevs = [
            p
            for p in dict.fromkeys(pdu.prev_event_ids)
            if p not in view.after and p not in view.gap_after and p not in view.join_after
        ]
        await self._learn_live(view, prevs)
        missing: list[str] = [p for p in prevs if p not in view.live_ids]
        points = view.join_points
        if missing and points is not None and not points.prev_event_ids.isdisjoint(missing):
            state = await self._join_points.state_after(points)
            for event_id in points.prev_event_ids:
                view.join_after[event_id] = state  # shared, never mutated
            missing = [p for p in missing if p not in view.join_after]
        return missing

    async def _prefetch(
        self, origin: str, room_id: str, rv: RoomVersion, pending: list[Pdu], mine: set[str]
    ) -> tuple[list[Pdu], bool]:
        """incoming_fetch.prefetch_missing for ``pending``, before the room lock is taken (prev events
        another transaction is handling are left to it)."""
        points = await self._join_points.of(room_id)
        return await prefetch_missing(
            self._remote,
            self._storage,
            origin,
            room_id,
            rv,
            pending,
            skip=lambda e: e in self._inflight and e not in mine,
            rounds=PREFETCH_ROUNDS,
            known=points.prev_event_ids if points is not None else frozenset(),
        )

    async def _fill_gap(self, view: _View, origin: str, pdu: Pdu, missing: list[str]) -> None:
        """Fetch missing prev events from the origin, oldest first, through the same steps; where a gap
        remains, take the state after the missing prev event from the origin (``/state_ids``)."""
        if view.prefetched:
            # Opportunistic: only the prefetched events that connect to what is held are taken here; the
            # others stay for the next PDU's gap (a fetch made below may connect them meanwhile). A PDU whose
            # gap they do not close gets its own fetch below, which walks its own ancestry (a gap taken from
            # /state_ids is the last resort, never made for a prefetched event).
            first = not view.prefetch_seen
            if first:
                await self._learn_live(view, [e.event_id for e in view.prefetched])
                view.prefetch_seen = True
            left: list[Pdu] = []
            for event in view.prefetched:
                if event.event_id in view.live_ids or event.event_id in view.after:
                    continue
                if first:
                    connected = not await self._missing_prevs(view, event)
                else:  # what was held is known by now: only this run's events can have connected it
                    connected = all(
                        p in view.after or p in view.live_ids or p in view.join_after
                        for p in event.prev_event_ids
                    )
                if not connected:
                    left.append(event)
                    continue
                try:
                    await self._handle(view, origin, event)
                except CannotProcess as e:
                    logger.info("could not handle fetched %s: %s", event.event_id, e)
            view.prefetched = left
            missing = await self._missing_prevs(view, pdu)
            if not missing:
                return
        if view.origin_down:
            raise CannotProcess(f"{origin} did not answer for the missing prev events {missing[:3]}")
        depths = [await self._depth(e) for e in view.extremities]
        min_depth = min((d for d in depths if d is not None), default=0)
        # The join's prev events bound the walk too: what precedes them is history, not a hole.
        earliest = view.extremities | (view.join_points.prev_event_ids if view.join_points else set())
        fetched = await self._remote.missing_events(
            origin, view.room_id, view.rv, sorted(earliest), [pdu.event_id], min_depth
        )
        await self._learn_live(view, [e.event_id for e in fetched])
        for event in fetched:
            if (
                event.event_id == pdu.event_id
                or event.event_id in view.live_ids
                or event.event_id in view.after
            ):
                continue
            gaps = await self._missing_prevs(view, event)
            try:
                if gaps:
                    await self._state_at_gap(view, origin, gaps)
                await self._handle(view, origin, event)
            except CannotProcess as e:
                logger.info("could not handle fetched %s: %s", event.event_id, e)
        rest = await self._missing_prevs(view, pdu)
        if rest:
            await self._state_at_gap(view, origin, rest)

    async def _depth(self, event_id: str) -> int | None:
        meta = await self._storage.events.get_event_meta(event_id)
        return meta.depth if meta is not None else None

    async def _state_at_gap(self, view: _View, origin: str, prev_ids: list[str]) -> None:
        """The state after each missing prev event: the origin's state before it, plus the event."""
        view.gapped = True
        if view.origin_down:
            raise CannotProcess(f"{origin} did not answer for the state at the missing {prev_ids[:3]}")
        for prev_id in prev_ids:
            answer = await self._remote.state_ids(origin, view.room_id, prev_id)
            if answer is None:
                raise CannotProcess(f"could not get the state at missing prev event {prev_id}")
            state_ids, chain_ids = answer
            needed = list(dict.fromkeys([*chain_ids, *state_ids, prev_id]))
            held = await self._storage.events.have_events(needed)
            lacking = [e for e in needed if e not in held and e not in view.events]
            if lacking:
                fetched = await self._remote.fetch_many(origin, view.room_id, view.rv, prev_id, lacking)
                await self._accept_outliers(view, origin, fetched.values())
            known = await self._load(view, [*state_ids, prev_id])
            state: StateIds = {}
            # Rejected events never belong to a state (S2S "Rejection").
            for event_id in state_ids:
                entry = known.get(event_id)
                if entry is not None and entry[1] is None and entry[0].state_key is not None:
                    state[(entry[0].type, entry[0].state_key)] = event_id
            prev = known.get(prev_id)
            if prev is not None and prev[1] is None and prev[0].state_key is not None:
                state[(prev[0].type, prev[0].state_key)] = prev_id
            view.gap_after[prev_id] = state

    async def _accept_outliers(self, view: _View, origin: str, events: Iterable[Pdu]) -> None:
        """Steps 4 for fetched events held without their state (outliers), auth events first."""
        todo: dict[str, Pdu] = {e.event_id: e for e in events if e.event_id not in view.events}
        for _ in range(MAX_OUTLIER_ROUNDS):
            if not todo:
                return
            held = await self._storage.events.have_events(
                {a for e in todo.values() for a in e.auth_event_ids} | set(todo)
            )
            todo = {k: e for k, e in todo.items() if k not in held}
            missing = {
                a
                for e in todo.values()
                for a in e.auth_event_ids
                if a not in held and a not in todo and a not in view.events
            }
            if missing:
                todo.update(await self._remote.events(origin, view.room_id, view.rv, missing))
                continue
            for event in auth_order(todo.values()):
                reason = await check_against_auth_events(view.rv, event, partial(self._load, view))
                self._add(view, EventToPersist(pdu=event, outlier=True, rejected_reason=reason))
            return
        logger.info("giving up on the auth chains of %d fetched events in %s", len(todo), view.room_id)

    # -- steps 4-6 and persisting ----------------------------------------------------------------

    async def _handle(self, view: _View, origin: str, pdu: Pdu) -> dict[str, str]:
        if self.tracing is None or not self.tracing.enabled:
            return await self._check(view, origin, pdu)
        attributes = {
            "ranvier.event_id": pdu.event_id,
            "ranvier.event_type": pdu.type,
            "ranvier.origin": origin,
        }
        with self.tracing.internal_span("check PDU", attributes) as span:
            result = await self._check(view, origin, pdu)
            if span is not None and "error" in result:
                span.set_attribute("ranvier.refused", result["error"])
            return result

    async def _check(self, view: _View, origin: str, pdu: Pdu) -> dict[str, str]:
        """Steps 4-6 for one PDU whose prev events all have a known state after them; queues it."""
        # Auth events already read in this run are known to be held: ask storage about the others only.
        unknown = [a for a in pdu.auth_event_ids if a not in view.events and a not in view.loaded]
        held = await self._storage.events.have_events(unknown) if unknown else set()
        if any(a not in held for a in unknown):
            await self._accept_outliers(
                view, origin, await self._remote.auth_chain(origin, view.room_id, view.rv, pdu.event_id)
            )
        load = partial(self._load, view)
        reason = await check_against_auth_events(view.rv, pdu, load)  # step 4
        state_before, after_prev = await self._state_before(view, pdu)  # step 5
        if reason is None:
            auth_base = await with_cited_member_ids(pdu, state_before, load) if view.partial else state_before
            reason = await check_against_state(pdu, auth_base, load)
        soft_failed = reason is None and await self._soft_fails(view, pdu, state_before)  # step 6
        permitted = (
            reason is None and pdu.redacts is not None and await may_redact(view.rv, pdu, state_before, load)
        )
        # The usual case (one prev event whose state is held or in this run): storage takes the state
        # before as the prev's group, with no comparison of the whole map.
        self._add(
            view,
            EventToPersist(
                pdu=pdu,
                rejected_reason=reason,
                soft_failed=soft_failed,
                state_before=None if after_prev else state_before,
                state_before_is_after_prev=after_prev,
                redaction_permitted_by_power=permitted,
            ),
            state_before,
        )
        if reason is not None:
            logger.info("rejected %s: %s", pdu.event_id, reason)
            return {"error": f"rejected: {reason}"}
        if soft_failed:
            logger.info("soft-failed %s", pdu.event_id)
        return {}

    async def _state_before(self, view: _View, pdu: Pdu) -> tuple[StateIds, bool]:
        """The state before the event: the resolution of the states after its prev events; and whether
        it is the state after its one prev event as held or queued (not one taken at a gap).

        The map returned may be shared with the prev event's (``view.after``): it is never mutated, so
        the usual event (one prev) costs no copy of the room's state.
        """
        states: list[StateIds] = []
        from_gap = False
        for prev_id in dict.fromkeys(pdu.prev_event_ids):
            if prev_id in view.after:
                states.append(view.after[prev_id])
            elif prev_id in view.gap_after:
                states.append(view.gap_after[prev_id])
                from_gap = True
            elif prev_id in view.join_after:
                states.append(view.join_after[prev_id])
                from_gap = True  # not held: storage is given the map
            else:
                try:
                    states.append(await self._stored_after(view, prev_id))
                except UnknownEvent as e:
                    raise CannotProcess(f"no state is known after prev event {prev_id}") from e
        if not states:
            return {}, False  # a create event
        if len(pdu.prev_event_ids) == 1:
            return states[0], not from_gap
        if all(s is states[0] or s == states[0] for s in states[1:]):
            return states[0], False
        await self._flush(view)  # resolution reads the events of the state sets from storage
        return await self._state.resolve(view.room_id, view.rv, states), False

    async def _soft_fails(self, view: _View, pdu: Pdu, state_before: StateIds) -> bool:
        """Step 6: the rules against the room's current state (the resolution of the states after the
        forward extremities, with the state at the event among them)."""
        if set(pdu.prev_event_ids) == view.extremities:
            return False  # the current state is the state before the event: step 5 already decided
        states = [state_before]
        for event_id in sorted(view.extremities):
            if event_id in view.after:
                states.append(view.after[event_id])
            else:
                states.append(await self._stored_after(view, event_id))
        key = tuple(sorted(id(s) for s in states))  # the resolution does not depend on the sets' order
        if all(s is state_before or s == state_before for s in states[1:]):
            current = state_before  # branches agreeing on the state (e.g. only messages): nothing to resolve
        elif view.last_current is not None and view.last_current[0] == key:
            # The same state sets as the previous PDU's (messages extending one branch share their
            # prev's map): the same resolution, without flushing the run or resolving again.
            current = view.last_current[2]
        else:
            await self._flush(view)  # resolution reads the events of the state sets from storage
            current = await self._state.resolve(view.room_id, view.rv, states)
            view.last_current = (key, states, current)
        if view.partial:
            current = await with_cited_member_ids(pdu, current, partial(self._load, view))
        try:
            check_auth_rules(pdu, await auth_state(pdu, current, partial(self._load, view)))
        except AuthRejected:
            return True
        return False

    async def _stored_after(self, view: _View, event_id: str) -> StateIds:
        """The state after a held event, read once per run: the same map for every PDU that needs it."""
        if event_id not in view.stored_after:
            view.stored_after[event_id] = await self._storage.state.get_state_ids_after(event_id)
        return view.stored_after[event_id]

    def _add(self, view: _View, item: EventToPersist, state_before: StateIds | None = None) -> None:
        """Queue ``item``; a non-outlier comes with the state before it (``item.state_before`` unless
        given: an item whose state is that after its prev event carries no map to storage)."""
        pdu = item.pdu
        if not item.outlier:
            # A non-outlier supersedes an outlier copy queued earlier in this run (storage would skip it).
            view.batch = [i for i in view.batch if i.pdu.event_id != pdu.event_id]
            if state_before is None:
                assert item.state_before is not None, "a non-outlier needs the state before it"
                state_before = dict(item.state_before)
            view.after[pdu.event_id] = state_after_map(state_before, item)
            if item.rejected_reason is None and not item.soft_failed:
                view.extremities = (view.extremities - set(pdu.prev_event_ids)) | {pdu.event_id}
        view.batch.append(item)
        view.events[pdu.event_id] = pdu
        view.verdicts[pdu.event_id] = item.rejected_reason

    async def _flush(self, view: _View) -> None:
        """Persist the run so far (before anything is acknowledged or read back from storage)."""
        if not view.batch:
            return
        batch, view.batch = view.batch, []
        view.loaded.clear()
        stored, view.stored_extremities = view.stored_extremities, None
        await self._persister.persist(view.room_id, view.rv, batch, extremities=stored)
        for item in batch:
            if not item.outlier:
                view.live_ids.add(item.pdu.event_id)
            fut = self._inflight.get(item.pdu.event_id)
            if fut is not None and not fut.done() and not item.outlier:
                fut.set_result(None)

    async def _load(self, view: _View, event_ids: Iterable[str]) -> dict[str, tuple[Pdu, str | None]]:
        """Events with their verdicts (None: accepted), from this run or from storage."""
        out: dict[str, tuple[Pdu, str | None]] = {}
        rest = []
        for event_id in dict.fromkeys(event_ids):
            if event_id in view.events:
                out[event_id] = (view.events[event_id], view.verdicts[event_id])
            elif event_id in view.loaded:
                out[event_id] = view.loaded[event_id]
            else:
                rest.append(event_id)
        if rest:
            fetched = await self._storage.events.get_events_with_verdicts(rest)
            out.update(fetched)
            view.loaded.update(fetched)
        return out


def _outside_prevs(pdus: Sequence[Pdu]) -> list[str]:
    """The prev events of ``pdus`` that are not among them."""
    ids = {p.event_id for p in pdus}
    return list(dict.fromkeys(e for p in pdus for e in p.prev_event_ids if e not in ids))


def _report(results: dict[str, dict[str, str]], raw: Any, error: str) -> None:
    # Only PDUs whose id we can name get an entry (v1-v2 carry it; later ids need the room version).
    event_id = raw.get("event_id") if isinstance(raw, dict) else None
    if isinstance(event_id, str):
        results[event_id] = {"error": error}
