"""State groups: every distinct state map stored once, as a snapshot or a delta on an ancestor group.

Groups form lineages: a group built from a base group has ``depth`` = base depth + 1, and a snapshot has
depth 0. Storing each group as a delta on its direct base would make reads walk the whole lineage; cutting
it with a snapshot every k links makes a room whose every event changes the state (50,000 joins) cost
n^2/2k rows. Instead the delta is taken against the ancestor at depth ``d - lowbit(d)``, as in a Fenwick
tree: a group's chain of deltas down to its snapshot is at most log2(d) + 1 long, the delta of a group
merges the lowbit(d) changes it skips over, and n state changes write O(n log n) rows in total
(about 390,000 for 50,000 joins). That ancestor is always on the base group's own chain, so no search is
needed.

Storing the state before a message (the usual case: equal to the state after its prev event) writes no
row at all; a state event adds one small delta.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ranvier.protocol.events import StateKey

from .caches import LruCache
from .engine import Reader, Txn, chunks, in_list

# Keys per statement in a filtered lookup: two bound values each.
_KEYS_PER_QUERY = 200

StateDict = dict[StateKey, str]
Delta = dict[StateKey, str | None]  # a NULL/None event id removes the key


def lowbit(n: int) -> int:
    return n & -n


class StateGroups:
    """Reads and writes of state groups, with in-memory caches of recent groups."""

    def __init__(self, max_cached_entries: int = 1_000_000) -> None:
        # Full maps of recently used groups. Values are never handed out: callers get copies.
        self.cache: LruCache[int, StateDict] = LruCache(max_cached_entries, len)
        # Per-group stored entries and (prev_group, depth): what writing a new delta needs to read.
        self.entries: LruCache[int, Delta] = LruCache(max(max_cached_entries // 4, 1), lambda d: len(d) + 1)
        self.meta: LruCache[int, tuple[int | None, int]] = LruCache(max(max_cached_entries // 5, 1))
        self._next_id = 1
        self._stride = 1
        # Entries read from the database since start, for the benchmark's "rows read".
        self.rows_read = 0

    async def load_next_id(self, txn: Txn) -> None:
        self._next_id = int(await txn.fetchval("SELECT COALESCE(MAX(group_id), 0) FROM state_groups")) + 1

    def stripe(self, index: int, count: int) -> None:
        """Several processes write state groups (ranvier.workers): this one takes only the ids equal to
        ``index`` modulo ``count``, above every id stored when it started, so no two processes ever pick the
        same id (every process must use the same ``count``: restart them all when it changes)."""
        self._stride = count
        self._next_id += (index - self._next_id) % count

    def allocate_id(self) -> int:
        gid = self._next_id
        self._next_id += self._stride
        return gid

    async def chain(self, txn: Reader, group: int) -> list[tuple[int, int]]:
        """``(group, depth)`` for ``group`` and the groups its delta rests on, newest first."""
        out: list[tuple[int, int]] = []
        # What this walk fetched, read from here rather than the cache: a cache smaller than the chain
        # evicts the chain's first groups while it stores the rest.
        fetched: dict[int, tuple[int | None, int]] = {}
        current: int | None = group
        while current is not None:
            meta = fetched.get(current) or self.meta.get(current)
            if meta is None:
                fetched.update(await self._fetch_chain_meta(txn, current))
                meta = fetched.get(current)
                if meta is None:
                    raise LookupError(f"no state group {current}")
            out.append((current, meta[1]))
            current = meta[0]
        return out

    async def _fetch_chain_meta(self, txn: Reader, group: int) -> dict[int, tuple[int | None, int]]:
        rows = await txn.fetchall(
            "WITH RECURSIVE chain(group_id, prev_group, depth) AS ("
            " SELECT group_id, prev_group, depth FROM state_groups WHERE group_id = ?"
            " UNION ALL"
            " SELECT g.group_id, g.prev_group, g.depth FROM state_groups g"
            " JOIN chain c ON g.group_id = c.prev_group"
            ") SELECT group_id, prev_group, depth FROM chain",
            (group,),
        )
        out: dict[int, tuple[int | None, int]] = {}
        for gid, prev, depth in rows:
            out[int(gid)] = (None if prev is None else int(prev), int(depth))
            self.meta.put(int(gid), out[int(gid)])
        return out

    async def stored_entries(self, txn: Reader, groups: list[int]) -> dict[int, Delta]:
        out: dict[int, Delta] = {}
        missing = []
        for gid in groups:
            hit = self.entries.get(gid)
            if hit is None:
                missing.append(gid)
            else:
                out[gid] = hit
        for gid in missing:
            out[gid] = {}
        for part in chunks(missing):
            rows = await txn.fetchall(
                "SELECT group_id, type, state_key, event_id FROM state_group_entries"
                f" WHERE group_id IN ({in_list(len(part))})",
                tuple(part),
            )
            self.rows_read += len(rows)
            for gid, etype, skey, eid in rows:
                out[int(gid)][(etype, skey)] = eid
        for gid in missing:
            self.entries.put(gid, out[gid])
        return out

    async def load(self, txn: Reader, group: int) -> StateDict:
        """The full map of ``group``. The returned dict is the cached one: do not mutate it."""
        cached = self.cache.get(group)
        if cached is not None:
            return cached
        chain = [gid for gid, _ in await self.chain(txn, group)]
        # Start from the newest cached group of the chain, if any, and apply only the deltas after it.
        base: StateDict = {}
        to_apply = chain
        for i, gid in enumerate(chain):
            hit = self.cache.get(gid)
            if hit is not None:
                base, to_apply = dict(hit), chain[:i]
                break
        entries = await self.stored_entries(txn, to_apply)
        for gid in reversed(to_apply):
            for key, eid in entries[gid].items():
                if eid is None:
                    base.pop(key, None)
                else:
                    base[key] = eid
        self.cache.put(group, base)
        return base

    async def load_without_type(self, txn: Reader, group: int, left_out: str) -> StateDict:
        """``group``'s entries of every type but ``left_out``: two range seeks of the primary key
        (group_id, type, state_key) per group of the chain, on each side of the type left out, so its rows
        (a big room's members) are neither returned nor scanned."""
        cached = self.cache.get(group)
        if cached is not None:
            return {k: v for k, v in cached.items() if k[0] != left_out}
        chain = [gid for gid, _ in await self.chain(txn, group)]
        position = {gid: i for i, gid in enumerate(chain)}
        found: dict[StateKey, tuple[int, str | None]] = {}
        for part in chunks(chain):
            marks = in_list(len(part))
            rows = await txn.fetchall(
                f"SELECT group_id, type, state_key, event_id FROM state_group_entries"
                f" WHERE group_id IN ({marks}) AND type < ?"
                " UNION ALL SELECT group_id, type, state_key, event_id FROM state_group_entries"
                f" WHERE group_id IN ({marks}) AND type > ?",
                (*part, left_out, *part, left_out),
            )
            self.rows_read += len(rows)
            for gid, etype, skey, eid in rows:
                key = (etype, skey)
                pos = position[int(gid)]
                if key not in found or pos < found[key][0]:  # the newest group of the chain decides
                    found[key] = (pos, eid)
        return {k: eid for k, (_, eid) in found.items() if eid is not None}

    async def load_keys(self, txn: Reader, group: int, keys: Iterable[StateKey]) -> StateDict:
        """Only ``keys`` of ``group``: indexed lookups in the chain's groups, not the whole map."""
        wanted = list(dict.fromkeys(keys))
        cached = self.cache.get(group)
        if cached is not None:
            return {k: cached[k] for k in wanted if k in cached}
        chain = [gid for gid, _ in await self.chain(txn, group)]
        position = {gid: i for i, gid in enumerate(chain)}
        found: dict[StateKey, tuple[int, str | None]] = {}  # key -> (position in chain, event id)
        wanted_set = set(wanted)
        for part_keys in chunks(wanted, _KEYS_PER_QUERY):
            # IN lists on each column of the (group_id, type, state_key) key let both engines seek the
            # index for every combination; the few combinations nobody asked for are dropped below.
            types = list({t for t, _ in part_keys})
            skeys = list({s for _, s in part_keys})
            rows = await txn.fetchall(
                "SELECT group_id, type, state_key, event_id FROM state_group_entries"
                f" WHERE group_id IN ({in_list(len(chain))}) AND type IN ({in_list(len(types))})"
                f" AND state_key IN ({in_list(len(skeys))})",
                (*chain, *types, *skeys),
            )
            self.rows_read += len(rows)
            for gid, etype, skey, eid in rows:
                key = (etype, skey)
                pos = position[int(gid)]
                # the newest group of the chain that mentions the key decides
                if key in wanted_set and (key not in found or pos < found[key][0]):
                    found[key] = (pos, eid)
        return {k: eid for k, (_, eid) in found.items() if eid is not None}


@dataclass
class StateGroupWriter:
    """Builds the groups one persist transaction needs.

    New groups stay in memory as deltas; their full maps are built only when asked for (a comparison in
    ``group_for``), so a batch of 500 joins in a room of 50,000 members does not copy the map 500 times.
    ``flush`` writes the rows (one statement per table); ``finish`` builds the full maps of the groups the
    next batch will build on; ``commit``, after the transaction, publishes them to the caches.
    """

    groups: StateGroups
    txn: Txn
    room_id: str
    _full: dict[int, StateDict] = field(default_factory=dict)
    _entries: dict[int, Delta] = field(default_factory=dict)
    _meta: dict[int, tuple[int | None, int]] = field(default_factory=dict)
    _size: dict[int, int] = field(default_factory=dict)
    _used_as_base: set[int] = field(default_factory=set)
    _flushed: int = 0

    async def full_map(self, group: int) -> StateDict:
        full = self._full.get(group)
        if full is not None:
            return full
        if group not in self._entries:
            return await self.groups.load(self.txn, group)
        prev = self._meta[group][0]
        full = {} if prev is None else dict(await self.full_map(prev))
        for key, eid in self._entries[group].items():
            if eid is None:
                full.pop(key, None)
            else:
                full[key] = eid
        self._full[group] = full
        return full

    async def _get(self, group: int, key: StateKey) -> str | None:
        """One entry of a group's map, following new groups' deltas rather than building their maps."""
        current: int | None = group
        while current is not None:
            if current in self._full:
                return self._full[current].get(key)
            if current not in self._entries:
                cached = self.groups.cache.get(current)
                if cached is not None:
                    return cached.get(key)
                # One key by index: a cold group's whole map is not read for it.
                return (await self.groups.load_keys(self.txn, current, [key])).get(key)
            entries = self._entries[current]
            if key in entries:
                return entries[key]
            current = self._meta[current][0]
        return None

    def _size_of(self, group: int) -> int | None:
        """The size of ``group``'s map when known without reading it (None: not known)."""
        if group in self._size:
            return self._size[group]
        full = self._full.get(group)
        if full is None and group not in self._entries:
            full = self.groups.cache.get(group)
        return None if full is None else len(full)

    async def _chain(self, group: int) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        current: int | None = group
        while current is not None and current in self._meta:
            prev, depth = self._meta[current]
            out.append((current, depth))
            current = prev
        if current is not None:
            out += await self.groups.chain(self.txn, current)
        return out

    async def ensure_exists(self, group: int) -> None:
        if group not in self._meta and group not in self.groups.meta:
            await self.groups.chain(self.txn, group)

    async def group_for(self, state: Mapping[StateKey, str], candidates: Iterable[int]) -> int:
        """A group whose map equals ``state``: a candidate if one matches, else a new delta or snapshot."""
        best: tuple[int, Delta] | None = None
        for cand in dict.fromkeys(candidates):
            base = await self.full_map(cand)
            if base is state or base == state:
                return cand
            changes: Delta = {k: v for k, v in state.items() if base.get(k) != v}
            changes.update({k: None for k in base if k not in state})
            if best is None or len(changes) < len(best[1]):
                best = (cand, changes)
        if best is None:
            return self._write(None, 0, dict(state), len(state))
        return await self._derive(best[0], best[1], len(state))

    async def group_with(self, base_group: int, key: StateKey, event_id: str) -> int:
        """The group of ``base_group``'s map with ``key`` set to ``event_id`` (the state after an event)."""
        old = await self._get(base_group, key)
        if old == event_id:
            return base_group
        size = self._size_of(base_group)
        return await self._derive(base_group, {key: event_id}, None if size is None else size + (old is None))

    async def _derive(self, base_group: int, changes: Delta, size: int | None) -> int:
        """A new group: ``base_group``'s map with ``changes``, whose map has ``size`` entries (None: not
        known without reading the base group's whole map, which a cold big room's join does not do: the
        delta is written, at most as many rows as the map has keys)."""
        self._used_as_base.add(base_group)
        chain = await self._chain(base_group)
        depth = chain[0][1] + 1
        target = depth - lowbit(depth)
        # The groups the new delta skips over, newest first, down to (not including) the one it rests on.
        skipped = [gid for gid, d in chain if d > target]
        anchor = next((gid for gid, d in chain if d == target), None)
        merged: Delta = {}
        stored = {g: self._entries[g] for g in skipped if g in self._entries}
        stored.update(await self.groups.stored_entries(self.txn, [g for g in skipped if g not in stored]))
        for gid in reversed(skipped):
            merged.update(stored[gid])
        merged.update(changes)
        # A delta as large as the map itself buys nothing: start a new lineage with a snapshot. (anchor is
        # never None for chains built here; a snapshot would be correct anyway.)
        if anchor is None or (size is not None and len(merged) >= size):
            full = dict(await self.full_map(base_group))
            for key, eid in changes.items():
                if eid is None:
                    full.pop(key, None)
                else:
                    full[key] = eid
            gid = self._write(None, 0, dict(full), len(full))
            self._full[gid] = full
            return gid
        return self._write(anchor, depth, merged, size)

    def _write(self, prev_group: int | None, depth: int, entries: Delta, size: int | None) -> int:
        gid = self.groups.allocate_id()
        self._entries[gid] = entries
        self._meta[gid] = (prev_group, depth)
        if size is not None:
            self._size[gid] = size
        return gid

    async def flush(self) -> None:
        """Write the rows of the groups created since the last flush."""
        new = list(self._entries)[self._flushed :]
        self._flushed += len(new)
        await self.txn.executemany(
            "INSERT INTO state_groups (group_id, room_id, prev_group, depth) VALUES (?, ?, ?, ?)",
            [(gid, self.room_id, *self._meta[gid]) for gid in new],
        )
        await self.txn.executemany(
            "INSERT INTO state_group_entries (group_id, type, state_key, event_id) VALUES (?, ?, ?, ?)",
            [(gid, t, s, e) for gid in new for (t, s), e in self._entries[gid].items()],
        )

    async def finish(self) -> None:
        """Build the full maps of the new groups nothing in this batch built on: the next batch will.
        Only from a map at hand (built here or cached): a group resting on a cold one (the first event
        into a big room after a start, a remote join) is left to be read when it is needed, if ever."""
        for gid in self._entries:
            if gid not in self._used_as_base and self._base_at_hand(gid):
                await self.full_map(gid)

    def _base_at_hand(self, group: int) -> bool:
        current: int | None = group
        while current is not None and current in self._entries and current not in self._full:
            current = self._meta[current][0]
        return current is None or current in self._full or self.groups.cache.get(current) is not None

    def commit(self) -> None:
        for gid, entries in self._entries.items():
            self.groups.entries.put(gid, entries)
            self.groups.meta.put(gid, self._meta[gid])
        for gid, full in self._full.items():
            self.groups.cache.put(gid, full)
