"""Persisting a batch of events: one transaction for the rows, the DAG edges, the extremities, the state at
each event, redactions and the current state, so a crash leaves all of a batch or none of it.

Batches are serialized by one asyncio lock for the whole process. That is what makes stream orderings
commit-ordered (a reader at position N never misses an event below N that commits later) and keeps the
extremity bookkeeping free of races between batches of the same room.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from ranvier.protocol.events import Pdu
from ranvier.protocol.identifiers import server_of
from ranvier.protocol.room_versions import get_room_version

from ..interfaces import TOPO_SCALE, EventToPersist, InTxnHook, StateDelta, StateMap, UnknownRoom
from .caches import LruCache
from .engine import MAX_IN_LIST, Database, Txn, chunks, in_list
from .events import EventCache, live
from .indexes import update_indexes
from .partial_state import StateRewrite, rewrite_event_states
from .relations import RelationStore
from .state import write_current_state
from .state_groups import StateDict, StateGroups, StateGroupWriter
from .stream import StreamPositions


@dataclass
class _Pending:
    """An event of the batch that needs writing, with what the transaction decides for it."""

    item: EventToPersist
    deoutlier: bool  # held as an outlier, now persisted with its state
    stream: int = 0
    before: int | None = None
    after: int | None = None

    @property
    def pdu(self) -> Pdu:
        return self.item.pdu

    @property
    def live(self) -> bool:
        i = self.item
        return not i.outlier and i.rejected_reason is None and not i.soft_failed

    @property
    def accepted_non_outlier(self) -> bool:
        return not self.item.outlier and self.item.rejected_reason is None


def _for_hooks(p: _Pending) -> EventToPersist:
    return replace(p.item, held_as_outlier=True) if p.deoutlier else p.item


def _validate(room_id: str, batch: Sequence[EventToPersist]) -> None:
    for item in batch:
        if item.pdu.room_id != room_id:
            raise ValueError(f"{item.pdu.event_id} belongs to {item.pdu.room_id}, not {room_id}")
        ways = (
            (item.state_before is not None)
            + (item.state_group_before is not None)
            + item.state_before_is_after_prev
        )
        if item.outlier and ways:
            raise ValueError(f"outlier {item.pdu.event_id} must not carry state")
        if not item.outlier and ways != 1:
            raise ValueError(f"{item.pdu.event_id}: give the state before it in exactly one way")
        if item.state_before_is_after_prev and len(item.pdu.prev_event_ids) != 1:
            raise ValueError(f"{item.pdu.event_id}: state_before_is_after_prev needs exactly one prev event")


class StreamAllocator(Protocol):
    """Positions for a batch when several processes write the event stream (ranvier.workers.positions)."""

    async def allocate(self, txn: Txn, forward: int, backward: int) -> tuple[list[int], list[int]]: ...

    def settle(self) -> contextlib.AbstractAsyncContextManager[None]: ...

    def touched(self, room_id: str, event_ids: list[str], state_changed: bool = True) -> None:
        """Events of the batch whose cached form other processes must forget (new, de-outliered, redacted),
        and whether the room's current state changed (else the others keep their cached copy)."""


