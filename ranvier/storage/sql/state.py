"""State reads (at events, per group, current) and the current-state/membership writes of a persist."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ranvier.protocol.events import Pdu, StateKey

from ..interfaces import StateDelta, StateMap, UnknownEvent
from .caches import LruCache
from .engine import Database, Reader, Txn, chunks, in_list
from .events import SqlEventStore
from .state_groups import StateDict, StateGroups

MEMBER = "m.room.member"
# Users whose stored memberships a write reads from a read of the room's members rather than by key, when
# the room holds fewer (see _stored_memberships).
SCAN_FROM = 1000


class SqlStateStore:
    def __init__(
        self,
        db: Database,
        groups: StateGroups,
        events: SqlEventStore,
        current: LruCache[str, StateDict],
    ) -> None:
        self._db = db
        self._groups = groups
        self._events = events
        self._current = current

    async def _group_of(self, event_id: str, column: str) -> int | None:
        value = await self._db.fetchval(f"SELECT {column} FROM events WHERE event_id = ?", (event_id,))
        return None if value is None else int(value)

    async def get_state_group_before(self, event_id: str) -> int | None:
        return await self._group_of(event_id, "state_before_group")

    async def get_state_group_after(self, event_id: str) -> int | None:
        return await self._group_of(event_id, "state_after_group")

    async def get_state_groups_before(self, event_ids: Iterable[str]) -> dict[str, int]:
        ids = list(dict.fromkeys(event_ids))
        out: dict[str, int] = {}
        for chunk in chunks(ids):
            rows = await self._db.fetchall(
                f"SELECT event_id, state_before_group FROM events WHERE event_id IN ({in_list(len(chunk))})"
                " AND state_before_group IS NOT NULL",
                tuple(chunk),
            )
            out.update((r[0], int(r[1])) for r in rows)
        return out

    async def get_state_ids_for_group(
        self, group: int, keys: Iterable[StateKey] | None = None
    ) -> dict[StateKey, str]:
        # Groups never change once written, so their statements need no common snapshot.
        if keys is not None:
            return await self._groups.load_keys(self._db, group, keys)
        return dict(await self._groups.load(self._db, group))

    async def _state_at(
        self, event_id: str, column: str, keys: Iterable[StateKey] | None
    ) -> dict[StateKey, str]:
        group = await self._group_of(event_id, column)
        if group is None:
            raise UnknownEvent(f"no state is held at {event_id} (unknown, or an outlier)")
        return await self.get_state_ids_for_group(group, keys)

    async def get_state_ids_before(
        self, event_id: str, keys: Iterable[StateKey] | None = None
    ) -> dict[StateKey, str]:
        return await self._state_at(event_id, "state_before_group", keys)

    async def get_state_ids_after(
        self, event_id: str, keys: Iterable[StateKey] | None = None
    ) -> dict[StateKey, str]:
        return await self._state_at(event_id, "state_after_group", keys)

    async def get_non_member_state_ids_after(self, event_id: str) -> dict[StateKey, str]:
        """The state after a non-outlier event without its ``m.room.member`` entries, read without them
        (a partial-state send_join answer of a room of 50,000 members reads its dozen other entries)."""
        group = await self._group_of(event_id, "state_after_group")
        if group is None:
            raise UnknownEvent(f"no state is held at {event_id} (unknown, or an outlier)")
        return await self._groups.load_without_type(self._db, group, MEMBER)

    async def get_current_state_ids(self, room_id: str) -> dict[StateKey, str]:
        return dict(await load_current_state(self._db, self._current, room_id))

    async def get_current_non_member_state_ids(self, room_id: str) -> dict[StateKey, str]:
        """The room's current state without its ``m.room.member`` entries, read without them: two range
        seeks of the (room_id, type, state_key) key on each side of the type."""
        cached = self._current.get(room_id)
        if cached is not None:
            return {k: v for k, v in cached.items() if k[0] != MEMBER}
        rows = await self._db.fetchall(
            "SELECT type, state_key, event_id FROM current_state WHERE room_id = ? AND type < ?"
            " UNION ALL SELECT type, state_key, event_id FROM current_state WHERE room_id = ? AND type > ?",
            (room_id, MEMBER, room_id, MEMBER),
        )
        return {(t, k): e for t, k, e in rows}

    async def get_current_state_id(self, room_id: str, event_type: str, state_key: str) -> str | None:
        """One key of the room's current state, without loading (or copying) the rest."""
        cached = self._current.get(room_id)
        if cached is not None:
            return cached.get((event_type, state_key))
        value = await self._db.fetchval(
            "SELECT event_id FROM current_state WHERE room_id = ? AND type = ? AND state_key = ?",
            (room_id, event_type, state_key),
        )
        return None if value is None else str(value)

    async def get_current_state_event(self, room_id: str, event_type: str, state_key: str) -> Pdu | None:
        event_id = await self.get_current_state_id(room_id, event_type, state_key)
        return None if event_id is None else await self._events.get_event(event_id)

    async def get_member_counts(self, room_id: str) -> tuple[int, int]:
        """(joined, invited) members of the room: one row per server (room_server_members)."""
        row = await self._db.fetchone(
            "SELECT SUM(joined), SUM(invited) FROM room_server_members WHERE room_id = ?", (room_id,)
        )
        return (0, 0) if row is None else (int(row[0] or 0), int(row[1] or 0))

    async def get_joined_users(self, room_id: str) -> set[str]:
        rows = await self._db.fetchall(
            "SELECT user_id FROM room_memberships WHERE room_id = ? AND membership = 'join'", (room_id,)
        )
        return {r[0] for r in rows}

    async def get_hero_members(self, room_id: str, exclude: str, limit: int = 5) -> list[tuple[str, str]]:
        """(user id, member event id) of up to ``limit`` members, joined or invited, other than
        ``exclude``, in the order they became members: the room's heroes (CS "Room summary")."""
        rows = await self._db.fetchall(
            "SELECT m.user_id, m.event_id FROM room_memberships m JOIN events e ON e.event_id = m.event_id "
            "WHERE m.room_id = ? AND m.membership IN ('join', 'invite') AND m.user_id <> ? "
            "ORDER BY e.stream_ordering LIMIT ?",
            (room_id, exclude, limit),
        )
        return [(r[0], r[1]) for r in rows]

    async def get_joined_servers(self, room_id: str) -> set[str]:
        return await self.get_joined_servers_txn(self._db, room_id)

    async def is_server_joined(self, room_id: str, server_name: str) -> bool:
        """Whether a user of ``server_name`` is joined to the room: one row of room_server_members, not a
        read of every member (the resident asks it on every make_join and send_join)."""
        row = await self._db.fetchone(
            "SELECT 1 FROM room_server_members WHERE room_id = ? AND server_name = ? AND joined > 0",
            (room_id, server_name),
        )
        return row is not None

    async def get_joined_servers_txn(self, txn: Reader, room_id: str) -> set[str]:
        # A room joined with partial state (MSC3706) knows few of its members: until its resync completes,
        # the servers the resident listed in send_join's servers_in_room count as joined too (where our
        # events and EDUs go, whom backfill asks), as Synapse's "partial state approximation" does.
        # One row per server (room_server_members), not one per member: the resident's send_join answer
        # and every fan-out read it.
        rows = await txn.fetchall(
            "SELECT server_name FROM room_server_members WHERE room_id = ? AND joined > 0"
            " UNION SELECT s.server_name FROM partial_state_servers s JOIN partial_state_rooms r"
            " ON r.room_id = s.room_id WHERE s.room_id = ? AND r.completed_ts IS NULL",
            (room_id, room_id),
        )
        return {r[0] for r in rows}

    async def get_servers_in_joined_rooms(self, server_name: str, limit: int) -> list[str]:
        """Up to ``limit`` other servers joined to a room ``server_name`` is joined to."""
        # Per-server counts on both sides: rows per room and server, none per member.
        rows = await self._db.fetchall(
            "SELECT DISTINCT b.server_name FROM room_server_members a JOIN room_server_members b"
            " ON b.room_id = a.room_id WHERE a.server_name = ? AND a.joined > 0 AND b.joined > 0"
            " AND b.server_name != ? ORDER BY b.server_name LIMIT ?",
            (server_name, server_name, limit),
        )
        return [r[0] for r in rows]

    async def get_rooms_for_user(self, user_id: str) -> dict[str, str]:
        rows = await self._db.fetchall(
            "SELECT room_id, membership FROM room_memberships WHERE user_id = ?", (user_id,)
        )
        return {r[0]: r[1] for r in rows}

    async def get_membership(self, room_id: str, user_id: str) -> tuple[str, str] | None:
        row = await self._db.fetchone(
            "SELECT membership, event_id FROM room_memberships WHERE room_id = ? AND user_id = ?",
            (room_id, user_id),
        )
        return None if row is None else (row[0], row[1])

    async def get_members(self, room_id: str) -> dict[str, str]:
        rows = await self._db.fetchall(
            "SELECT user_id, membership FROM room_memberships WHERE room_id = ?", (room_id,)
        )
        return {r[0]: r[1] for r in rows}


