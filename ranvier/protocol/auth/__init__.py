"""The authorization rules of room versions 1-12 (spec rooms/vN.md "Authorisation rules").

Pure functions over events and state maps; no I/O. The public API:

- ``check_auth_rules(event, auth_events)``: raise ``AuthRejected(rule, reason)`` unless authorised;
- ``check_auth_events_list(event, auth_events)``: the checks on the auth events an event cites, returning
  the map for ``check_auth_rules``;
- ``auth_types_for_event(...)``: the auth events selection;
- power level helpers (``power_levels``) for the client API.
"""

from __future__ import annotations

from .numbering import rule_number
from .power_levels import (
    get_named_level,
    get_notification_level,
    get_required_level_for_event,
    get_user_power_level,
    parse_power_level,
    room_creators,
)
from .rules import check_auth_rules
from .selection import auth_types_for_event, check_auth_events_list

__all__ = [
    "auth_types_for_event",
    "check_auth_events_list",
    "check_auth_rules",
    "get_named_level",
    "get_notification_level",
    "get_required_level_for_event",
    "get_user_power_level",
    "parse_power_level",
    "room_creators",
    "rule_number",
]