class EventPersister:
    def __init__(
        self,
        db: Database,
        groups: StateGroups,
        positions: StreamPositions,
        event_cache: EventCache,
        current_cache: LruCache[str, StateDict],
    ) -> None:
        self._db = db
        self._groups = groups
        self._positions = positions
        self._event_cache = event_cache
        self._current = current_cache
        self._lock = asyncio.Lock()
        # Several processes writing one database (ranvier.workers): positions from the database's
        # sequences instead of the in-memory counters. None: this process is the only writer.
        self.allocator: StreamAllocator | None = None

    def share_stream(self, positions: StreamPositions, allocator: StreamAllocator) -> None:
        """Several processes write this database (ranvier.workers): positions from ``allocator``."""
        self._positions, self.allocator = positions, allocator

    def forget(self, room_id: str | None, event_ids: list[str], state_changed: bool = True) -> None:
        """Another process persisted into ``room_id``: drop what our caches hold of it (None: of every
        room, after news from the other processes may have been lost)."""
        if room_id is None:
            self._current.clear()
            self._event_cache.clear()
            return
        if state_changed:
            self._current.invalidate(room_id)
        for event_id in event_ids:
            self._event_cache.invalidate(event_id)

    async def persist_events(
        self,
        room_id: str,
        batch: list[EventToPersist],
        new_current_state: StateMap | StateDelta | None = None,
        on_txn: InTxnHook | None = None,
    ) -> list[int]:
        _validate(room_id, batch)
        async with self._lock:
            # Counters advance only on success; a failed transaction leaves harmless gaps at most.
            next_max, next_min = self._positions.max_committed, self._positions.min_committed
            settle = self.allocator.settle() if self.allocator is not None else contextlib.nullcontext()
            async with settle, self._db.transaction() as txn:
                # One read answers, before anything is written: whether the room is known, which events
                # of the batch are held already, and for their prev events the state group after, the
                # ordering depth and whether they are held in the timeline (else they become backward
                # extremities); for a batch of ordinary size, also which of its events are backward
                # extremities and the redactions held of them (read later when the batch is larger).
                start = await _read_at_start(txn, room_id, batch)
                if not start.room_known:
                    raise UnknownRoom(room_id)
                held = start.held
                existing = {i.pdu.event_id: held[i.pdu.event_id] for i in batch if i.pdu.event_id in held}
                pending: dict[str, _Pending] = {}
                for item in batch:
                    eid = item.pdu.event_id
                    if eid in pending:
                        continue
                    row = existing.get(eid)
                    if row is None or (row.outlier and not item.outlier):
                        pending[eid] = _Pending(item, deoutlier=row is not None)
                if self.allocator is not None:
                    backfilled = [p for p in pending.values() if p.item.backfilled]
                    live_ones = [p for p in pending.values() if not p.item.backfilled]
                    fwd, back = await self.allocator.allocate(txn, len(live_ones), len(backfilled))
                    for p, pos in zip(live_ones, fwd, strict=True):
                        p.stream = pos
                    # Backfill goes down from the oldest: the batch's first gets the highest position.
                    for p, pos in zip(backfilled, sorted(back, reverse=True), strict=True):
                        p.stream = pos
                for p in pending.values() if self.allocator is None else ():
                    if p.item.backfilled:
                        next_min -= 1
                        p.stream = next_min
                    else:
                        next_max += 1
                        p.stream = next_max
                writer = StateGroupWriter(self._groups, txn, room_id)
                await self._assign_state(writer, list(pending.values()), held)
                await writer.flush()
                await writer.finish()
                await _write_events(txn, room_id, list(pending.values()), held)
                await RelationStore.insert_txn(txn, room_id, [p.pdu for p in pending.values()])
                await _update_forward_extremities(txn, room_id, list(pending.values()), start.backward)
                await _update_backward_extremities(txn, room_id, pending, held)
                redacted = await _apply_redactions(txn, list(pending.values()), start.redactions)
                new_current = None
                state_changed = False
                current_written = False
                if new_current_state is not None:
                    current_written = True
                    prior = self._current.get(room_id) if self.allocator is not None else None
                    pdus: dict[str, Pdu] = {i.pdu.event_id: i.pdu for i in batch}
                    new_current = await write_current_state(
                        txn, self._current, room_id, new_current_state, pdus
                    )
                    # Only other processes need to know (a dict comparison: O(state) per batch).
                    state_changed = self.allocator is not None and (prior is None or prior != new_current)
                if self.allocator is not None:
                    self.allocator.touched(room_id, [*pending, *redacted], state_changed)
                # The search index and the user directory commit with the events they cover.
                live_events = [(p.pdu, p.stream) for p in pending.values() if p.live]
                await update_indexes(txn, self._db.dialect, room_id, live_events, redacted)
                if on_txn is not None and pending:
                    # Last, so the hook reads the batch's rows and the new membership; what it writes
                    # commits (or rolls back) with the events (e.g. the federation outbox).
                    await on_txn(txn, [(_for_hooks(p), p.stream) for p in pending.values()])
            # Committed: publish to caches and to waiting readers.
            writer.commit()
            if new_current is not None:
                self._current.replace(room_id, new_current)
            elif current_written:
                self._current.invalidate(room_id)  # written from a delta, the map not at hand
            for stale in [*redacted, *(e for e, p in pending.items() if p.deoutlier)]:
                self._event_cache.invalidate(stale)
            self._positions.publish(next_max, next_min)
        ids = [i.pdu.event_id for i in batch]
        return [pending[eid].stream if eid in pending else existing[eid].stream for eid in ids]

    async def rewrite_states(
        self,
        room_id: str,
        rewrites: Sequence[StateRewrite],
        new_current_state: StateMap,
        on_txn: Callable[[Txn, int], Awaitable[None]],
    ) -> int:
        """Replace the state of events already persisted (a partial-state room's, once its full state is
        known: see partial_state.py) and the room's current state, in one transaction under the persist
        lock. Takes a stream position of its own (passed to ``on_txn``, published after the commit) so
        that /sync notices the change; returns it."""
        async with self._lock:
            position = self._positions.max_committed + 1
            settle = self.allocator.settle() if self.allocator is not None else contextlib.nullcontext()
            async with settle, self._db.transaction() as txn:
                if self.allocator is not None:
                    # Several writers (ranvier.workers): the position comes from the shared sequence.
                    (position,), _ = await self.allocator.allocate(txn, 1, 0)
                writer = StateGroupWriter(self._groups, txn, room_id)
                rejected = await rewrite_event_states(txn, writer, room_id, rewrites)
                if self.allocator is not None:
                    self.allocator.touched(room_id, rejected)
                await writer.finish()
                new_current = await write_current_state(txn, self._current, room_id, new_current_state, {})
                await on_txn(txn, position)
            writer.commit()
            if new_current is not None:
                self._current.replace(room_id, new_current)
            else:
                self._current.invalidate(room_id)
            for event_id in rejected:
                self._event_cache.invalidate(event_id)
            self._positions.publish(position, self._positions.min_committed)
        return position

    async def _assign_state(
        self, writer: StateGroupWriter, pending: list[_Pending], held: dict[str, _Held]
    ) -> None:
        """Give every non-outlier its state groups before and after, in batch order (parents first)."""
        after: dict[str, int] = {
            e: h.state_after_group for e, h in held.items() if h.state_after_group is not None
        }
        for p in pending:
            item = p.item
            if item.outlier:
                continue
            if item.state_group_before is not None:
                await writer.ensure_exists(item.state_group_before)
                p.before = item.state_group_before
            elif item.state_before_is_after_prev:
                prev = p.pdu.prev_event_ids[0]
                if prev not in after:
                    raise ValueError(f"{p.pdu.event_id}: no state is held after its prev event {prev}")
                p.before = after[prev]
            else:
                assert item.state_before is not None
                candidates = [after[pid] for pid in p.pdu.prev_event_ids if pid in after]
                p.before = await writer.group_for(item.state_before, candidates)
            key = p.pdu.state_tuple
            # A rejected event never changes the state; a soft-failed one did pass auth at its own state.
            if key is None or item.rejected_reason is not None:
                p.after = p.before
            else:
                p.after = await writer.group_with(p.before, key, p.pdu.event_id)
            after[p.pdu.event_id] = p.after