async def load_current_state(txn: Reader, cache: LruCache[str, StateDict], room_id: str) -> StateDict:
    """The room's current state; the returned dict may be the cached one: do not mutate it."""
    cached = cache.get(room_id)
    if cached is not None:
        return cached
    generation = cache.generation
    rows = await txn.fetchall(
        "SELECT type, state_key, event_id FROM current_state WHERE room_id = ?", (room_id,)
    )
    state = {(t, s): e for t, s, e in rows}
    cache.put_if_unchanged(room_id, state, generation)
    return state


async def write_current_state(
    txn: Txn,
    cache: LruCache[str, StateDict],
    room_id: str,
    new: StateMap | StateDelta,
    batch: Mapping[str, Pdu],
) -> StateDict | None:
    """Replace the room's current state (and its membership index); returns the new full map for the cache,
    or None when it was not at hand (the caller drops the room's cache entry).

    ``batch`` holds the events being persisted, whose membership is not yet readable from the table.
    """
    cached = cache.get(room_id)
    if cached is None and isinstance(new, StateDelta):
        # A delta on a room whose map is not cached (a cold big room): only its keys are looked up, not
        # every member of the room read to change one.
        old = await _current_keys(txn, room_id, [*new.changed, *new.removed])
        await _write_changes(txn, room_id, old, new, batch)
        return None
    old = cached if cached is not None else await load_current_state(txn, cache, room_id)
    changed, removed = await _write_changes(txn, room_id, old, new, batch)
    full = dict(old)
    for key in removed:
        del full[key]
    full.update(changed)
    return full


