"""/sync and rooms joined with partial state (MSC3706 faster joins; behaviour as Synapse's).

- Without a lazy-loading filter (``room.state.lazy_load_members``), a partial-state room is left out of
  /sync until its resync completes: such a client expects every member in ``state``, which partial state
  cannot give (Synapse does the same). It then appears as newly joined, with its full state.
- Simplified sliding sync (MSC4186) likewise: a partial-state room is left out of a list (or a room
  subscription) whose ``required_state`` asks for members beyond ``$LAZY`` and the user's own (all state,
  every member, other users by name), until complete, as Synapse does.
- With lazy-loading, the room is in /sync at once: the partial state carries its name, topic and heroes,
  and the member events of the timeline's senders that the partial state lacks are taken from the auth
  events those timeline events cite. Once complete, the room is sent again with its full state at the
  start of the timeline (the members appear).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..protocol.events import Pdu, StateKey
from ..storage.protocols.composite import HasEvents
from .required_state import LAZY, RequiredState

MEMBER = "m.room.member"


def lazy_load_members(parsed_filter: Any) -> bool:
    """Whether a /sync filter asks for lazy-loaded members (CS "Lazy-loading room members")."""
    try:
        return parsed_filter["room"]["state"]["lazy_load_members"] is True
    except (KeyError, TypeError):
        return False


async def cited_sender_members(
    storage: HasEvents, timeline: Sequence[Pdu], state_ids: Mapping[StateKey, str]
) -> list[Pdu]:
    """Member events of the timeline's senders that ``state_ids`` lacks, from the events' own auth events
    (a partial state omits most members; every event cites its sender's membership)."""
    wanted: dict[str, str] = {}  # auth event id -> the sender whose membership it may be
    senders: set[str] = set()
    for event in timeline:
        if (MEMBER, event.sender) in state_ids or event.sender in senders:
            continue
        senders.add(event.sender)
        for cited_id in event.auth_event_ids:
            wanted.setdefault(cited_id, event.sender)
    if not wanted:
        return []
    loaded = await storage.events.get_events(list(wanted))
    found: dict[str, Pdu] = {}
    for event_id, sender in wanted.items():
        pdu = loaded.get(event_id)
        if pdu is not None and pdu.type == MEMBER and pdu.state_key == sender:
            found.setdefault(sender, pdu)
    return list(found.values())


def partial_room_allowed(required: RequiredState, user_id: str) -> bool:
    """Whether a sliding-sync room config can be served from partial state: it asks for no members but
    lazy-loaded ones and the user's own."""
    if required.all_state:
        return False
    return all(k in (LAZY, user_id) for t, k in required.entries if t == MEMBER)