@dataclass(frozen=True, slots=True)
class _Held:
    """An event the database held when the batch's transaction began."""

    stream: int
    outlier: bool
    state_after_group: int | None
    topo_depth: int | None


async def _held(txn: Txn, event_ids: list[str], batch: Sequence[EventToPersist]) -> dict[str, _Held]:
    """The held events among ``event_ids`` and the prev events of ``batch``: one query per 500 ids (one
    for a transaction of 50 PDUs), where each step of the batch used to read its own."""
    wanted = dict.fromkeys(event_ids)
    for item in batch:
        wanted.update(dict.fromkeys(item.pdu.prev_event_ids))
    out: dict[str, _Held] = {}
    for part in chunks(list(wanted)):
        rows = await txn.fetchall(
            "SELECT event_id, stream_ordering, outlier, state_after_group, topo_depth FROM events"
            f" WHERE event_id IN ({in_list(len(part))})",
            tuple(part),
        )
        for e, stream, outlier, group, topo_depth in rows:
            out[e] = _Held(
                int(stream),
                bool(outlier),
                None if group is None else int(group),
                None if topo_depth is None else int(topo_depth),
            )
    return out


@dataclass(frozen=True, slots=True)
class _AtStart:
    """What the transaction reads before writing anything."""

    room_known: bool
    held: dict[str, _Held]
    # Which of the batch's events are backward extremities of the room; the redactions held whose target
    # is one of the batch's events or one its redactions redact: (redaction, target, permitted by power).
    # None: not read yet (a batch too large for one statement), read when needed.
    backward: set[str] | None
    redactions: list[tuple[str, str, bool]] | None


