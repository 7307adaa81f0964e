"""State resolution: v1 (room v1), v2 (rooms v2 to v11) and v2.1 (room v12).

Pure and synchronous. Resolving a big room is CPU work of tens of milliseconds: callers on the event loop
run ``resolve_state`` in a worker thread (with its own ``AuthChainIndex``, which is not thread-safe).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..events import StateKey
from ..room_versions import RoomVersion, StateResAlgorithm
from .auth_chain import AuthChainIndex, auth_difference, auth_event_ids, conflicted_subgraph
from .source import DictEventSource, EventSource, PrecomputedAuthChains
from .v1 import resolve_v1
from .v2 import resolve_v2, split_conflicted

__all__ = [
    "AuthChainIndex",
    "DictEventSource",
    "EventSource",
    "PrecomputedAuthChains",
    "auth_difference",
    "auth_event_ids",
    "conflicted_subgraph",
    "resolve_state",
    "split_conflicted",
]


def resolve_state(
    room_version: RoomVersion,
    state_sets: Sequence[Mapping[StateKey, str]],
    source: EventSource,
    *,
    index: AuthChainIndex | None = None,
) -> dict[StateKey, str]:
    """Resolve ``state_sets`` (maps of (type, state_key) to event id) into one state map.

    ``source`` must hold the events of the state sets and their auth chains; events it lacks are left out
    of the ordering. Pass the same ``index`` to many calls to reuse auth chains already computed.
    The result does not depend on the order of ``state_sets`` or of their entries.
    """
    if not state_sets:
        return {}
    if len(state_sets) == 1:
        return dict(state_sets[0])
    if room_version.state_res is StateResAlgorithm.V1:
        return resolve_v1(state_sets, source)
    return resolve_v2(
        state_sets,
        source,
        index if index is not None else AuthChainIndex(),
        v2_1=room_version.state_res is StateResAlgorithm.V2_1,
    )
