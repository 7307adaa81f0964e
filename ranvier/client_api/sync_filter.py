"""What a /sync filter (CS "Filtering", the ``filter`` query parameter) asks of the rooms part of /sync.

The filter is checked by filters.py; this reads the fields /sync honours into one value: the timeline
limit, thread counts, lazy-loaded members (with or without redundant ones), which rooms appear
(``room.rooms`` / ``room.not_rooms``) and whether rooms the user left appear (``room.include_leave``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEFAULT_TIMELINE_LIMIT = 10
MAX_TIMELINE_LIMIT = 1000


@dataclass(frozen=True)
class SyncFilter:
    limit: int = DEFAULT_TIMELINE_LIMIT
    thread_counts: bool = False
    lazy_members: bool = False
    include_redundant_members: bool = False
    # None: every room; otherwise only these (the filter's ``rooms``).
    rooms: frozenset[str] | None = None
    not_rooms: frozenset[str] = frozenset()
    include_leave: bool = False

    def room_allowed(self, room_id: str) -> bool:
        """CS RoomFilter: ``not_rooms`` excludes even what ``rooms`` includes."""
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms


def _section(parsed: Any, *path: str) -> dict[str, Any]:
    value = parsed
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, dict) else {}


def _room_ids(value: Any) -> frozenset[str] | None:
    # filters.py has checked the type; null counts as absent.
    return frozenset(value) if isinstance(value, list) else None


def sync_filter(parsed: Any) -> SyncFilter:
    """The /sync options of a parsed (and checked) filter; anything absent keeps the spec's default."""
    room = _section(parsed, "room")
    timeline = _section(room, "timeline")
    state = _section(room, "state")
    limit = DEFAULT_TIMELINE_LIMIT
    value = timeline.get("limit")
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        limit = min(value, MAX_TIMELINE_LIMIT)
    return SyncFilter(
        limit=limit,
        thread_counts=timeline.get("unread_thread_notifications") is True,
        lazy_members=state.get("lazy_load_members") is True,
        include_redundant_members=state.get("include_redundant_members") is True,
        rooms=_room_ids(room.get("rooms")),
        not_rooms=_room_ids(room.get("not_rooms")) or frozenset(),
        include_leave=room.get("include_leave") is True,
    )