async def _read_at_start(txn: Txn, room_id: str, batch: Sequence[EventToPersist]) -> _AtStart:
    """One statement (one trip to the database) for a batch of ordinary size (a /send transaction's 50
    PDUs): the room's row, ``_held``'s rows, the backward extremities among the batch and the redactions
    of it, which nothing in the transaction writes before they are used."""
    ids: list[str] = list(dict.fromkeys(i.pdu.event_id for i in batch))
    wanted = dict.fromkeys(ids)
    for item in batch:
        wanted.update(dict.fromkeys(item.pdu.prev_event_ids))
    targets = list(dict.fromkeys([*ids, *(i.pdu.redacts for i in batch if i.pdu.redacts is not None)]))
    if not ids or max(len(wanted), len(targets)) > MAX_IN_LIST:  # (an empty IN () is not SQL)
        known = await txn.fetchval("SELECT 1 FROM rooms WHERE room_id = ?", (room_id,)) is not None
        return _AtStart(known, await _held(txn, ids, batch), None, None)
    rows = await txn.fetchall(
        "SELECT 'e', event_id, stream_ordering, outlier, state_after_group, topo_depth, NULL FROM events"
        f" WHERE event_id IN ({in_list(len(wanted))})"
        " UNION ALL SELECT 'r', room_id, NULL, NULL, NULL, NULL, NULL FROM rooms WHERE room_id = ?"
        " UNION ALL SELECT 'b', event_id, NULL, NULL, NULL, NULL, NULL FROM backward_extremities"
        f" WHERE room_id = ? AND event_id IN ({in_list(len(ids))})"
        " UNION ALL SELECT 'x', event_id, NULL, permitted_by_power, NULL, NULL, redacts FROM redactions"
        f" WHERE redacts IN ({in_list(len(targets))})",
        (*wanted, room_id, room_id, *ids, *targets),
    )
    held: dict[str, _Held] = {}
    backward: set[str] = set()
    redactions: list[tuple[str, str, bool]] = []
    known = False
    for kind, e, stream, flag, group, topo_depth, redacts in rows:
        if kind == "e":
            held[e] = _Held(
                int(stream),
                bool(flag),
                None if group is None else int(group),
                None if topo_depth is None else int(topo_depth),
            )
        elif kind == "r":
            known = True
        elif kind == "b":
            backward.add(e)
        else:
            redactions.append((e, redacts, bool(flag)))
    return _AtStart(known, held, backward, redactions)


def _topo_position(p: _Pending, floors: dict[str, int]) -> tuple[int, int]:
    """(ordering depth, order) in the room's topological order: the room layer's placement if it gave one,
    else (depth, stream ordering * TOPO_SCALE), the depth raised to just after the event's parents.

    The raise is why the ordering depth is not the PDU's depth: a sender chooses ``depth`` freely (the
    auth rules do not check it), and one event of depth 1 citing the room's newest events would otherwise
    sort, with everything /messages pages past it, at the start of history."""
    if p.item.topo_position is not None:
        return p.item.topo_position
    return max(p.pdu.depth, floors.get(p.pdu.event_id, 0)), p.stream * TOPO_SCALE


MAX_TOPO_DEPTH = 2**63 - 1  # BIGINT


def _ordering_floors(pending: list[_Pending], held: dict[str, _Held]) -> dict[str, int]:
    """For each non-outlier of the batch, one more than the largest ordering depth of its parents (those
    of the batch, which come parents first, and those already stored)."""
    in_batch = {p.pdu.event_id for p in pending}
    known: dict[str, int] = {
        e: h.topo_depth for e, h in held.items() if h.topo_depth is not None and e not in in_batch
    }
    floors: dict[str, int] = {}
    for p in pending:
        if p.item.outlier:
            continue
        parents = [known[e] for e in p.pdu.prev_event_ids if e in known]
        if parents:
            floors[p.pdu.event_id] = min(max(parents) + 1, MAX_TOPO_DEPTH)
        known[p.pdu.event_id] = _topo_position(p, floors)[0]
    return floors


