"""State groups: every distinct state map stored once, mostly as a small delta on another group.

A group is a snapshot (all entries, ``prev_group`` NULL) or a delta on ``prev_group`` (changed entries; a
NULL event id removes a key). Chains are at most ``MAX_CHAIN`` deltas long, so reading any group touches at
most that many groups plus one snapshot. Storing the state before a message in a room of 50,000 members
writes no row at all when it equals the state after the message's prev event (the usual case), and a state
event adds a one-row delta.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ranvier.protocol.events import StateKey

from .caches import LruCache
from .engine import Txn, chunks, in_list

MAX_CHAIN = 100
# Keys per statement in a filtered lookup: two bound values each.
_KEYS_PER_QUERY = 200

StateDict = dict[StateKey, str]


class StateGroups:
    """Reads and writes of state groups; the full maps of recently used groups are kept in memory."""

    def __init__(self, max_cached_entries: int = 1_000_000) -> None:
        # Values are shared with nobody outside this module: callers get copies.
        self.cache: LruCache[int, StateDict] = LruCache(max_cached_entries, len)
        self._next_id = 1
        # Lookups since start, for the benchmark's "rows read".
        self.rows_read = 0

    async def load_next_id(self, txn: Txn) -> None:
        self._next_id = int(await txn.fetchval("SELECT COALESCE(MAX(group_id), 0) FROM state_groups")) + 1

    def allocate_id(self) -> int:
        gid = self._next_id
        self._next_id += 1
        return gid

    # -- reading -----------------------------------------------------------------------------------------

    async def _chain(self, txn: Txn, group: int) -> list[int]:
        """``group`` and its ancestors, newest first, down to the snapshot."""
        rows = await txn.fetchall(
            "WITH RECURSIVE chain(group_id, prev_group) AS ("
            " SELECT group_id, prev_group FROM state_groups WHERE group_id = ?"
            " UNION ALL"
            " SELECT g.group_id, g.prev_group FROM state_groups g JOIN chain c ON g.group_id = c.prev_group"
            ") SELECT group_id, prev_group FROM chain",
            (group,),
        )
        prev_of = {int(g): (None if p is None else int(p)) for g, p in rows}
        if group not in prev_of:
            raise LookupError(f"no state group {group}")
        order: list[int] = []
        current: int | None = group
        while current is not None:
            order.append(current)
            current = prev_of[current]
        return order

    async def load(self, txn: Txn, group: int) -> StateDict:
        """The full map of ``group``. The returned dict is the cached one: do not mutate it."""
        cached = self.cache.get(group)
        if cached is not None:
            return cached
        chain = await self._chain(txn, group)
        # Start from the newest cached ancestor, if any, and apply only the deltas after it.
        base: StateDict = {}
        to_apply = chain
        for i, gid in enumerate(chain):
            hit = self.cache.get(gid)
            if hit is not None:
                base, to_apply = dict(hit), chain[:i]
                break
        entries: dict[int, list[tuple[str, str, str | None]]] = {gid: [] for gid in to_apply}
        for part in chunks(to_apply):
            rows = await txn.fetchall(
                "SELECT group_id, type, state_key, event_id FROM state_group_entries"
                f" WHERE group_id IN ({in_list(len(part))})",
                tuple(part),
            )
            self.rows_read += len(rows)
            for gid, etype, skey, eid in rows:
                entries[int(gid)].append((etype, skey, eid))
        for gid in reversed(to_apply):
            for etype, skey, eid in entries[gid]:
                if eid is None:
                    base.pop((etype, skey), None)
                else:
                    base[(etype, skey)] = eid
        self.cache.put(group, base)
        return base

    async def load_keys(self, txn: Txn, group: int, keys: Iterable[StateKey]) -> StateDict:
        """Only ``keys`` of ``group``: one indexed lookup per key and chain link, not the whole map."""
        wanted = list(dict.fromkeys(keys))
        cached = self.cache.get(group)
        if cached is not None:
            return {k: cached[k] for k in wanted if k in cached}
        chain = await self._chain(txn, group)
        found: dict[StateKey, tuple[int, str | None]] = {}  # key -> (position in chain, event id)
        position = {gid: i for i, gid in enumerate(chain)}
        for part_groups in chunks(chain):
            for part_keys in chunks(wanted, _KEYS_PER_QUERY):
                cond = " OR ".join(["(type = ? AND state_key = ?)"] * len(part_keys))
                params: list[object] = [x for k in part_keys for x in k]
                rows = await txn.fetchall(
                    "SELECT group_id, type, state_key, event_id FROM state_group_entries"
                    f" WHERE group_id IN ({in_list(len(part_groups))}) AND ({cond})",
                    (*part_groups, *params),
                )
                self.rows_read += len(rows)
                for gid, etype, skey, eid in rows:
                    pos = position[int(gid)]
                    # the newest group in the chain that mentions the key decides
                    if (etype, skey) not in found or pos < found[(etype, skey)][0]:
                        found[(etype, skey)] = (pos, eid)
        return {k: eid for k, (_, eid) in found.items() if eid is not None}


@dataclass
class StateGroupWriter:
    """Writes the groups one persist transaction needs; ``commit`` publishes them to the cache afterwards."""

    groups: StateGroups
    txn: Txn
    room_id: str
    _new: dict[int, StateDict] = field(default_factory=dict)
    _chain_lengths: dict[int, int] = field(default_factory=dict)

    async def _full(self, group: int) -> StateDict:
        if group in self._new:
            return self._new[group]
        return await self.groups.load(self.txn, group)

    async def _chain_length(self, group: int) -> int:
        length = self._chain_lengths.get(group)
        if length is None:
            value = await self.txn.fetchval(
                "SELECT chain_length FROM state_groups WHERE group_id = ?", (group,)
            )
            if value is None:
                raise LookupError(f"no state group {group}")
            length = self._chain_lengths[group] = int(value)
        return length

    async def ensure_exists(self, group: int) -> None:
        if group not in self._new and group not in self.groups.cache:
            await self._chain_length(group)

    async def group_for(self, state: Mapping[StateKey, str], candidates: Iterable[int]) -> int:
        """A group whose map equals ``state``: a candidate if one matches, else a new delta or snapshot."""
        best: tuple[int, StateDict, list[StateKey]] | None = None
        for cand in dict.fromkeys(candidates):
            base = await self._full(cand)
            if base is state or base == state:
                return cand
            if await self._chain_length(cand) >= MAX_CHAIN:
                continue
            changed = _changes(base, state)
            if best is None or len(changed) < len(best[2]):
                best = (cand, base, changed)
        full = dict(state)
        # A delta larger than half the map saves little and lengthens reads: snapshot instead.
        if best is not None and len(best[2]) <= max(len(full) // 2, 1):
            return await self._write(best[0], full, {k: full.get(k) for k in best[2]})
        return await self._write(None, full, full)

    async def group_with(self, base_group: int, key: StateKey, event_id: str) -> int:
        """The group of ``base_group``'s map with ``key`` set to ``event_id`` (the state after an event)."""
        base = await self._full(base_group)
        if base.get(key) == event_id:
            return base_group
        full = dict(base)
        full[key] = event_id
        if await self._chain_length(base_group) >= MAX_CHAIN:
            return await self._write(None, full, full)
        return await self._write(base_group, full, {key: event_id})

    async def _write(
        self, prev_group: int | None, full: StateDict, entries: Mapping[StateKey, str | None]
    ) -> int:
        gid = self.groups.allocate_id()
        chain = 0 if prev_group is None else await self._chain_length(prev_group) + 1
        await self.txn.execute(
            "INSERT INTO state_groups (group_id, room_id, prev_group, chain_length) VALUES (?, ?, ?, ?)",
            (gid, self.room_id, prev_group, chain),
        )
        await self.txn.executemany(
            "INSERT INTO state_group_entries (group_id, type, state_key, event_id) VALUES (?, ?, ?, ?)",
            [(gid, t, s, e) for (t, s), e in entries.items()],
        )
        self._new[gid] = full
        self._chain_lengths[gid] = chain
        return gid

    def commit(self) -> None:
        for gid, full in self._new.items():
            self.groups.cache.put(gid, full)


def _changes(base: Mapping[StateKey, str], state: Mapping[StateKey, str]) -> list[StateKey]:
    changed = [k for k, v in state.items() if base.get(k) != v]
    changed.extend(k for k in base if k not in state)
    return changed