async def _current_keys(txn: Txn, room_id: str, keys: list[StateKey]) -> StateDict:
    out: StateDict = {}
    for part in chunks(list(dict.fromkeys(keys)), 200):
        types = list({t for t, _ in part})
        skeys = list({k for _, k in part})
        rows = await txn.fetchall(
            "SELECT type, state_key, event_id FROM current_state WHERE room_id = ?"
            f" AND type IN ({in_list(len(types))}) AND state_key IN ({in_list(len(skeys))})",
            (room_id, *types, *skeys),
        )
        wanted = set(part)
        out.update({(t, k): e for t, k, e in rows if (t, k) in wanted})
    return out


async def _write_changes(
    txn: Txn, room_id: str, old: Mapping[StateKey, str], new: StateMap | StateDelta, batch: Mapping[str, Pdu]
) -> tuple[dict[StateKey, str], list[StateKey]]:
    """Write what differs between ``old`` (the stored current state, or at least the keys ``new`` names
    when it is a delta) and ``new``; returns (changed, removed)."""
    if isinstance(new, StateDelta):
        changed = {k: v for k, v in new.changed.items() if old.get(k) != v}
        removed = [k for k in new.removed if k in old and k not in new.changed]
    else:
        changed = {k: v for k, v in new.items() if old.get(k) != v}
        removed = [k for k in old if k not in new]
    await txn.executemany(
        "DELETE FROM current_state WHERE room_id = ? AND type = ? AND state_key = ?",
        [(room_id, t, s) for t, s in removed],
    )
    await txn.executemany(
        "INSERT INTO current_state (room_id, type, state_key, event_id) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_id = excluded.event_id",
        [(room_id, t, s, e) for (t, s), e in changed.items()],
    )
    left = [s for t, s in removed if t == MEMBER]
    member_events = {e: s for (t, s), e in changed.items() if t == MEMBER}
    memberships = await _memberships(txn, list(member_events), batch)
    # The per-server counts move by what changes: the old memberships of the users touched are read (one
    # row each) before their rows are replaced, never the room's other members.
    was = await _stored_memberships(txn, room_id, [*left, *member_events.values()])
    await txn.executemany(
        "DELETE FROM room_memberships WHERE room_id = ? AND user_id = ?", [(room_id, s) for s in left]
    )
    now = {user: memberships[event_id] for event_id, user in member_events.items()}
    await _count_servers(txn, room_id, was, now)
    await txn.executemany(
        "INSERT INTO room_memberships (room_id, user_id, server_name, membership, event_id)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (room_id, user_id) DO UPDATE SET"
        " membership = excluded.membership, event_id = excluded.event_id",
        [
            (room_id, user, user.partition(":")[2], memberships[event_id], event_id)
            for event_id, user in member_events.items()
        ],
    )
    return changed, removed


