"""``required_state`` of simplified sliding sync (MSC4186): which state events a room's response carries.

Pure: entries in, decisions out. ``$ME`` stands for the syncing user, ``["m.room.member", "$LAZY"]`` asks
for the membership of the people the timeline shows, and ``*`` is a wildcard. As Synapse 1.163 does, any
entry with a ``*`` event type returns all of the room's state: MSC4186 lets the server return more state
than asked for, and the filtering-out form of ``["*", "*"]`` plus exclusions is not implemented there either.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from ..protocol.events import Pdu

WILDCARD = "*"
LAZY = "$LAZY"
ME = "$ME"
MEMBER = "m.room.member"

StateKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class RequiredState:
    entries: frozenset[StateKey] = frozenset()

    @classmethod
    def parse(cls, raw: Any, user_id: str) -> RequiredState:
        """From the request's list of ``[type, state_key]`` pairs; ``ValueError`` if it is not one."""
        if not isinstance(raw, list):
            raise ValueError("required_state must be a list of [event type, state key] pairs")
        entries: set[StateKey] = set()
        for item in raw:
            if (
                not isinstance(item, list)
                or len(item) != 2
                or not isinstance(item[0], str)
                or not isinstance(item[1], str)
            ):
                raise ValueError("each required_state entry must be [event type, state key] (strings)")
            event_type, state_key = item
            entries.add((event_type, user_id if state_key == ME else state_key))
        return cls(frozenset(entries))

    def union(self, other: RequiredState) -> RequiredState:
        """A room in several lists (or a list and a subscription) gets the state all of them ask for."""
        return RequiredState(self.entries | other.entries)

    @property
    def all_state(self) -> bool:
        return any(event_type == WILDCARD for event_type, _ in self.entries)

    @property
    def lazy_members(self) -> bool:
        return (MEMBER, LAZY) in self.entries

    def explicit_members(self) -> set[str]:
        """The users whose membership is asked for by name (``$ME`` included)."""
        return {k for t, k in self.entries if t == MEMBER and k not in (LAZY, WILDCARD)}

    def wants(self, key: StateKey, lazy_users: Collection[str] = ()) -> bool:
        """Whether the state entry ``key`` is asked for (``lazy_users``: whose membership ``$LAZY`` asks
        for in this response)."""
        if self.all_state:
            return True
        event_type, state_key = key
        if event_type == MEMBER and self.lazy_members and state_key in lazy_users:
            return True
        return key in self.entries or (event_type, WILDCARD) in self.entries

    def select(self, state: dict[StateKey, str], lazy_users: Collection[str] = ()) -> dict[StateKey, str]:
        """The entries of ``state`` (key -> event id) that are asked for."""
        if self.all_state:
            return dict(state)
        return {key: event_id for key, event_id in state.items() if self.wants(key, lazy_users)}

    def added_since(self, previous: RequiredState) -> RequiredState:
        """What this asks for that ``previous`` did not (the state to send now for a room whose
        ``required_state`` grew since it was last sent); the lazy marker is not carried over."""
        if previous.all_state:
            return RequiredState()
        if self.all_state:
            return self
        return RequiredState(frozenset(k for k in self.entries - previous.entries if k != (MEMBER, LAZY)))


def timeline_members(events: Iterable[Pdu]) -> set[str]:
    """The people a timeline shows: every sender, and the target of every membership event."""
    users: set[str] = set()
    for event in events:
        users.add(event.sender)
        if event.type == MEMBER and event.state_key is not None:
            users.add(event.state_key)
    return users
