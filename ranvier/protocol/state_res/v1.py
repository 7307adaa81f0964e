"""The original state resolution algorithm of room version 1 (rooms/v1.md "State resolution").

Known to reset state (the spec's own warning); kept only for v1 rooms. Where the text is open, we choose:

- Conflicts are resolved key by key: the power levels, then each join rules key, then each member key,
  then every other key. Each phase checks against R as it stood when the phase began, so the result does
  not depend on the order keys are visited in.
- A key present in only some of the state sets is not a conflict ("different event_ids for the same key").
- If no event of an ordinary conflict passes, the lowest ranked one is kept, as deployed servers do.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from ..auth import auth_types_for_event, check_auth_rules
from ..errors import ProtocolError
from ..events import Pdu, StateKey
from .source import EventSource


def _phase(key: StateKey) -> int:
    """Power levels first, then join rules, then memberships, then everything else."""
    if key == ("m.room.power_levels", ""):
        return 0
    if key[0] == "m.room.join_rules":
        return 1
    if key[0] == "m.room.member":
        return 2
    return 3


def _sha1(event_id: str) -> str:
    return hashlib.sha1(event_id.encode("utf-8")).hexdigest()


def _allowed(event: Pdu, r: Mapping[StateKey, Pdu]) -> bool:
    """Whether the authorization rules allow ``event`` in a room whose state is ``r``."""
    keys = auth_types_for_event(event.room_version, event.type, event.state_key, event.sender, event.content)
    try:
        check_auth_rules(event, {k: r[k] for k in keys if k in r})
    except ProtocolError:
        return False
    return True


def _resolve_auth_key(key: StateKey, events: list[Pdu], r: Mapping[StateKey, Pdu]) -> Pdu:
    """Ascending depth, then descending sha1(event_id); take the first, then each next one while allowed."""
    ordered = sorted(events, key=lambda e: (e.depth, _invert(_sha1(e.event_id))))
    current = dict(r)
    chosen = ordered[0]
    current[key] = chosen
    for event in ordered[1:]:
        if not _allowed(event, current):
            break
        chosen = event
        current[key] = chosen
    return chosen


def _invert(hexdigest: str) -> str:
    """A string that sorts in the reverse order of equal-length hex digests."""
    return hexdigest.translate(_INVERT_HEX)


_INVERT_HEX = str.maketrans("0123456789abcdef", "fedcba9876543210")


def _resolve_other_key(events: list[Pdu], r: Mapping[StateKey, Pdu]) -> Pdu:
    """The event with the highest depth and lowest sha1(event_id) that passes authentication in R."""
    ordered = sorted(events, key=lambda e: (-e.depth, _sha1(e.event_id)))
    for event in ordered:
        if _allowed(event, r):
            return event
    return ordered[-1]


def resolve_v1(state_sets: Sequence[Mapping[StateKey, str]], source: EventSource) -> dict[StateKey, str]:
    unconflicted: dict[StateKey, str] = {}
    conflicted: dict[StateKey, set[str]] = {}
    for state_set in state_sets:
        for key, event_id in state_set.items():
            if key in conflicted:
                conflicted[key].add(event_id)
            elif (seen := unconflicted.get(key)) is None:
                unconflicted[key] = event_id
            elif seen != event_id:
                conflicted[key] = {seen, event_id}
                del unconflicted[key]

    # "Start by setting R to the union of the states to be resolved, excluding any conflicting events."
    resolved = dict(unconflicted)
    by_key: dict[StateKey, list[Pdu]] = {}
    for key, ids in conflicted.items():
        events = [e for i in sorted(ids) if (e := source.get_event(i)) is not None]
        if len(events) == 1:
            resolved[key] = events[0].event_id
        elif events:
            by_key[key] = events
    if not by_key:
        return resolved

    r = {k: e for k, i in resolved.items() if (e := source.get_event(i)) is not None}
    for phase in range(4):
        keys = [k for k in by_key if _phase(k) == phase]
        chosen = {
            k: _resolve_auth_key(k, by_key[k], r) if phase < 3 else _resolve_other_key(by_key[k], r)
            for k in keys
        }
        r.update(chosen)
        for k, e in chosen.items():
            resolved[k] = e.event_id
    return resolved
