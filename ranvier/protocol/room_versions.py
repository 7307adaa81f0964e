"""The room-version table, as data.

Each version is one frozen record of named feature flags, written as a small delta on the version before
(ruma's model). Code asks the record a question ("does this version have knock?") and never compares version
strings. See the spec's rooms/_index.md "Feature matrix" and the per-version pages rooms/vN.md.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum

from .errors import UnsupportedRoomVersion


class EventIdFormat(Enum):
    DOMAIN = "domain"  # v1-v2: "$opaque:server", chosen by the origin and carried in the PDU
    BASE64 = "base64"  # v3: "$" + reference hash, standard unpadded base64
    URLSAFE_BASE64 = "urlsafe"  # v4+: "$" + reference hash, URL-safe unpadded base64


class StateResAlgorithm(Enum):
    V1 = "v1"
    V2 = "v2"
    V2_1 = "v2.1"


class RedactionRules(Enum):
    V1 = "v1"  # v1-v5
    V6 = "v6"  # v6-v7: m.room.aliases no longer keeps "aliases"
    V8 = "v8"  # v8: join_rules keeps "allow"
    V9 = "v9"  # v9-v10: member keeps "join_authorised_via_users_server"
    V11 = "v11"  # v11+: see rooms/fragments/v11-redactions.md


@dataclass(frozen=True, slots=True)
class RoomVersion:
    identifier: str
    event_id_format: EventIdFormat
    state_res: StateResAlgorithm
    redaction: RedactionRules
    # v1-v5 accept floats and out-of-range integers; v6+ enforce canonical JSON strictly.
    strict_canonical_json: bool
    # v5+: a signing key must be valid at the event's origin_server_ts.
    enforce_key_validity: bool
    # v1-v5: the m.room.aliases special auth rule (rule 4 of v1-v5).
    special_case_aliases_auth: bool
    # v6+: the "notifications" key of power levels is subject to the power-level change checks.
    limit_notifications_power_levels: bool
    knock_join_rule: bool  # v7+
    restricted_join_rule: bool  # v8+
    knock_restricted_join_rule: bool  # v10+
    integer_power_levels: bool  # v10+: power level values must be integers, not strings
    # v11+: the create event has no "creator"; the sender is the creator.
    implicit_room_creator: bool
    # v11+: "redacts" lives in content for m.room.redaction.
    redacts_in_content: bool
    # v12: room creators (sender + additional_creators) have infinite power and cannot be in power levels.
    privileged_creators: bool
    # v12: the room id is "!" + the create event's reference hash; the create event has no room_id.
    room_id_from_create_event: bool
    # v3+: "redacts" checks wait until the redacted event is seen (handling-redactions fragment).
    deferred_redaction_check: bool


_V1 = RoomVersion(
    identifier="1",
    event_id_format=EventIdFormat.DOMAIN,
    state_res=StateResAlgorithm.V1,
    redaction=RedactionRules.V1,
    strict_canonical_json=False,
    enforce_key_validity=False,
    special_case_aliases_auth=True,
    limit_notifications_power_levels=False,
    knock_join_rule=False,
    restricted_join_rule=False,
    knock_restricted_join_rule=False,
    integer_power_levels=False,
    implicit_room_creator=False,
    redacts_in_content=False,
    privileged_creators=False,
    room_id_from_create_event=False,
    deferred_redaction_check=False,
)
_V2 = replace(_V1, identifier="2", state_res=StateResAlgorithm.V2)
_V3 = replace(_V2, identifier="3", event_id_format=EventIdFormat.BASE64, deferred_redaction_check=True)
_V4 = replace(_V3, identifier="4", event_id_format=EventIdFormat.URLSAFE_BASE64)
_V5 = replace(_V4, identifier="5", enforce_key_validity=True)
_V6 = replace(
    _V5,
    identifier="6",
    redaction=RedactionRules.V6,
    strict_canonical_json=True,
    special_case_aliases_auth=False,
    limit_notifications_power_levels=True,
)
_V7 = replace(_V6, identifier="7", knock_join_rule=True)
_V8 = replace(_V7, identifier="8", redaction=RedactionRules.V8, restricted_join_rule=True)
_V9 = replace(_V8, identifier="9", redaction=RedactionRules.V9)
_V10 = replace(_V9, identifier="10", knock_restricted_join_rule=True, integer_power_levels=True)
_V11 = replace(
    _V10,
    identifier="11",
    redaction=RedactionRules.V11,
    implicit_room_creator=True,
    redacts_in_content=True,
)
_V12 = replace(
    _V11,
    identifier="12",
    state_res=StateResAlgorithm.V2_1,
    privileged_creators=True,
    room_id_from_create_event=True,
)

KNOWN_ROOM_VERSIONS: dict[str, RoomVersion] = {
    v.identifier: v for v in (_V1, _V2, _V3, _V4, _V5, _V6, _V7, _V8, _V9, _V10, _V11, _V12)
}

# rooms/_index.md: servers SHOULD use room version 12 as the default for new rooms.
DEFAULT_ROOM_VERSION = "12"


def get_room_version(identifier: object) -> RoomVersion:
    """Look up a room version by its identifier; unknown versions are refused clearly."""
    if not isinstance(identifier, str):
        raise UnsupportedRoomVersion(f"room version must be a string, got {identifier!r}")
    try:
        return KNOWN_ROOM_VERSIONS[identifier]
    except KeyError:
        raise UnsupportedRoomVersion(
            f"room version {identifier!r} is not supported (known: {', '.join(KNOWN_ROOM_VERSIONS)})"
        ) from None
