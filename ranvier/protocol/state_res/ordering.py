"""The orderings of state resolution v2 and v2.1 (rooms/fragments/v2-state-res.md "Definitions").

Both sorts are total orders ending in the event id, so their results do not depend on input order.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from ..auth.power_levels import get_user_power_level
from ..events import Pdu, StateKey
from .auth_chain import AuthChainIndex
from .source import EventSource

POWER_LEVELS_KEY: StateKey = ("m.room.power_levels", "")
INFINITE_POSITION = float("inf")


def is_power_event(event: Pdu) -> bool:
    """A power event: power levels, join rules, or a kick or ban (a leave or ban of someone else).

    Interop (rooms/fragments/v2-state-res.md "Definitions", power events): the create event counts too.
    The spec's list omits it; Synapse and ruma include it, which moves a conflicted create event (a state
    set without one, or v2.1's conflicted subgraph) from the mainline ordering to the power ordering.
    """
    if event.state_key is None:
        return False
    if event.type in ("m.room.power_levels", "m.room.join_rules", "m.room.create"):
        return event.state_key == ""
    if event.type == "m.room.member":
        return event.membership in ("leave", "ban") and event.sender != event.state_key
    return False


def lexicographic_topological_sort(
    preds: Mapping[str, Collection[str]], key: Callable[[str], Any]
) -> list[str]:
    """Kahn's algorithm, taking the smallest ready vertex by ``key`` at each step.

    ``preds[v]`` are the vertices that must come before ``v`` (its auth events within the graph); each
    must itself be a vertex of ``preds``. ``key`` must be a total order.
    """
    waiting = {v: len(p) for v, p in preds.items()}
    after: dict[str, list[str]] = {}
    for v, p in preds.items():
        for u in p:
            after.setdefault(u, []).append(v)
    heap = [(key(v), v) for v, n in waiting.items() if n == 0]
    heapq.heapify(heap)
    out: list[str] = []
    while heap:
        _, v = heapq.heappop(heap)
        out.append(v)
        for w in after.get(v, ()):
            waiting[w] -= 1
            if waiting[w] == 0:
                heapq.heappush(heap, (key(w), w))
    return out


def sender_power_level(event: Pdu, index: AuthChainIndex, source: EventSource) -> int | float:
    """The sender's power level "when looking at their respective auth_events" (reverse topological power
    ordering, rule 1): the power levels and create events among the event's (implied) auth events."""
    state: dict[StateKey, Pdu] = {}
    for auth_id in index.auth_ids(event.event_id, source) or ():
        auth_event = source.get_event(auth_id)
        if auth_event is not None and auth_event.state_key is not None:
            state[(auth_event.type, auth_event.state_key)] = auth_event
    return get_user_power_level(event.sender, state, event.room_version)


def reverse_topological_power_sort(
    event_ids: Collection[str], index: AuthChainIndex, source: EventSource
) -> list[str]:
    """Order ``event_ids`` earliest first: a topological order of the auth DAG among them, ties broken by
    higher sender power level, then lower origin_server_ts, then lower event id."""
    members = set(event_ids)
    preds: dict[str, list[str]] = {}
    keys: dict[str, tuple[int | float, int, str]] = {}
    for event_id in members:
        event = source.get_event(event_id)
        if event is None:
            continue
        preds[event_id] = [a for a in index.auth_ids(event_id, source) or () if a in members]
        keys[event_id] = (-sender_power_level(event, index, source), event.origin_server_ts, event_id)
    for event_id, p in preds.items():
        preds[event_id] = [a for a in p if a in preds]
    return lexicographic_topological_sort(preds, keys.__getitem__)


class _Mainline:
    """Mainline positions relative to one power levels event P₀ (spec "Mainline ordering")."""

    __slots__ = ("_parent_memo", "_position", "_source")

    def __init__(self, resolved_power_levels: str | None, source: EventSource) -> None:
        self._source = source
        self._parent_memo: dict[str, str | None] = {}
        self._position: dict[str, int | float] = {}
        pl = resolved_power_levels
        i = 0
        while pl is not None and pl not in self._position:
            self._position[pl] = i
            pl = self._power_levels_parent(pl)
            i += 1

    def _power_levels_parent(self, event_id: str) -> str | None:
        """The m.room.power_levels event among the event's ``auth_events``, if any."""
        if event_id in self._parent_memo:
            return self._parent_memo[event_id]
        found: str | None = None
        event = self._source.get_event(event_id)
        if event is not None:
            for auth_id in event.auth_event_ids:
                auth_event = self._source.get_event(auth_id)
                if auth_event is not None and (auth_event.type, auth_event.state_key) == POWER_LEVELS_KEY:
                    found = auth_id
                    break
        self._parent_memo[event_id] = found
        return found

    def position(self, event_id: str) -> int | float:
        """The position in the mainline of the first eⱼ (j ≥ 1) that is on it, or infinity."""
        walked: dict[str, None] = {}
        pl = self._power_levels_parent(event_id)
        pos: int | float = INFINITE_POSITION
        # ``pl not in walked``: v1/v2 event ids are sender-chosen, so a malicious auth cycle is possible.
        while pl is not None and pl not in walked:
            known = self._position.get(pl)
            if known is not None:
                pos = known
                break
            walked[pl] = None
            pl = self._power_levels_parent(pl)
        # Every power levels event walked past reaches the mainline at the same place: remember it.
        for w in walked:
            self._position[w] = pos
        return pos


def mainline_sort(
    event_ids: Iterable[str], resolved_power_levels: str | None, source: EventSource
) -> list[str]:
    """Order ``event_ids`` by the mainline ordering based on ``resolved_power_levels``: greater mainline
    position (older power levels) first, then lower origin_server_ts, then lower event id."""
    mainline = _Mainline(resolved_power_levels, source)
    keyed = []
    for event_id in event_ids:
        event = source.get_event(event_id)
        if event is None:
            continue
        keyed.append((-mainline.position(event_id), event.origin_server_ts, event_id))
    keyed.sort()
    return [k[2] for k in keyed]
