"""The rooms of a sliding sync response's lists (MSC4186 "Lists"): which rooms a user has, the filters,
the sort by recency (``bump_stamp``) and the ``SYNC`` operations over the requested ranges.

Which rooms: those the user is joined to, invited to or knocking on, plus those they were kicked or banned
from, plus those they left themselves since the connection's last position (so the client hears of the
leave); a room left and then forgotten is not listed. Synapse 1.163 draws the same line.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..storage.protocols.sliding_sync import SlidingSyncStorage
from ..storage.sql.sliding_sync import MembershipRow
from .sliding_request import ListFilters

# What counts as activity that moves a room up the list (Synapse's default bump event types).
BUMP_EVENT_TYPES = frozenset(
    {
        "m.room.create",
        "m.room.message",
        "m.room.encrypted",
        "m.sticker",
        "m.call.invite",
        "m.poll.start",
        "m.beacon_info",
    }
)
CREATE = ("m.room.create", "")
ENCRYPTION = ("m.room.encryption", "")
NAME = ("m.room.name", "")
AVATAR = ("m.room.avatar", "")
SPACE_CHILD = "m.space.child"


@dataclass(frozen=True, slots=True)
class RoomEntry:
    room_id: str
    membership: str
    event_id: str
    position: int  # the membership event's stream position
    sender: str
    bump_stamp: int | None = None

    @property
    def sort_position(self) -> int:
        # A joined room sorts by its latest bump event; a room the user is not in by the membership event
        # (what came after it is not theirs to see), as does a joined room with no bump event at all.
        if self.membership == "join" and self.bump_stamp is not None:
            return self.bump_stamp
        return self.position


@dataclass(frozen=True, slots=True)
class RoomFacts:
    """What the filters look at, from the room's current state, or from the invite's stripped state for
    a room this server is not in."""

    encrypted: bool | None
    room_type: str | None
    type_known: bool


def candidate_rooms(
    rows: Iterable[MembershipRow], user_id: str, since: int | None, forgotten: Collection[str]
) -> dict[str, RoomEntry]:
    out: dict[str, RoomEntry] = {}
    for row in rows:
        # Left by the user: only news when it happened after the connection's position.
        if row.membership == "leave" and row.sender == user_id and (since is None or row.position <= since):
            continue
        if row.membership in ("leave", "ban") and row.event_id in forgotten:
            continue
        out[row.room_id] = RoomEntry(row.room_id, row.membership, row.event_id, row.position, row.sender)
    return out


async def with_bump_stamps(
    store: SlidingSyncStorage, rooms: Mapping[str, RoomEntry], upto: int
) -> dict[str, RoomEntry]:
    stamps = await store.latest_positions(rooms, BUMP_EVENT_TYPES, upto)
    return {room_id: replace(entry, bump_stamp=stamps.get(room_id)) for room_id, entry in rooms.items()}


def sort_rooms(rooms: Iterable[RoomEntry]) -> list[RoomEntry]:
    return sorted(rooms, key=lambda r: (-r.sort_position, r.room_id))


def sync_ops(room_ids: list[str], ranges: tuple[tuple[int, int], ...] | None) -> list[dict[str, Any]]:
    """One ``SYNC`` operation per range (inclusive); no ranges means the whole list."""
    if ranges is None:
        ranges = ((0, max(len(room_ids) - 1, 0)),)
    return [
        {"op": "SYNC", "range": [start, end], "room_ids": room_ids[start : end + 1]} for start, end in ranges
    ]


def in_ranges(room_ids: list[str], ranges: tuple[tuple[int, int], ...] | None) -> list[str]:
    if ranges is None:
        return list(room_ids)
    seen: dict[str, None] = {}
    for start, end in ranges:
        seen.update(dict.fromkeys(room_ids[start : end + 1]))
    return list(seen)


def stripped_facts(stripped: list[dict[str, Any]]) -> RoomFacts:
    """Facts from an invite's stripped state (CS "Stripped state"): a room type is known only when the
    inviting server sent the create event."""
    encrypted = False
    room_type: str | None = None
    type_known = False
    for event in stripped:
        key = (event.get("type"), event.get("state_key"))
        content = event.get("content")
        if not isinstance(content, dict):
            continue
        if key == ENCRYPTION:
            encrypted = True
        elif key == CREATE:
            type_known = True
            value = content.get("type")
            room_type = value if isinstance(value, str) else None
    return RoomFacts(encrypted, room_type, type_known)


def state_facts(create_content: dict[str, Any] | None, encrypted: bool) -> RoomFacts:
    value = create_content.get("type") if create_content is not None else None
    return RoomFacts(encrypted, value if isinstance(value, str) else None, create_content is not None)


def passes(
    entry: RoomEntry,
    filters: ListFilters,
    facts: RoomFacts,
    dm_rooms: Collection[str],
    space_children: Collection[str] | None,
    tags: Collection[str],
) -> bool:
    """MSC4186 list filters, ANDed; an absent filter does not filter."""
    if filters.is_dm is not None and (entry.room_id in dm_rooms) != filters.is_dm:
        return False
    if filters.is_invite is not None and (entry.membership == "invite") != filters.is_invite:
        return False
    if filters.is_encrypted is not None and facts.encrypted != filters.is_encrypted:
        return False
    if filters.room_types is not None or filters.not_room_types is not None:
        if not facts.type_known:
            return False  # a room whose type cannot be known (a remote invite without the create event)
        if filters.room_types is not None and facts.room_type not in filters.room_types:
            return False
        if filters.not_room_types is not None and facts.room_type in filters.not_room_types:
            return False
    if space_children is not None and entry.room_id not in space_children:
        return False
    if filters.not_tags is not None and set(tags) & set(filters.not_tags):
        return False
    return filters.tags is None or bool(set(tags) & set(filters.tags))


def dm_room_ids(m_direct: Mapping[str, Any] | None) -> set[str]:
    """The rooms of the user's ``m.direct`` account data (user id -> list of room ids)."""
    out: set[str] = set()
    for rooms in (m_direct or {}).values():
        if isinstance(rooms, list):
            out.update(r for r in rooms if isinstance(r, str))
    return out


def valid_space_child(content: Any) -> bool:
    """CS "Spaces": an ``m.space.child`` without a non-empty ``via`` is not a child."""
    return isinstance(content, dict) and isinstance(content.get("via"), list) and bool(content["via"])
