"""Sliding sync connections and their ``pos`` tokens (MSC4186 "Connections").

A connection is one (user, device, ``conn_id``). Each response ends at a new position that records the
stream token it was computed up to and, per room, what the connection has been sent (the event position
the room was sent up to, the ``required_state`` it was sent with, the members lazily sent), so the next
response sends only what changed. As Synapse does, a request at position N keeps N (a retry of the same
request is answered again) and the new position, and forgets the others; a request without ``pos``
starts the connection afresh.

Held in memory: after a restart every ``pos`` is unknown and clients start again from an initial request
(they do so on ``M_UNKNOWN_POS``, which is what that answer is for). A connection unused for
``expiry_ms`` is forgotten, and a user keeps at most ``max_per_user`` connections (the least recently
used goes first).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..client_api.sync_extras import SyncToken
from ..clock import now_ms
from .required_state import RequiredState

ConnectionKey = tuple[str, str, str]  # user id, device id, conn_id ("" when absent)

DEFAULT_EXPIRY_MS = 7 * 24 * 3600 * 1000
DEFAULT_MAX_PER_USER = 100
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


class ConnectionStore:
    def __init__(
        self,
        clock_ms: Callable[[], int] = now_ms,
        expiry_ms: int = DEFAULT_EXPIRY_MS,
        max_per_user: int = DEFAULT_MAX_PER_USER,
    ) -> None:
        self._clock_ms = clock_ms
        self._expiry_ms = expiry_ms
        self._max_per_user = max_per_user
        self._connections: dict[ConnectionKey, _Connection] = {}
        # Ids start at a random point so a pos from before a restart does not name a new position.
        self._next_id = secrets.randbelow(1 << 40) + 1

    def get(self, key: ConnectionKey, position_id: int) -> Position:
        self._expire()
        conn = self._connections.get(key)
        position = conn.positions.get(position_id) if conn is not None else None
        if conn is None or position is None:
            raise UnknownPosition(position_id)
        conn.last_used = self._clock_ms()
        return position

    def save(self, key: ConnectionKey, previous_id: int | None, position: Position) -> int:
        """Record the position a response ends at; keep only it and ``previous_id``."""
        now = self._clock_ms()
        conn = self._connections.get(key)
        if conn is None or previous_id is None:
            conn = _Connection(now)
            self._connections[key] = conn
            self._limit_user(key)
        kept: dict[int, Position] = {}
        if previous_id is not None and previous_id in conn.positions:
            kept[previous_id] = conn.positions[previous_id]
        position_id = self._next_id
        self._next_id += 1
        kept[position_id] = position
        conn.positions = kept
        conn.last_used = now
        return position_id

    def forget(self, key: ConnectionKey) -> None:
        self._connections.pop(key, None)

    def __len__(self) -> int:
        return len(self._connections)

    def _expire(self) -> None:
        cutoff = self._clock_ms() - self._expiry_ms
        for key in [k for k, c in self._connections.items() if c.last_used < cutoff]:
            del self._connections[key]

    def _limit_user(self, key: ConnectionKey) -> None:
        mine = sorted(
            ((c.last_used, k) for k, c in self._connections.items() if k[0] == key[0] and k != key),
        )
        while len(mine) + 1 > self._max_per_user:
            _, oldest = mine.pop(0)
            del self._connections[oldest]
