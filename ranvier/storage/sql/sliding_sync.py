"""Reads simplified sliding sync (MSC4186) needs beyond what /sync reads: each room's latest "bump"
event (the sort key of the room lists), the rooms with new events and the state keys that changed in a
stream range (the incremental response's "what changed since this token").

Only live events count (no outliers, rejected or soft-failed events), and only positive stream orderings:
backfilled events have negative ones, which say nothing about recent activity.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from .engine import Database, chunks, in_list
from .events import LIVE, live


@dataclass(frozen=True, slots=True)
class MembershipRow:
    """A user's membership in a room, with the membership event's stream position and sender (an
    invite from another server is an outlier, still with a position)."""

    room_id: str
    membership: str
    event_id: str
    position: int
    sender: str


class SlidingSyncStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def memberships(self, user_id: str) -> list[MembershipRow]:
        rows = await self._db.fetchall(
            "SELECT m.room_id, m.membership, m.event_id, e.stream_ordering, e.sender"
            " FROM room_memberships m JOIN events e ON e.event_id = m.event_id WHERE m.user_id = ?",
            (user_id,),
        )
        return [MembershipRow(str(r[0]), str(r[1]), str(r[2]), int(r[3]), str(r[4])) for r in rows]

    async def member_counts(self, room_ids: Collection[str]) -> dict[str, tuple[int, int]]:
        """(joined, invited) member counts of each room."""
        out = {room_id: (0, 0) for room_id in room_ids}
        for part in chunks(sorted(set(room_ids))):
            rows = await self._db.fetchall(
                "SELECT room_id, SUM(CASE WHEN membership = 'join' THEN 1 ELSE 0 END),"
                " SUM(CASE WHEN membership = 'invite' THEN 1 ELSE 0 END) FROM room_memberships"
                f" WHERE room_id IN ({in_list(len(part))}) GROUP BY room_id",
                tuple(part),
            )
            out.update((str(r[0]), (int(r[1] or 0), int(r[2] or 0))) for r in rows)
        return out

    async def current_state_of_types(
        self, room_ids: Collection[str], event_types: Collection[str]
    ) -> dict[str, dict[tuple[str, str], str]]:
        """The current state event ids of ``event_types`` in each room (rooms with none are absent)."""
        types = sorted(set(event_types))
        out: dict[str, dict[tuple[str, str], str]] = {}
        if not types:
            return out
        for part in chunks(sorted(set(room_ids))):
            rows = await self._db.fetchall(
                "SELECT room_id, type, state_key, event_id FROM current_state"
                f" WHERE room_id IN ({in_list(len(part))}) AND type IN ({in_list(len(types))})",
                (*part, *types),
            )
            for room_id, event_type, state_key, event_id in rows:
                out.setdefault(str(room_id), {})[(str(event_type), str(state_key))] = str(event_id)
        return out

    async def latest_positions(
        self, room_ids: Collection[str], event_types: Iterable[str], upto: int
    ) -> dict[str, int]:
        """Each room's highest positive stream ordering at or before ``upto`` among events of
        ``event_types``; rooms with none are absent."""
        types = sorted(set(event_types))
        out: dict[str, int] = {}
        if not types:
            return out
        # One newest-first walk of each room's (room_id, stream_ordering) index, stopping at the first
        # event of a bump type: a room's long history is not read (a GROUP BY over it would be).
        latest = (
            "SELECT e.stream_ordering FROM events e WHERE e.room_id = r.room_id"
            f" AND e.type IN ({in_list(len(types))}) AND e.stream_ordering > 0 AND e.stream_ordering <= ?"
            f" AND {live('e')} ORDER BY e.stream_ordering DESC LIMIT 1"
        )
        for part in chunks(sorted(set(room_ids))):
            rows = await self._db.fetchall(
                f"SELECT r.room_id, ({latest}) FROM rooms r WHERE r.room_id IN ({in_list(len(part))})",
                (*types, upto, *part),
            )
            out.update((str(r[0]), int(r[1])) for r in rows if r[1] is not None)
        return out

    async def rooms_with_events(self, room_ids: Collection[str], since: int, upto: int) -> set[str]:
        """The rooms of ``room_ids`` with a live event in the stream range ``(since, upto]``."""
        out: set[str] = set()
        for part in chunks(sorted(set(room_ids))):
            rows = await self._db.fetchall(
                f"SELECT DISTINCT room_id FROM events WHERE room_id IN ({in_list(len(part))})"
                f" AND stream_ordering > ? AND stream_ordering <= ? AND {LIVE}",
                (*part, since, upto),
            )
            out.update(str(r[0]) for r in rows)
        return out

    async def state_keys_changed(self, room_id: str, since: int, upto: int) -> set[tuple[str, str]]:
        """The (type, state_key) pairs of the room's live state events in ``(since, upto]``."""
        rows = await self._db.fetchall(
            "SELECT DISTINCT type, state_key FROM events WHERE room_id = ? AND state_key IS NOT NULL"
            f" AND stream_ordering > ? AND stream_ordering <= ? AND {LIVE}",
            (room_id, since, upto),
        )
        return {(str(r[0]), str(r[1])) for r in rows}

    async def event_positions(self, event_ids: Collection[str]) -> dict[str, int]:
        """The stream ordering of each event of ``event_ids`` that is held."""
        out: dict[str, int] = {}
        for part in chunks(sorted(set(event_ids))):
            rows = await self._db.fetchall(
                f"SELECT event_id, stream_ordering FROM events WHERE event_id IN ({in_list(len(part))})",
                tuple(part),
            )
            out.update((str(r[0]), int(r[1])) for r in rows)
        return out
