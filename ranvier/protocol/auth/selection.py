"""Auth events selection (S2S "Auth events selection") and the checks on an event's claimed auth events.

The checks are rule 2 (v1-v11) / rule 3 (v12) of the authorization rules, "Considering the event's
auth_events". They look at the *list* the event cites, which ``check_auth_rules`` cannot see: it receives a
map, where duplicates have already collapsed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import AuthRejected
from ..events import Pdu, StateKey
from ..room_versions import RoomVersion
from .numbering import rule_number
from .power_levels import CREATE_KEY, PL_KEY


def auth_types_for_event(
    room_version: RoomVersion,
    event_type: str,
    state_key: str | None,
    sender: str,
    content: Mapping[str, Any],
) -> set[StateKey]:
    """The (type, state_key) pairs an event of this shape may cite as auth events.

    Used both to build events (pick these from the current state) and to check received ones. Since v12
    the create event is never selected: the room id implies it (MSC4291).
    """
    if event_type == "m.room.create":
        return set()  # "The auth_events for the m.room.create event in a room is empty"
    keys: set[StateKey] = {PL_KEY, ("m.room.member", sender)}
    if not room_version.room_id_from_create_event:
        keys.add(CREATE_KEY)  # v1-v11 only
    if event_type == "m.room.member" and state_key is not None:
        keys.add(("m.room.member", state_key))
        membership = content.get("membership")
        # join_rules for join and invite; knock exists since v7
        if membership in ("join", "invite") or (membership == "knock" and room_version.knock_join_rule):
            keys.add(("m.room.join_rules", ""))
        if membership == "invite":
            token = _third_party_invite_token(content)
            if token is not None:
                keys.add(("m.room.third_party_invite", token))
        if membership == "join" and room_version.restricted_join_rule:
            # since v8: the member event of the user who authorised a restricted join
            authoriser = content.get("join_authorised_via_users_server")
            if isinstance(authoriser, str):
                keys.add(("m.room.member", authoriser))
    return keys


def _third_party_invite_token(content: Mapping[str, Any]) -> str | None:
    tpi = content.get("third_party_invite")
    if not isinstance(tpi, dict):
        return None
    signed = tpi.get("signed")
    if not isinstance(signed, dict):
        return None
    token = signed.get("token")
    return token if isinstance(token, str) else None


def auth_types_of(event: Pdu) -> set[StateKey]:
    return auth_types_for_event(event.room_version, event.type, event.state_key, event.sender, event.content)


def check_auth_events_list(event: Pdu, auth_events: Sequence[Pdu]) -> dict[StateKey, Pdu]:
    """Check the auth events an event cites and return them keyed by (type, state_key).

    ``auth_events`` are the events of ``event.auth_event_ids`` the caller has fetched. The caller also
    owns rule 2.3 ("entries which were themselves rejected"): it knows which events it rejected. For a
    v12 room the returned map lacks the create event; the caller adds it before ``check_auth_rules``.
    Raises ``AuthRejected`` naming rule 2.x (v1-v11) or 3.x (v12).
    """
    rv = event.room_version
    if event.type == "m.room.create":
        return {}  # rule 1 decides alone for create events; rule 2 does not apply

    cited = set(event.auth_event_ids)
    for auth_event in auth_events:
        if auth_event.event_id not in cited:
            raise ValueError(f"{auth_event.event_id} is not among the auth events of {event.event_id}")

    # x.1: duplicate (type, state_key) entries, including the same event cited twice
    duplicates = rule_number(rv, "auth_events", "duplicates")
    if len(cited) != len(event.auth_event_ids):
        raise AuthRejected(duplicates, "auth_events cite the same event twice")
    by_key: dict[StateKey, Pdu] = {}
    for auth_event in auth_events:
        key = auth_event.state_tuple
        if key is not None:
            if key in by_key:
                raise AuthRejected(duplicates, f"auth_events cite {key} twice")
            by_key[key] = auth_event

    # x.2: only what the auth events selection picks for this event
    selection = rule_number(rv, "auth_events", "selection")
    if rv.room_id_from_create_event and "$" + event.room_id[1:] in cited:
        # since v12: the create event (whose id the room id implies) must not be cited
        raise AuthRejected(selection, "auth_events cite the create event")
    allowed = auth_types_of(event)
    for auth_event in auth_events:
        key = auth_event.state_tuple
        if key is None or key not in allowed:
            raise AuthRejected(
                selection,
                f"auth event {auth_event.event_id} ({key}) is not one the auth events selection allows",
            )

    if not rv.room_id_from_create_event and CREATE_KEY not in by_key:
        raise AuthRejected(
            rule_number(rv, "auth_events", "no_create"), "auth_events lack the m.room.create event"
        )
    for auth_event in by_key.values():
        if auth_event.room_id != event.room_id:
            raise AuthRejected(
                rule_number(rv, "auth_events", "room_id"),
                f"auth event {auth_event.event_id} belongs to room {auth_event.room_id}",
            )
    return by_key
