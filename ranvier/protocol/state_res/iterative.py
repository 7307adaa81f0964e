"""The iterative auth checks algorithm (rooms/fragments/v2-state-res.md "Definitions")."""

from __future__ import annotations

from collections.abc import Iterable

from ..auth import auth_types_for_event, check_auth_rules
from ..errors import ProtocolError
from ..events import Pdu, StateKey
from .auth_chain import CREATE_KEY, AuthChainIndex
from .source import EventSource


def auth_events_for_check(
    event: Pdu, state: dict[StateKey, str], index: AuthChainIndex, source: EventSource
) -> dict[StateKey, Pdu]:
    """The auth events to check ``event`` against during iterative auth checks.

    The state's entry for each key the auth rules need; where the state has none, the event's own auth
    event of that key, unless that auth event was rejected. Rejected events are never used as auth events
    ("Rejected events": auth events are not re-authed). Since v12 the create event is implied by the room
    id and is passed under ("m.room.create", "") as ``check_auth_rules`` expects.
    """
    auth: dict[StateKey, Pdu] = {}
    for auth_id in index.auth_ids(event.event_id, source) or ():
        auth_event = source.get_event(auth_id)
        if auth_event is None or auth_event.state_key is None or source.is_rejected(auth_id):
            continue
        auth[(auth_event.type, auth_event.state_key)] = auth_event
    needed = auth_types_for_event(
        event.room_version, event.type, event.state_key, event.sender, event.content
    )
    if event.room_version.room_id_from_create_event:
        needed = {*needed, CREATE_KEY}
    for key in needed:
        state_id = state.get(key)
        if state_id is None:
            continue
        state_event = source.get_event(state_id)
        if state_event is not None and not source.is_rejected(state_id):
            auth[key] = state_event
    return auth


def iterative_auth_checks(
    event_ids: Iterable[str],
    initial: dict[StateKey, str],
    index: AuthChainIndex,
    source: EventSource,
    *,
    in_place: bool = False,
) -> dict[StateKey, str]:
    """Apply each state event in order to a copy of ``initial`` if the authorization rules allow it.

    Interop (rooms/v2.md "Rejected events"): an event we rejected on receipt is never applied, even if it
    would pass here. The spec says rejected events are "handled as usual" by state resolution, which would
    let an event rejected for the state before it re-enter the state; Synapse never admits a rejected event
    (it keeps it in the orderings, as we do, but skips it here), and a server that admits what its peers
    refuse splits the room. The rejected flag comes from ``source.is_rejected``.

    ``in_place``: update and return ``initial`` itself (the caller has no further use for it).
    """
    state = initial if in_place else dict(initial)
    is_rejected = source.is_rejected
    for event_id in event_ids:
        event = source.get_event(event_id)
        if event is None or event.state_key is None or is_rejected(event_id):
            continue
        try:
            check_auth_rules(event, auth_events_for_check(event, state, index, source))
        except ProtocolError:
            # AuthRejected, or a malformed auth event the rules cannot read: either way not applied.
            continue
        state[(event.type, event.state_key)] = event_id
    return state
