"""State resolution v2 (rooms v2 to v11) and v2.1 (room v12).

rooms/fragments/v2-state-res.md "Algorithm", and rooms/v12.md "State resolution" for the two changes of
v2.1 (MSC4297): the first iterative auth checks start from an empty state map, and the full conflicted set
also holds the conflicted state subgraph.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..events import StateKey
from .auth_chain import AuthChainIndex, auth_difference, conflicted_subgraph
from .iterative import iterative_auth_checks
from .ordering import POWER_LEVELS_KEY, is_power_event, mainline_sort, reverse_topological_power_sort
from .source import EventSource


def split_conflicted(
    state_sets: Sequence[Mapping[StateKey, str]],
) -> tuple[dict[StateKey, str], dict[StateKey, set[str]]]:
    """The unconflicted state map, and the conflicted state set by key ("Definitions").

    A key is unconflicted only if every state set has it with the same event; a key missing from some
    set is conflicted.
    """
    first = state_sets[0]
    if len(state_sets) == 1:
        return dict(first), {}
    # A Python loop with an identity test first beats the C set operations on dict items here: those
    # hash every (key, event id) pair of a 10,000-entry state, the loop only looks keys up.
    conflicted_keys: set[StateKey] = set()
    for other in state_sets[1:]:
        get = other.get
        differing = [k for k, v in first.items() if (w := get(k)) is not v and w != v]
        conflicted_keys.update(differing)
        missing = sum(1 for k in differing if k not in other)
        if len(other) != len(first) - missing:  # ``other`` has keys that ``first`` lacks
            conflicted_keys.update(k for k in other if k not in first)
    unconflicted = dict(first)
    for key in conflicted_keys:
        unconflicted.pop(key, None)
    conflicted: dict[StateKey, set[str]] = {}
    for key in conflicted_keys:
        conflicted[key] = {
            event_id for state_set in state_sets if (event_id := state_set.get(key)) is not None
        }
    return unconflicted, conflicted


def resolve_v2(
    state_sets: Sequence[Mapping[StateKey, str]],
    source: EventSource,
    index: AuthChainIndex,
    *,
    v2_1: bool,
) -> dict[StateKey, str]:
    unconflicted, conflicted = split_conflicted(state_sets)
    if not conflicted:
        return unconflicted

    conflicted_ids: set[str] = set().union(*conflicted.values())
    conflicted_per_set = [
        {event_id for key in conflicted if (event_id := state_set.get(key)) is not None}
        for state_set in state_sets
    ]
    full = conflicted_ids | auth_difference(index, source, unconflicted.values(), conflicted_per_set)
    if v2_1:
        full |= conflicted_subgraph(index, source, conflicted_ids)
    # Only events we have can be ordered and authorised.
    events = {event_id: e for event_id in full if (e := source.get_event(event_id)) is not None}

    # Step 1: the power events, with the events of their auth chains that are in the full conflicted set.
    # Interop ("Algorithm", step 1): "their auth chain that is in the full conflicted set" is taken as
    # Synapse and ruma take it, the events reached from a power event through auth events that are each
    # in the full conflicted set. An event of the set reached only through an event outside it is not
    # selected here and is ordered by the mainline ordering instead. (The spec's words also read as "the
    # auth chain, intersected with the set"; the network does the former.)
    power = [event_id for event_id, e in events.items() if is_power_event(e)]
    selected = set(power)
    stack = list(power)
    while stack:
        for auth_id in index.auth_ids(stack.pop(), source) or ():
            if auth_id in events and auth_id not in selected:
                selected.add(auth_id)
                stack.append(auth_id)
    sorted_power = reverse_topological_power_sort(selected, index, source)

    # Step 2: iterative auth checks from the unconflicted state map (v2), or from nothing (v2.1, MSC4297
    # modification 1: then each event's own auth events fill the keys the state lacks).
    partial = iterative_auth_checks(sorted_power, {} if v2_1 else unconflicted, index, source)

    # Step 3: the other events, by mainline ordering on the partially resolved power levels.
    remaining = [event_id for event_id in events if event_id not in selected]
    sorted_remaining = mainline_sort(remaining, partial.get(POWER_LEVELS_KEY), source)

    # Step 4: iterative auth checks on top of the partially resolved state.
    resolved = iterative_auth_checks(sorted_remaining, partial, index, source, in_place=True)

    # Step 5: the unconflicted state map wins over anything the checks put under the same key.
    if v2_1:
        resolved.update(unconflicted)
    else:
        # The checks started from the unconflicted map: only keys of full conflicted set events changed.
        for e in events.values():
            key = e.state_tuple
            if key is not None and (kept := unconflicted.get(key)) is not None:
                resolved[key] = kept
    return resolved
