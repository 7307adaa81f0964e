"""Authorising events of a room whose state is partial (joined with ``members_omitted``, MSC3706).

Partial state holds every non-member state event but few members, so the auth rules would find no
membership for most senders and targets. Until the resync brings the full state, an event is checked with
the member events it cites as its own auth events standing in for the memberships the state lacks (as
Synapse does for partial-state rooms); the resync re-checks every such event against the full state
(``partial_resync.py``) and rejects those that then fail.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from ..protocol.events import Pdu, StateKey

MEMBER = "m.room.member"
Load = Callable[[Iterable[str]], Awaitable[dict[str, tuple[Pdu, str | None]]]]


def with_cited_members(pdu: Pdu, state: dict[StateKey, Pdu], known: dict[str, Pdu]) -> dict[StateKey, Pdu]:
    """``state`` (events) plus the member events ``pdu`` cites (found in ``known``) whose keys it lacks."""
    out = dict(state)
    for auth_id in pdu.auth_event_ids:
        cited = known.get(auth_id)
        if cited is not None and cited.type == MEMBER and cited.state_key is not None:
            out.setdefault((MEMBER, cited.state_key), cited)
    return out


async def with_cited_member_ids(pdu: Pdu, state: dict[StateKey, str], load: Load) -> dict[StateKey, str]:
    """``state`` (ids) plus the accepted member events ``pdu`` cites whose keys it lacks."""
    if not pdu.auth_event_ids:
        return state
    loaded = await load(pdu.auth_event_ids)
    out = dict(state)
    for auth_id in pdu.auth_event_ids:
        entry = loaded.get(auth_id)
        if entry is None or entry[1] is not None:
            continue
        cited = entry[0]
        if cited.type == MEMBER and cited.state_key is not None:
            out.setdefault((MEMBER, cited.state_key), auth_id)
    return out
