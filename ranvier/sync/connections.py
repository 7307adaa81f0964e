"""Sliding sync connections and their ``pos`` tokens (MSC4186 "Connections").

A connection is one (user, device, ``conn_id``). Each response ends at a new position that records the
stream token it was computed up to and, per room, what the connection has been sent (the event position
the room was sent up to, the ``required_state`` it was sent with, the members lazily sent), so the next
response sends only what changed. As Synapse does, a request at position N keeps N (a retry of the same
request is answered again) and the new position, and forgets the others; a request without ``pos``
starts the connection afresh.

Held in memory and written to the database (migration 640, ranvier/storage/sql/sliding_positions.py),
so that a ``pos`` survives a restart; an unknown one is answered ``M_UNKNOWN_POS`` and the client starts
again. A connection unused for ``expiry_ms`` is forgotten, and a user keeps at most ``max_per_user``
connections in memory (the least recently used goes first; from disk it comes back when asked for).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..clock import now_ms
from ..storage.protocols.sliding_sync import SlidingPositionStorage
from .changes import SyncToken
from .required_state import RequiredState

ConnectionKey = tuple[str, str, str]  # user id, device id, conn_id ("" when absent)

DEFAULT_EXPIRY_MS = 7 * 24 * 3600 * 1000
DEFAULT_MAX_PER_USER = 100
EXPIRE_EVERY = 1000  # saves between two sweeps of expired positions on disk
SWEEP_EVERY_MS = 60_000  # between two sweeps of expired connections in memory
_POS = re.compile(r"([0-9]{1,18})/(s[0-9_]{1,120})")


class UnknownPosition(Exception):
    """The ``pos`` names no position this server holds for the connection (expired, from before a
    restart, or never issued)."""


@dataclass(frozen=True, slots=True)
class RoomSent:
    """What the connection has been sent of one room."""

    events_position: int
    required_state: RequiredState
    timeline_limit: int
    lazy_members: frozenset[str] = frozenset()
    membership: str = "join"


@dataclass(frozen=True, slots=True)
class Position:
    token: SyncToken
    rooms: Mapping[str, RoomSent]


@dataclass
class _Connection:
    last_used: int
    positions: dict[int, Position] = field(default_factory=dict)


def parse_pos(raw: str) -> tuple[int, SyncToken]:
    """``<position id>/<stream token>``; ``ValueError`` when malformed."""
    match = _POS.fullmatch(raw)
    if match is None:
        raise ValueError(raw)
    return int(match.group(1)), SyncToken.parse(match.group(2))


def format_pos(position_id: int, token: SyncToken) -> str:
    return f"{position_id}/{token}"


def encode_rooms(rooms: Mapping[str, RoomSent]) -> str:
    return json.dumps(
        {
            room_id: [
                sent.events_position,
                sorted(sent.required_state.entries),
                sent.timeline_limit,
                sorted(sent.lazy_members),
                sent.membership,
            ]
            for room_id, sent in rooms.items()
        },
        separators=(",", ":"),
    )


def decode_rooms(raw: str) -> dict[str, RoomSent]:
    out: dict[str, RoomSent] = {}
    for room_id, (position, entries, limit, lazy, membership) in json.loads(raw).items():
        required = RequiredState(frozenset((str(t), str(k)) for t, k in entries))
        out[room_id] = RoomSent(int(position), required, int(limit), frozenset(lazy), str(membership))
    return out


class ConnectionStore:
    def __init__(
        self,
        disk: SlidingPositionStorage | None = None,
        clock_ms: Callable[[], int] = now_ms,
        expiry_ms: int = DEFAULT_EXPIRY_MS,
        max_per_user: int = DEFAULT_MAX_PER_USER,
    ) -> None:
        """``disk``: where positions are also written, so they outlive the process (read on a miss)."""
        self._disk = disk
        self._clock_ms = clock_ms
        self._expiry_ms = expiry_ms
        self._max_per_user = max_per_user
        self._connections: dict[ConnectionKey, _Connection] = {}
        self._by_user: dict[str, set[ConnectionKey]] = {}
        self._last_sweep = 0
        # Ids start at a random point so a pos from before a restart does not name a new position.
        self._next_id = secrets.randbelow(1 << 40) + 1
        self._saves = 0

    async def get(self, key: ConnectionKey, position_id: int) -> Position:
        self._expire()
        now = self._clock_ms()
        conn = self._connections.get(key)
        if conn is not None and conn.last_used < now - self._expiry_ms:
            self._remove(key)
            conn = None
        position = conn.positions.get(position_id) if conn is not None else None
        if position is None and self._disk is not None:
            await self._disk.expire(now - self._expiry_ms)  # a miss is rare: after a restart, mostly
            stored = await self._disk.load(*key, position_id, now)
            if stored is not None:
                position = Position(SyncToken.parse(stored[0]), decode_rooms(stored[1]))
                if conn is None:
                    conn = self._add(key, now)
                conn.positions[position_id] = position
        if conn is None or position is None:
            raise UnknownPosition(position_id)
        conn.last_used = now
        return position

    async def save(self, key: ConnectionKey, previous_id: int | None, position: Position) -> int:
        """Record the position a response ends at; keep only it and ``previous_id``."""
        now = self._clock_ms()
        conn = self._connections.get(key)
        if conn is None or previous_id is None:
            conn = self._add(key, now)
        kept: dict[int, Position] = {}
        if previous_id is not None and previous_id in conn.positions:
            kept[previous_id] = conn.positions[previous_id]
        position_id = self._next_id
        self._next_id += 1
        kept[position_id] = position
        conn.positions = kept
        conn.last_used = now
        if self._disk is not None:
            await self._disk.save(
                *key, previous_id, position_id, str(position.token), encode_rooms(position.rooms), now
            )
            self._saves += 1
            if self._saves % EXPIRE_EVERY == 0:
                await self._disk.expire(now - self._expiry_ms)
        return position_id

    def __len__(self) -> int:
        return len(self._connections)

    def _add(self, key: ConnectionKey, now: int) -> _Connection:
        conn = self._connections[key] = _Connection(now)
        mine = self._by_user.setdefault(key[0], set())
        mine.add(key)
        if len(mine) > self._max_per_user:
            # At most max_per_user connections of a user in memory: the least recently used goes (on
            # disk it stays until it expires, and is read back if the client comes back to it).
            oldest = min((k for k in mine if k != key), key=lambda k: self._connections[k].last_used)
            self._remove(oldest)
        return conn

    def _remove(self, key: ConnectionKey) -> None:
        del self._connections[key]
        mine = self._by_user.get(key[0])
        if mine is not None:
            mine.discard(key)
            if not mine:
                del self._by_user[key[0]]

    def _expire(self) -> None:
        """Forget connections unused for ``expiry_ms``; a sweep at most once a minute."""
        now = self._clock_ms()
        if now - self._last_sweep < SWEEP_EVERY_MS:
            return
        self._last_sweep = now
        cutoff = now - self._expiry_ms
        for key in [k for k, c in self._connections.items() if c.last_used < cutoff]:
            self._remove(key)
