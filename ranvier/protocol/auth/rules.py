"""``check_auth_rules``: the authorization rules of room versions 1 to 12, in the spec's order.

Sources: rooms/fragments/v1-auth-rules.md (v1-v2), v3-auth-rules.md (v3-v5), inline in rooms/v6.md and
v7.md, fragments/v8-auth-rules.md (v8-v9), inline in rooms/v10.md, v11.md and v12.md. Each check names its
rule with ``rule_number``, which follows the numbering of the event's room version.

``auth_events`` is a map of the relevant state: either the event's own auth events (after
``check_auth_events_list``), or the room state before the event, or the current state (soft failure). The
rules only look keys up, so a full state map costs nothing extra. For v12 the caller puts the create event
under ("m.room.create", "") although v12 events do not cite it.

What the rules leave to the caller: whether an auth event was itself rejected (rule 2.3 / 3.3), whether the
v12 create event was accepted (rule 2), and the cryptographic check of signatures (the signature step).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import AuthRejected
from ..events import Pdu, StateKey
from ..identifiers import is_valid_user_id, server_of
from ..room_versions import KNOWN_ROOM_VERSIONS
from .membership import check_member_event, membership_of
from .numbering import rule_number
from .power_levels import (
    CREATE_KEY,
    check_power_levels_event,
    get_named_level,
    get_required_level_for_event,
    get_user_power_level,
)
from .selection import auth_types_of


def check_auth_rules(event: Pdu, auth_events: Mapping[StateKey, Pdu]) -> None:
    """Return if ``event`` is authorised by ``auth_events``; raise ``AuthRejected`` naming the rule if not."""
    rv = event.room_version

    def reject(*path: str, reason: str) -> AuthRejected:
        return AuthRejected(rule_number(rv, *path), reason)

    # Rule 1: the create event is judged on its own.
    if event.type == "m.room.create":
        _check_create(event)
        return

    create = auth_events.get(CREATE_KEY)
    if rv.room_id_from_create_event:
        # since v12, rule 2: the room id is "!" + the id of the (accepted) create event
        if create is None or create.event_id != "$" + event.room_id[1:]:
            raise reject("room_id", reason=f"room id {event.room_id} is not that of a known create event")
    elif create is None:
        raise reject("auth_events", "no_create", reason="no m.room.create event among the auth events")

    # Rule 2.5 (v1-v11) / 3.4 (v12): the auth events must be of this room. Only the entries the rules
    # read are checked, so the full room state can be passed cheaply.
    for key in auth_types_of(event):
        auth_event = auth_events.get(key)
        if auth_event is not None and auth_event.room_id != event.room_id:
            raise reject(
                "auth_events", "room_id", reason=f"{auth_event.event_id} is in room {auth_event.room_id}"
            )

    # Rule 3 (4 in v12): m.federate = false keeps other servers' users out.
    if create.content.get("m.federate") is False and server_of(event.sender) != server_of(create.sender):
        raise reject("federate", reason="the room is not federated and the sender is of another server")

    # Rule 4, v1-v5 only: m.room.aliases is authorised by the sender's server alone.
    if rv.special_case_aliases_auth and event.type == "m.room.aliases":
        if event.state_key is None:
            raise reject("aliases", "state_key", reason="m.room.aliases without a state_key")
        if event.state_key != server_of(event.sender):
            raise reject("aliases", "domain", reason="m.room.aliases state_key is not the sender's server")
        return

    if event.type == "m.room.member":
        check_member_event(event, auth_events)
        return

    if membership_of(event.sender, auth_events) != "join":
        raise reject("sender_joined", reason=f"{event.sender} is not joined to the room")

    sender_level = get_user_power_level(event.sender, auth_events, rv)
    if event.type == "m.room.third_party_invite":
        if sender_level >= get_named_level(auth_events, "invite"):
            return
        raise reject("third_party_invite", "only", reason=f"{event.sender} is below the invite level")

    required = get_required_level_for_event(event.type, event.is_state, auth_events)
    if sender_level < required:
        raise reject(
            "required_power", reason=f"{event.type} needs level {required}, sender has {sender_level}"
        )

    if event.state_key is not None and event.state_key.startswith("@") and event.state_key != event.sender:
        raise reject("state_key", reason="a state_key starting with '@' must be the sender's user id")

    if event.type == "m.room.power_levels":
        check_power_levels_event(event, auth_events)
        return

    if not rv.deferred_redaction_check and event.type == "m.room.redaction":
        # v1-v2, rule 11: the redact level, or a redaction of an event minted by the same server. Since v3
        # redactions pass here and are checked when they are applied (handling-redactions fragment).
        if sender_level >= get_named_level(auth_events, "redact"):
            return
        redacts = event.redacts
        if redacts is not None and ":" in redacts and server_of(redacts) == server_of(event.event_id):
            return
        raise reject(
            "redaction", "otherwise", reason="below the redact level and redacting another server's event"
        )


def _check_create(event: Pdu) -> None:
    """Rule 1: m.room.create."""
    rv = event.room_version

    def reject(sub: str, reason: str) -> AuthRejected:
        return AuthRejected(rule_number(rv, "create", sub), reason)

    if event.prev_event_ids:
        raise reject("prev_events", "the create event has prev_events")
    if rv.room_id_from_create_event:
        # since v12, 1.2: no room_id; the room id derives from the event id (Pdu also refuses one)
        if "room_id" in event.json:
            raise reject("room_id", "the create event of this room version must not have a room_id")
    elif server_of(event.room_id) != server_of(event.sender):
        raise reject("room_id", "the room id's domain is not the sender's")
    room_version = event.content.get("room_version")
    if "room_version" in event.content and not (
        isinstance(room_version, str) and room_version in KNOWN_ROOM_VERSIONS
    ):
        raise reject("room_version", f"unknown room version {room_version!r}")
    if not rv.implicit_room_creator and "creator" not in event.content:
        raise reject("creator", "the create event has no content.creator")  # v1-v10
    if rv.privileged_creators and "additional_creators" in event.content:
        # since v12, 1.4 (MSC4289): the same user id validation as for sender
        extra = event.content["additional_creators"]
        if not isinstance(extra, list) or not all(isinstance(u, str) and is_valid_user_id(u) for u in extra):
            raise reject("additional_creators", "additional_creators must be a list of user ids")
