"""What the rest of the server may ask of the room/event storage, and the records it passes.

The room layer decides (auth, state resolution, soft failure); storage records its decisions atomically and
answers questions about them. Nothing here resolves state or checks auth.

Vocabulary:
- *outlier*: an event held without the state at it (a join's auth chain, an invite for a room we are not
  in). Never in timelines, never an extremity, no state recorded for it.
- *live* event: non-outlier, not rejected, not soft-failed. Only live events appear in timelines, become
  forward extremities, or hide their prev events from the forward extremities.
- *forward extremities*: the live events of a room that no live event names as a prev event.
- *backward extremities*: event ids named as prev events by accepted (non-rejected) non-outlier events,
  that we do not hold as non-outliers: where backfill goes next.
- *stream ordering*: the order events were persisted in, for /sync. Positive and increasing; backfilled
  events get negative, decreasing values so they sort before everything already seen.
- *topological position*: ``(depth, stream_ordering)``, for /messages, so that backfilled events land where
  the DAG puts them. A ``TopoToken`` names the gap just after the event at that position.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from ranvier.protocol.events import Pdu, StateKey
from ranvier.protocol.room_versions import RoomVersion

if TYPE_CHECKING:
    from .sql.engine import Txn
    from .sql.partial_state import StateRewrite

StateMap = Mapping[StateKey, str]


class UnknownRoom(LookupError):
    """An operation named a room that was never stored with ``store_room``."""


class UnknownEvent(LookupError):
    """An operation needed an event that is not stored."""


@dataclass(frozen=True, slots=True)
class EventToPersist:
    """One event of a ``persist_events`` batch, with the room layer's verdict on it.

    A non-outlier needs the state before it, given in exactly one of three ways:
    - ``state_before``: a full map; storage deduplicates it against the state after the event's prev
      events, so passing the same map again costs no rows (but comparing a big map costs time);
    - ``state_group_before``: a group id from ``get_state_group_after``/``get_state_group_before``;
    - ``state_before_is_after_prev``: the event has one prev event, held or earlier in the batch, and the
      state before the event is the state after it (the usual case; free in any room size).
    Outliers take none.
    """

    pdu: Pdu
    outlier: bool = False
    rejected_reason: str | None = None
    soft_failed: bool = False
    # Fetched through backfill: gets a stream ordering before every other event of the server.
    backfilled: bool = False
    state_before: StateMap | None = None
    state_group_before: int | None = None
    state_before_is_after_prev: bool = False
    # Where the event goes in the room's topological order, as (ordering depth, order); None: the default
    # (depth, stream ordering * TOPO_SCALE). Used to put events learnt late before an event that did not
    # reference them (the join-gap events before the join).
    topo_position: tuple[int, int] | None = None
    # For m.room.redaction in room v3+, where the auth rules no longer check it: True when the room layer
    # found the redaction's sender has the power to redact others' events. Redactions between senders of
    # the same server apply anyway; before v3 every accepted redaction applies.
    redaction_permitted_by_power: bool = False
    # Set by storage on what it hands to the in-transaction hooks, never by the caller: the event was held
    # as an outlier and this batch gives it its place in the room (the hooks saw it once as an outlier, e.g.
    # an appservice was pushed an out-of-band invite that our join's prev events later bring in).
    held_as_outlier: bool = False


# Called by ``persist_events`` inside its transaction, after every row of the batch is written, with the
# transaction and the events it wrote (skipped duplicates left out) and their stream orderings. Whatever it
# writes through the transaction commits with the events; if it raises, the whole batch rolls back.
InTxnHook = Callable[["Txn", list[tuple[EventToPersist, int]]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class StateDelta:
    """A change to a room's current state: keys set to new event ids, keys removed."""

    changed: StateMap = field(default_factory=dict)
    removed: frozenset[StateKey] = frozenset()


# Default topological order values are stream orderings times this, leaving room to place late events.
TOPO_SCALE = 1024


@dataclass(frozen=True, slots=True)
class EventMeta:
    event_id: str
    room_id: str
    stream_ordering: int
    depth: int
    outlier: bool
    rejected_reason: str | None
    soft_failed: bool
    topo_depth: int = 0
    topo_order: int = 0

    @property
    def topo(self) -> TopoToken:
        """The event's place in the room's topological order (a token just after it)."""
        return TopoToken(self.topo_depth, self.topo_order)

    @property
    def topo_before(self) -> TopoToken:
        """A token just before the event."""
        return TopoToken(self.topo_depth, self.topo_order - 1)


