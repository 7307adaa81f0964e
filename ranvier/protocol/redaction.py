"""The redaction algorithm for every room version.

Sources: rooms/fragments/v1-redactions.md (v1-v5), v6-redactions.md (v6-v7), rooms/v8.md (v8),
v9-redactions.md (v9-v10) and v11-redactions.md (v11+).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .room_versions import RedactionRules, RoomVersion

_TOP_LEVEL_V1 = frozenset(
    {
        "event_id",
        "type",
        "room_id",
        "sender",
        "state_key",
        "content",
        "hashes",
        "signatures",
        "depth",
        "prev_events",
        "prev_state",
        "auth_events",
        "origin",
        "origin_server_ts",
        "membership",
    }
)
# v11: "origin", "membership" and "prev_state" are no longer kept.
_TOP_LEVEL_V11 = _TOP_LEVEL_V1 - {"origin", "membership", "prev_state"}

_PL_KEYS_V1 = ("ban", "events", "events_default", "kick", "redact", "state_default", "users", "users_default")


def _content_keys(rules: RedactionRules) -> dict[str, tuple[str, ...]]:
    keys: dict[str, tuple[str, ...]] = {
        "m.room.member": ("membership",),
        "m.room.create": ("creator",),
        "m.room.join_rules": ("join_rule",),
        "m.room.power_levels": _PL_KEYS_V1,
        "m.room.history_visibility": ("history_visibility",),
    }
    if rules is RedactionRules.V1:
        keys["m.room.aliases"] = ("aliases",)  # dropped from v6
    if rules in (RedactionRules.V8, RedactionRules.V9, RedactionRules.V11):
        keys["m.room.join_rules"] = ("join_rule", "allow")  # since v8
    if rules in (RedactionRules.V9, RedactionRules.V11):
        keys["m.room.member"] = ("membership", "join_authorised_via_users_server")  # since v9
    if rules is RedactionRules.V11:
        keys["m.room.power_levels"] = (*_PL_KEYS_V1, "invite")
        keys["m.room.redaction"] = ("redacts",)
    return keys


_CONTENT_KEYS = {rules: _content_keys(rules) for rules in RedactionRules}
# The event types whose content redaction keeps anything, in some room version: for any other type the
# redacted content is {} (the create event keeps all of it since v11, and is in every rule set's table).
CONTENT_KEEPING_TYPES = frozenset(t for keys in _CONTENT_KEYS.values() for t in keys)


def kept_top_level_keys(room_version: RoomVersion) -> frozenset[str]:
    """The top-level keys the redaction algorithm of ``room_version`` keeps."""
    return _TOP_LEVEL_V11 if room_version.redaction is RedactionRules.V11 else _TOP_LEVEL_V1


def redact_content(event_type: object, content: object, room_version: RoomVersion) -> dict[str, Any]:
    """The ``content`` of the redacted form of an event of ``event_type`` (a new dict)."""
    if not isinstance(content, dict):
        return {}
    rules = room_version.redaction
    if rules is RedactionRules.V11 and event_type == "m.room.create":
        return dict(content)  # since v11 the create event keeps all its content
    allowed = _CONTENT_KEYS[rules].get(event_type, ()) if isinstance(event_type, str) else ()
    new_content = {k: content[k] for k in allowed if k in content}
    if rules is RedactionRules.V11 and event_type == "m.room.member":
        # since v11: keep third_party_invite.signed only
        tpi = content.get("third_party_invite")
        if isinstance(tpi, dict) and "signed" in tpi:
            new_content["third_party_invite"] = {"signed": tpi["signed"]}
    return new_content


def redact_event(event: Mapping[str, Any], room_version: RoomVersion) -> dict[str, Any]:
    """Return the redacted form of a PDU dict (the input is left untouched)."""
    top = kept_top_level_keys(room_version)
    redacted = {k: v for k, v in event.items() if k in top}
    redacted["content"] = redact_content(event.get("type"), event.get("content"), room_version)
    return redacted