async def _write_events(txn: Txn, room_id: str, pending: list[_Pending], held: dict[str, _Held]) -> None:
    new = [p for p in pending if not p.deoutlier]
    floors = _ordering_floors(pending, held)
    await txn.executemany(
        "INSERT INTO events (event_id, room_id, stream_ordering, depth, type, state_key, sender, membership,"
        " origin_server_ts, outlier, rejected_reason, soft_failed, room_version,"
        " state_before_group, state_after_group, json, topo_depth, topo_order)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                p.pdu.event_id,
                room_id,
                p.stream,
                p.pdu.depth,
                p.pdu.type,
                p.pdu.state_key,
                p.pdu.sender,
                p.pdu.membership if p.pdu.type == "m.room.member" else None,
                p.pdu.origin_server_ts,
                p.item.outlier,
                p.item.rejected_reason,
                p.item.soft_failed,
                p.pdu.room_version.identifier,
                p.before,
                p.after,
                p.pdu.json_text(),  # the bytes encoded when it was parsed, not a second full encoding
                *_topo_position(p, floors),
            )
            for p in new
        ],
    )
    await txn.executemany(
        "UPDATE events SET outlier = FALSE, stream_ordering = ?, rejected_reason = ?, soft_failed = ?,"
        " state_before_group = ?, state_after_group = ?, topo_depth = ?, topo_order = ? WHERE event_id = ?",
        [
            (
                p.stream,
                p.item.rejected_reason,
                p.item.soft_failed,
                p.before,
                p.after,
                *_topo_position(p, floors),
                p.pdu.event_id,
            )
            for p in pending
            if p.deoutlier
        ],
    )
    # A PDU may name the same prev or auth event twice; the edge is recorded once.
    await txn.executemany(
        "INSERT INTO event_edges (event_id, prev_event_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
        [(p.pdu.event_id, prev) for p in new for prev in p.pdu.prev_event_ids],
    )
    await txn.executemany(
        "INSERT INTO event_auth_edges (event_id, auth_event_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
        [(p.pdu.event_id, auth) for p in new for auth in p.pdu.auth_event_ids],
    )


async def _update_forward_extremities(
    txn: Txn, room_id: str, pending: list[_Pending], backward: set[str] | None
) -> None:
    """Runs before ``_update_backward_extremities``: it reads the backward extremities as they were
    (``backward``: those among the batch, when ``_read_at_start`` read them already)."""
    live_new = [p for p in pending if p.live]
    if not live_new:
        return
    parents: set[str] = {prev for p in live_new for prev in p.pdu.prev_event_ids}
    await txn.executemany(
        "DELETE FROM forward_extremities WHERE room_id = ? AND event_id = ?", [(room_id, e) for e in parents]
    )
    # A new live event whose live child is in the batch is among `parents`. One whose live child was
    # persisted earlier was named by that child as a prev event, so it is a backward extremity until now:
    # only those need the edges table. (Simple indexed lookups, no join: a join's cached generic plan on
    # PostgreSQL went to a sequential scan while the tables grew.)
    ids: list[str] = [p.pdu.event_id for p in live_new]
    if backward is not None:
        was_backward = {e for e in ids if e in backward}
    else:
        was_backward = await _select_ids(
            txn,
            "SELECT event_id FROM backward_extremities WHERE room_id = ? AND event_id IN ({})",
            ids,
            (room_id,),
        )
    if was_backward:
        children: dict[str, set[str]] = {}
        for part in chunks(list(was_backward)):
            rows = await txn.fetchall(
                "SELECT event_id, prev_event_id FROM event_edges"
                f" WHERE prev_event_id IN ({in_list(len(part))})",
                tuple(part),
            )
            for child, parent in rows:
                children.setdefault(child, set()).add(parent)
        live_children = await _select_ids(
            txn, f"SELECT event_id FROM events WHERE {live()} AND event_id IN ({{}})", list(children)
        )
        parents.update(parent for child in live_children for parent in children[child])
    await txn.executemany(
        "INSERT INTO forward_extremities (room_id, event_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
        [(room_id, e) for e in ids if e not in parents],
    )


async def _select_ids(txn: Txn, sql: str, ids: list[str], params: tuple[object, ...] = ()) -> set[str]:
    """Run ``sql`` (whose ``{}`` is the IN list) over ``ids`` in chunks; the first column of the rows."""
    out: set[str] = set()
    for part in chunks(ids):
        rows = await txn.fetchall(sql.format(in_list(len(part))), (*params, *part))
        out.update(r[0] for r in rows)
    return out