async def recount_server_members(txn: Txn, room_id: str) -> None:
    """Count room_server_members of the room again from a scan of its membership index: for code that
    writes the index itself instead of through write_current_state (benchmarks, tests)."""
    await txn.execute("DELETE FROM room_server_members WHERE room_id = ?", (room_id,))
    await txn.execute(
        "INSERT INTO room_server_members (room_id, server_name, joined, invited)"
        " SELECT room_id, server_name, SUM(CASE WHEN membership = 'join' THEN 1 ELSE 0 END),"
        " SUM(CASE WHEN membership = 'invite' THEN 1 ELSE 0 END) FROM room_memberships"
        " WHERE room_id = ? AND membership IN ('join', 'invite') GROUP BY room_id, server_name",
        (room_id,),
    )


async def _stored_memberships(txn: Txn, room_id: str, users: list[str]) -> dict[str, str]:
    """The stored memberships of ``users`` in the room (those that have one)."""
    wanted = list(dict.fromkeys(users))
    if len(wanted) > SCAN_FROM:
        # Many users at once (a partial-state room's resync writes every member the joiner did not hold):
        # when the room holds fewer members than that, one read of them beats a key lookup each.
        held = await txn.fetchall(
            "SELECT SUM(joined + invited) FROM room_server_members WHERE room_id = ?", (room_id,)
        )
        if int(held[0][0] or 0) < len(wanted):
            keep = set(wanted)
            rows = await txn.fetchall(
                "SELECT user_id, membership FROM room_memberships WHERE room_id = ?", (room_id,)
            )
            return {u: m for u, m in rows if u in keep}
    out: dict[str, str] = {}
    for part in chunks(wanted):
        rows = await txn.fetchall(
            f"SELECT user_id, membership FROM room_memberships WHERE room_id = ? AND user_id IN"
            f" ({in_list(len(part))})",
            (room_id, *part),
        )
        out.update({u: m for u, m in rows})
    return out


async def _count_servers(txn: Txn, room_id: str, was: Mapping[str, str], now: Mapping[str, str]) -> None:
    """Move room_server_members by the memberships that change from ``was`` (stored) to ``now`` (a user
    absent from ``now`` leaves the index)."""
    moves: dict[str, list[int]] = {}
    for users, sign in ((was, -1), (now, 1)):
        for user, membership in users.items():
            if membership in ("join", "invite"):
                counts = moves.setdefault(user.partition(":")[2], [0, 0])
                counts[0 if membership == "join" else 1] += sign
    moved = [(room_id, server, j, i) for server, (j, i) in sorted(moves.items()) if j or i]
    await txn.executemany(
        "INSERT INTO room_server_members (room_id, server_name, joined, invited) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (room_id, server_name) DO UPDATE SET joined = room_server_members.joined"
        " + excluded.joined, invited = room_server_members.invited + excluded.invited",
        moved,
    )
    await txn.executemany(
        "DELETE FROM room_server_members WHERE room_id = ? AND server_name = ? AND joined <= 0"
        " AND invited <= 0",
        [(room_id, server) for _, server, _, _ in moved],
    )


async def _memberships(txn: Txn, event_ids: list[str], batch: Mapping[str, Pdu]) -> dict[str, str]:
    out = {e: batch[e].membership or "" for e in event_ids if e in batch}
    rest = [e for e in event_ids if e not in out]
    for part in chunks(rest):
        rows = await txn.fetchall(
            f"SELECT event_id, membership FROM events WHERE event_id IN ({in_list(len(part))})", tuple(part)
        )
        out.update({e: m or "" for e, m in rows})
    missing = [e for e in event_ids if e not in out]
    if missing:
        raise UnknownEvent(f"current state names member events that are not stored: {missing[:5]}")
    return out
