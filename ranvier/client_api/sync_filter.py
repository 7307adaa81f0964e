"""What a /sync filter (CS "Filtering", the ``filter`` query parameter) asks of the rooms part of /sync.

The filter is checked by filters.py; this reads the fields /sync honours into one value: the timeline
limit, thread counts, lazy-loaded members (with or without redundant ones), which rooms appear
(``room.rooms`` / ``room.not_rooms``), whether rooms the user left appear (``room.include_leave``), and
the event filters of the timeline, state, ephemeral and account data sections (``types``, ``not_types``,
``senders``, ``not_senders`` with ``*`` wildcards in types, ``contains_url``, and ``limit`` where the
section is not the timeline, whose limit is the timeline's length). Presence is filtered by
presence/sync_section.py.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

DEFAULT_TIMELINE_LIMIT = 10
MAX_TIMELINE_LIMIT = 1000


@lru_cache(maxsize=256)
def _pattern(glob: str) -> re.Pattern[str]:
    # CS "Filtering": "A '*' can be used as a wildcard to match any sequence of characters."
    return re.compile(".*".join(re.escape(part) for part in glob.split("*")), re.DOTALL)


def _any_match(patterns: Sequence[str], value: str) -> bool:
    return any(_pattern(p).fullmatch(value) is not None for p in patterns)


@dataclass(frozen=True)
class EventFilter:
    """A section's ``EventFilter``/``RoomEventFilter``: None lists allow everything. An event without
    a sender (account data, ephemeral events) is judged on its type alone."""

    types: tuple[str, ...] | None = None
    not_types: tuple[str, ...] = ()
    senders: frozenset[str] | None = None
    not_senders: frozenset[str] = frozenset()
    contains_url: bool | None = None
    limit: int | None = None

    def allows(self, event_type: str, sender: str | None = None, content: Any = None) -> bool:
        if _any_match(self.not_types, event_type):
            return False
        if self.types is not None and not _any_match(self.types, event_type):
            return False
        if sender is not None:
            if sender in self.not_senders:
                return False
            if self.senders is not None and sender not in self.senders:
                return False
        if self.contains_url is not None:
            has_url = isinstance(content, dict) and isinstance(content.get("url"), str)
            if has_url != self.contains_url:
                return False
        return True

    def apply(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Client-format events this filter allows, the last ``limit`` of them."""
        kept = [e for e in events if self.allows(str(e.get("type", "")), e.get("sender"), e.get("content"))]
        if self.limit is not None:
            kept = kept[-self.limit :] if self.limit > 0 else []
        return kept


def event_filter(value: Any, with_limit: bool = True) -> EventFilter:
    section = value if isinstance(value, dict) else {}

    def strings(key: str) -> tuple[str, ...] | None:
        found = section.get(key)
        return tuple(found) if isinstance(found, list) else None

    limit = section.get("limit")
    senders = strings("senders")
    contains_url = section.get("contains_url")
    return EventFilter(
        types=strings("types"),
        not_types=strings("not_types") or (),
        senders=frozenset(senders) if senders is not None else None,
        not_senders=frozenset(strings("not_senders") or ()),
        contains_url=contains_url if isinstance(contains_url, bool) else None,
        limit=limit
        if with_limit and isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0
        else None,
    )


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
    timeline: EventFilter = field(default_factory=EventFilter)
    state: EventFilter = field(default_factory=EventFilter)
    ephemeral: EventFilter = field(default_factory=EventFilter)
    room_account_data: EventFilter = field(default_factory=EventFilter)
    account_data: EventFilter = field(default_factory=EventFilter)

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
        # The timeline's limit is its length (above), not a cap on what the filter keeps.
        timeline=event_filter(timeline, with_limit=False),
        state=event_filter(state, with_limit=False),
        ephemeral=event_filter(room.get("ephemeral")),
        room_account_data=event_filter(room.get("account_data")),
        account_data=event_filter(_section(parsed, "account_data")),
    )