async def _update_backward_extremities(
    txn: Txn, room_id: str, pending: dict[str, _Pending], held: dict[str, _Held]
) -> None:
    non_outliers = [e for e, p in pending.items() if not p.item.outlier]
    await txn.executemany(
        "DELETE FROM backward_extremities WHERE room_id = ? AND event_id = ?",
        [(room_id, e) for e in non_outliers],
    )
    prevs = list({prev for p in pending.values() if p.accepted_non_outlier for prev in p.pdu.prev_event_ids})

    def in_timeline(e: str) -> bool:
        # As the events table is now: written by this batch (as an outlier or not), else as it was held.
        p = pending.get(e)
        if p is not None:
            return not p.item.outlier
        h = held.get(e)
        return h is not None and not h.outlier

    await txn.executemany(
        "INSERT INTO backward_extremities (room_id, event_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
        [(room_id, e) for e in prevs if not in_timeline(e)],
    )


async def _apply_redactions(
    txn: Txn, pending: list[_Pending], held: list[tuple[str, str, bool]] | None
) -> list[str]:
    """Record accepted redactions and mark their targets, whichever of the two arrived first. ``held``:
    the redactions stored before the transaction whose target is one of the batch's events or one its
    redactions redact, when ``_read_at_start`` read them (else they are read here).

    Returns the ids of events that became redacted (their cached copies are stale).
    """
    redactions = [
        p
        for p in pending
        if p.pdu.redacts is not None and p.item.rejected_reason is None and not p.item.soft_failed
    ]
    await txn.executemany(
        "INSERT INTO redactions (event_id, redacts, permitted_by_power) VALUES (?, ?, ?)"
        " ON CONFLICT DO NOTHING",
        [(p.pdu.event_id, p.pdu.redacts, p.item.redaction_permitted_by_power) for p in redactions],
    )
    targets = list({p.pdu.redacts for p in redactions} | {p.pdu.event_id for p in pending if not p.deoutlier})
    found: list[tuple[str, str, bool]] = []  # (redaction, target, permitted by power)
    if held is not None:
        # What the table holds now: the rows held before, and the batch's own where none was (a row of
        # the same redaction event, which always redacts the same target, stays as it was).
        wanted = set(targets)
        found = [r for r in held if r[1] in wanted]
        stored = {r[0] for r in held}
        found += [
            (p.pdu.event_id, p.pdu.redacts, p.item.redaction_permitted_by_power)
            for p in redactions
            if p.pdu.event_id not in stored and p.pdu.redacts is not None
        ]
    else:
        for part in chunks(targets):
            found += await txn.fetchall(
                "SELECT event_id, redacts, permitted_by_power FROM redactions"
                f" WHERE redacts IN ({in_list(len(part))})",
                tuple(part),
            )
    if not found:
        return []
    involved = list({e for r, t, _ in found for e in (r, t)})
    info: dict[str, tuple[str, str, str, str | None, int]] = {}
    for part in chunks(involved):
        for eid, sender, room, version, redacted_by, stream in await txn.fetchall(
            "SELECT event_id, sender, room_id, room_version, redacted_by, stream_ordering FROM events"
            f" WHERE event_id IN ({in_list(len(part))})",
            tuple(part),
        ):
            info[eid] = (sender, room, version, redacted_by, int(stream))
    updates: dict[str, str] = {}
    # The first valid redaction to arrive is the one shown in redacted_because.
    for redaction, target, by_power in sorted(found, key=lambda f: info[f[0]][4]):
        if target not in info or target in updates or info[target][3] is not None:
            continue  # not held yet, or already redacted
        r_sender, r_room, *_ = info[redaction]
        t_sender, t_room, version, *_ = info[target]
        if r_room != t_room:
            continue
        # Before v3 the auth rules checked the redaction; from v3 it applies to events of the
        # redacter's own server, or when the room layer found the power level sufficient.
        deferred = get_room_version(version).deferred_redaction_check
        if not deferred or by_power or server_of(r_sender) == server_of(t_sender):
            updates[target] = redaction
    await txn.executemany(
        "UPDATE events SET redacted_by = ? WHERE event_id = ?", [(r, t) for t, r in updates.items()]
    )
    return list(updates)