@dataclass(frozen=True, slots=True, order=True)
class TopoToken:
    """A place between two events in topological order: just after the event at ``(depth, stream)``.

    ``TopoToken(d, s - 1)`` is just before the event at ``(d, s)``. Serialized as ``t<depth>_<stream>``.
    """

    depth: int
    stream: int

    def __str__(self) -> str:
        return f"t{self.depth}_{self.stream}"

    @classmethod
    def parse(cls, text: str) -> TopoToken:
        if not text.startswith("t"):
            raise ValueError(f"not a topological token: {text!r}")
        depth, sep, stream = text[1:].partition("_")
        if not sep:
            raise ValueError(f"not a topological token: {text!r}")
        return cls(int(depth), int(stream))


@dataclass(frozen=True, slots=True)
class RoomRecord:
    room_id: str
    room_version: RoomVersion
    creator: str
    is_public: bool
    partial_state: bool


class RoomStore(Protocol):
    async def store_room(
        self, room_id: str, room_version_id: str, creator: str, is_public: bool = False
    ) -> bool:
        """Record a room (before persisting its events). False if it was already stored (unchanged)."""

    async def get_room(self, room_id: str) -> RoomRecord | None: ...
    async def get_room_version(self, room_id: str) -> RoomVersion | None: ...
    async def get_all_rooms(self) -> list[RoomRecord]: ...
    async def set_public(self, room_id: str, is_public: bool) -> None: ...
    async def set_partial_state(self, room_id: str, partial: bool) -> None: ...
    async def is_partial_state(self, room_id: str) -> bool: ...


class EventStore(Protocol):
    async def persist_events(
        self,
        room_id: str,
        batch: list[EventToPersist],
        new_current_state: StateMap | StateDelta | None = None,
        on_txn: InTxnHook | None = None,
    ) -> list[int]:
        """Persist ``batch`` in one transaction, in order; returns each event's stream ordering.

        Events already held are skipped (their existing stream ordering is returned), except an outlier
        now persisted as a non-outlier, which is "de-outliered": it gets a new stream ordering and its state.
        Parents within the batch must come before their children. ``new_current_state`` (a full map, or a
        delta) replaces the room's current state and membership index in the same transaction.
        ``on_txn`` runs inside the transaction (see ``InTxnHook``).
        Raises UnknownRoom, or ValueError for a malformed batch (e.g. a non-outlier without state).
        """

    async def rewrite_states(
        self,
        room_id: str,
        rewrites: Sequence[StateRewrite],
        new_current_state: StateMap,
        on_txn: Callable[[Txn, int], Awaitable[None]],
    ) -> int:
        """Replace the state before events already persisted while the room's state was partial, and the
        room's current state, in one transaction (see ``sql/partial_state.py``)."""

    async def get_event(self, event_id: str, allow_rejected: bool = False) -> Pdu | None:
        """The event (outliers and soft-failed included), redacted if a valid redaction of it is held."""

    async def get_events(self, event_ids: Iterable[str], allow_rejected: bool = False) -> dict[str, Pdu]: ...
    async def get_events_with_verdicts(self, event_ids: Iterable[str]) -> dict[str, tuple[Pdu, str | None]]:
        """The events held (rejected included), each with its rejection reason (None: not rejected)."""

    async def get_event_texts(self, event_ids: Iterable[str]) -> dict[str, str]:
        """The JSON text of the accepted events held among ``event_ids`` as ``get_events`` gives them,
        without parsing them (for answers carrying many events)."""

    async def have_events(self, event_ids: Iterable[str]) -> set[str]:
        """The ids we hold in any form (rejected included: they need not be fetched again)."""

    async def get_event_meta(self, event_id: str) -> EventMeta | None: ...
    async def held_in_timeline(self, event_ids: Iterable[str]) -> set[str]:
        """The ids among ``event_ids`` held as non-outliers (in the timeline, rejected or not)."""

    async def get_forward_extremities(self, room_id: str) -> list[str]: ...
    async def get_backward_extremities(self, room_id: str) -> list[str]: ...
    async def get_timeline_gaps(self, room_id: str) -> dict[str, TopoToken]:
        """Backward extremities in the middle of the timeline, each with the position of the earliest
        live event citing it."""

    async def get_rooms_with_backward_extremities(self) -> list[str]: ...
    async def get_timeline_breaks(self, room_id: str, event_ids: Iterable[str]) -> set[str]:
        """The events of ``event_ids`` that follow a hole (a gap, or events backfilled into one)."""

    async def get_max_depth_of(self, event_ids: Iterable[str]) -> int:
        """The greatest depth among the held events of ``event_ids`` (0 if none is held)."""

    async def get_auth_chain_ids(self, event_ids: Iterable[str]) -> set[str]:
        """Every event reachable through auth_events from ``event_ids`` (not the events themselves)."""

    async def get_prev_event_ids(self, event_id: str) -> list[str]: ...
    async def get_child_event_ids(self, event_ids: Iterable[str]) -> set[str]:
        """Held events naming any of ``event_ids`` as a prev event."""


