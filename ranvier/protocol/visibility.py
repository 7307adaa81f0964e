"""History visibility: may a user, or a server, see an event? Pure rules, no I/O.

Source: CS module "Room History Visibility" (client-server-api/modules/history_visibility.md), "Server
behaviour". The caller loads the room state *at the event* (the state before it) and passes in the two
entries that matter: the ``m.room.history_visibility`` setting and the user's membership.

Servers: the S2S spec says nothing of its own about history visibility, so a server is treated as the sum of
its users (a server may see an event when at least one of its users may); what it may not see is handed
out redacted by the caller (see ``ranvier.rooms.visibility``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

HISTORY_VISIBILITY = "m.room.history_visibility"
MEMBER = "m.room.member"


class HistoryVisibility(StrEnum):
    WORLD_READABLE = "world_readable"
    SHARED = "shared"
    INVITED = "invited"
    JOINED = "joined"


def visibility_from_content(content: Mapping[str, Any] | None) -> HistoryVisibility:
    """The setting an ``m.room.history_visibility`` content gives. "By default if no history_visibility is
    set, or if the value is not understood, the visibility is assumed to be shared" (Server behaviour)."""
    value = content.get("history_visibility") if content is not None else None
    for setting in HistoryVisibility:
        if value == setting.value:
            return setting
    return HistoryVisibility.SHARED


def membership_from_content(content: Mapping[str, Any] | None) -> str | None:
    value = content.get("membership") if content is not None else None
    return value if isinstance(value, str) else None


def allowed(membership: str | None, visibility: HistoryVisibility, joined_later: bool) -> bool:
    """The five numbered rules of "Server behaviour", given the state at the event.

    ``joined_later``: whether the user "joined the room at any point after the event was sent" (rule 3).
    """
    # 1. world_readable: allow.
    if visibility is HistoryVisibility.WORLD_READABLE:
        return True
    # 2. The user's membership was join: allow.
    if membership == "join":
        return True
    # 3. shared, and the user joined at any point after the event: allow.
    if visibility is HistoryVisibility.SHARED and joined_later:
        return True
    # 4. The user's membership was invite, and the setting invited: allow. 5. Otherwise, deny.
    return membership == "invite" and visibility is HistoryVisibility.INVITED


@dataclass(frozen=True, slots=True)
class EventFacts:
    """What the rules need of the event itself: its type, state key and content."""

    event_type: str
    state_key: str | None
    content: Mapping[str, Any]


def user_may_see(
    event: EventFacts,
    user_id: str,
    membership: str | None,
    visibility: HistoryVisibility,
    joined_later: bool,
) -> bool:
    """Whether ``user_id`` may see ``event``; ``membership`` and ``visibility`` are the state before it."""
    if allowed(membership, visibility, joined_later):
        return True
    # "For m.room.history_visibility events themselves, the user should be allowed to see the event if the
    # history_visibility before *or* after the event would allow them to see it."
    if event.event_type == HISTORY_VISIBILITY and event.state_key == "":
        return allowed(membership, visibility_from_content(event.content), joined_later)
    # "Likewise, for the user's own m.room.member events, ... if their membership before *or* after the
    # event would allow them to see it."
    if event.event_type == MEMBER and event.state_key == user_id:
        return allowed(membership_from_content(event.content), visibility, joined_later)
    return False


@dataclass(frozen=True, slots=True)
class UserAtEvent:
    """One of a server's users: membership before the event, and whether they joined later (rule 3)."""

    user_id: str
    membership: str | None
    joined_later: bool


def server_may_see(event: EventFacts, visibility: HistoryVisibility, users: Iterable[UserAtEvent]) -> bool:
    """Whether a server may see ``event`` in full: when any of its users ``users`` may (the server shows
    its users no more than they may see; it needs no more than they do)."""
    # Someone with no membership at all: sees what is world_readable before or after a visibility change.
    if user_may_see(event, "", None, visibility, False):
        return True
    return any(user_may_see(event, u.user_id, u.membership, visibility, u.joined_later) for u in users)