class StateStore(Protocol):
    async def get_state_group_before(self, event_id: str) -> int | None: ...
    async def get_state_group_after(self, event_id: str) -> int | None: ...
    async def get_state_groups_before(self, event_ids: Iterable[str]) -> dict[str, int]:
        """event id -> group of the state before it, in one read; outliers and unknown events left out."""

    async def get_state_ids_for_group(
        self, group: int, keys: Iterable[StateKey] | None = None
    ) -> dict[StateKey, str]:
        """The state map of ``group``; with ``keys``, only those entries (reads far fewer rows)."""

    async def get_state_ids_before(
        self, event_id: str, keys: Iterable[StateKey] | None = None
    ) -> dict[StateKey, str]:
        """The state before a non-outlier event. Raises UnknownEvent for an outlier or unknown event."""

    async def get_state_ids_after(
        self, event_id: str, keys: Iterable[StateKey] | None = None
    ) -> dict[StateKey, str]: ...
    async def get_non_member_state_ids_after(self, event_id: str) -> dict[StateKey, str]:
        """The state after a non-outlier event, its m.room.member entries left out (and not read)."""

    async def get_current_state_ids(self, room_id: str) -> dict[StateKey, str]: ...
    async def get_current_non_member_state_ids(self, room_id: str) -> dict[StateKey, str]:
        """The current state without its m.room.member entries (which are not read)."""

    async def get_current_state_event(self, room_id: str, event_type: str, state_key: str) -> Pdu | None: ...
    async def get_current_state_id(self, room_id: str, event_type: str, state_key: str) -> str | None: ...
    async def get_member_counts(self, room_id: str) -> tuple[int, int]: ...
    async def get_joined_users(self, room_id: str) -> set[str]: ...
    async def get_joined_servers(self, room_id: str) -> set[str]: ...
    async def is_server_joined(self, room_id: str, server_name: str) -> bool:
        """Whether any user of ``server_name`` is joined to the room (without reading the members)."""

    async def get_joined_servers_txn(self, txn: Txn, room_id: str) -> set[str]:
        """The joined servers as ``txn`` (e.g. a persist's ``on_txn`` hook) sees them."""

    async def get_servers_in_joined_rooms(self, server_name: str, limit: int) -> list[str]:
        """Up to ``limit`` other servers joined to a room ``server_name`` is joined to."""

    async def get_rooms_for_user(self, user_id: str) -> dict[str, str]:
        """room_id -> membership, for every room where the user has a membership in current state."""

    async def get_membership(self, room_id: str, user_id: str) -> tuple[str, str] | None:
        """(membership, member event id) from current state."""

    async def get_members(self, room_id: str) -> dict[str, str]: ...
    async def get_hero_members(self, room_id: str, exclude: str, limit: int = 5) -> list[tuple[str, str]]:
        """(user id, member event id) of up to ``limit`` members but ``exclude`` (CS "Room summary")."""


class StreamStore(Protocol):
    def current_position(self) -> int: ...
    async def get_room_events_between(
        self, room_ids: Iterable[str], from_stream: int, to_stream: int, limit: int
    ) -> dict[str, list[Pdu]]:
        """Per room, the latest ``limit`` live events with ``from_stream < stream <= to_stream``, oldest
        first; rooms without any are left out. Ask for limit + 1 to learn whether a timeline is limited."""

    async def get_recent_events(
        self, room_id: str, limit: int, before_stream: int | None = None
    ) -> list[Pdu]:
        """The last ``limit`` live events (stream order, oldest first), before ``before_stream`` if given."""

    async def paginate(
        self,
        room_id: str,
        from_token: TopoToken | None,
        direction: Literal["b", "f"],
        limit: int,
        types: Iterable[str] | None = None,
    ) -> tuple[list[Pdu], TopoToken | None]:
        """Live events in topological order from ``from_token`` (None: the end for 'b', the start for 'f'),
        in the direction of travel, with the token to continue from (None when nothing was returned)."""

    async def wait_for_new(self, position: int, timeout: float) -> int:
        """Wait until the stream passes ``position`` or ``timeout`` seconds pass; the current position."""
