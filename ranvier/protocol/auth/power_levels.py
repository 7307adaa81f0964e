"""Power levels: reading them from state, and the authorization rule for m.room.power_levels events.

Reading follows the spec's definitions (S2S "Definitions": required power level, invite/kick/ban/redact
level) and the m.room.power_levels schema's defaults. Values are parsed per room version:

- v1-v9 accept strings that hold an integer ("stringy power levels" fragment): optional ASCII whitespace
  around, one optional sign, decimal digits (leading zeroes allowed);
- v1-v5 also accept floats, truncated towards zero ("floaty power levels" fragment); infinities and NaN
  (what an out-of-range double decodes to) are refused;
- v10+ accept integers only.

JSON booleans are never power levels, although Python's ``bool`` is an ``int``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from ..errors import AuthRejected
from ..events import Pdu, StateKey
from ..identifiers import is_valid_user_id
from ..room_versions import RoomVersion
from .numbering import rule_number

PL_KEY: StateKey = ("m.room.power_levels", "")
CREATE_KEY: StateKey = ("m.room.create", "")

# The seven top-level levels and their defaults (m.room.power_levels schema; S2S "Definitions").
NAMED_LEVEL_DEFAULTS: dict[str, int] = {
    "users_default": 0,
    "events_default": 0,
    "state_default": 50,
    "ban": 50,
    "kick": 50,
    "redact": 50,
    "invite": 0,
}
# "notifications": the level to trigger an @room notification defaults to 50.
NOTIFICATION_DEFAULTS: dict[str, int] = {"room": 50}
# v1-v11: with no m.room.power_levels event, the creator has 100 (schema description of users_default).
CREATOR_DEFAULT_LEVEL = 100

_STRINGY_INT = re.compile(r"[ \t\n\r\f\v]*[+-]?[0-9]+[ \t\n\r\f\v]*")

PowerLevel = int | float  # float only ever for math.inf: a room creator's level since v12


def parse_power_level(value: object, room_version: RoomVersion) -> int | None:
    """The integer a power-level value stands for in ``room_version``, or None if it is not one."""
    if type(value) is int:
        return value
    if room_version.integer_power_levels:
        return None  # since v10: integers only
    if isinstance(value, str):
        # v1-v9: "stringy power levels"; the pattern is ASCII-only, unlike int() alone
        return int(value) if _STRINGY_INT.fullmatch(value) else None
    if isinstance(value, float) and not room_version.strict_canonical_json:
        # v1-v5: "floaty power levels"; v6+ canonical JSON cannot carry floats at all
        return int(value) if math.isfinite(value) else None
    return None


def room_creators(create_event: Pdu) -> set[str]:
    """The room creators named by a create event.

    v1-v10: ``content.creator``; v11: the sender (implicit creator); since v12 the sender plus
    ``content.additional_creators`` (MSC4289). Invalid entries are left out: rule 1 rejects a v12 create
    event whose ``additional_creators`` is malformed, so an accepted one has none.
    """
    rv = create_event.room_version
    if not rv.implicit_room_creator:
        creator = create_event.content.get("creator")
        return {creator} if isinstance(creator, str) else set()
    creators = {create_event.sender}
    if rv.privileged_creators:
        extra = create_event.content.get("additional_creators")
        if isinstance(extra, list):
            creators.update(u for u in extra if isinstance(u, str) and is_valid_user_id(u))
    return creators


def _content(state: Mapping[StateKey, Pdu]) -> dict[str, Any] | None:
    pl = state.get(PL_KEY)
    return pl.content if pl is not None else None


def _level_in(mapping: object, key: str, default: int, room_version: RoomVersion) -> int:
    if isinstance(mapping, dict) and key in mapping:
        parsed = parse_power_level(mapping[key], room_version)
        if parsed is not None:
            return parsed
    return default


def get_user_power_level(
    user_id: str, state: Mapping[StateKey, Pdu], room_version: RoomVersion
) -> PowerLevel:
    """A user's power level given the relevant state (the power levels and create events).

    Since v12 the room creators have an infinite level, whatever the power levels say (MSC4289).
    """
    create = state.get(CREATE_KEY)
    creators = room_creators(create) if create is not None else set()
    if room_version.privileged_creators and user_id in creators:
        return math.inf
    content = _content(state)
    if content is None:
        # v1-v11: without a power levels event the creator has 100 and everyone else 0; since v12 the
        # creators were handled above.
        if not room_version.privileged_creators and user_id in creators:
            return CREATOR_DEFAULT_LEVEL
        return 0
    users_default = _level_in(content, "users_default", 0, room_version)
    return _level_in(content.get("users"), user_id, users_default, room_version)


def get_named_level(state: Mapping[StateKey, Pdu], name: str) -> int:
    """The ``ban``, ``kick``, ``redact`` or ``invite`` level (or a ``*_default``), with its default."""
    default = NAMED_LEVEL_DEFAULTS[name]
    pl = state.get(PL_KEY)
    if pl is None:
        return default
    return _level_in(pl.content, name, default, pl.room_version)


def get_required_level_for_event(event_type: str, is_state: bool, state: Mapping[StateKey, Pdu]) -> int:
    """The *required power level* to send an event of ``event_type`` (S2S "Definitions")."""
    pl = state.get(PL_KEY)
    if pl is None:
        # Schema: with no power levels event, state_default is 50 and events_default 0.
        return NAMED_LEVEL_DEFAULTS["state_default" if is_state else "events_default"]
    default_name = "state_default" if is_state else "events_default"
    default = _level_in(pl.content, default_name, NAMED_LEVEL_DEFAULTS[default_name], pl.room_version)
    return _level_in(pl.content.get("events"), event_type, default, pl.room_version)


def get_notification_level(state: Mapping[StateKey, Pdu], key: str = "room") -> int:
    """The level needed to trigger a notification of kind ``key`` (``room``: @room), default 50."""
    pl = state.get(PL_KEY)
    default = NOTIFICATION_DEFAULTS.get(key, 50)
    if pl is None:
        return default
    return _level_in(pl.content.get("notifications"), key, default, pl.room_version)


# -- the rule for m.room.power_levels events (rule 10 in v1-v5 and v12, rule 9 in v6-v11) ---------------


# The comparison rules reject in their sub-rule: "levels" has .1 (the current value) and .2 (the new one),
# the events and users rules a single .1.
_REJECTING_SUBRULE: dict[str, tuple[str, ...]] = {
    "levels_old": ("levels", "old"),
    "levels_new": ("levels", "new"),
    "events_old": ("events_old", "only"),
    "events_new": ("events_new", "only"),
    "users_old": ("users_old", "only"),
    "users_new": ("users_new", "only"),
}


def _reject(rv: RoomVersion, sub: str, reason: str) -> AuthRejected:
    return AuthRejected(rule_number(rv, "power_levels", *_REJECTING_SUBRULE.get(sub, (sub,))), reason)


def _int_map(content: Mapping[str, Any], rv: RoomVersion, name: str, sub: str) -> dict[str, int]:
    """Parse ``events``/``notifications``/``users`` of a new power levels event, rejecting bad values."""
    if name not in content:
        return {}  # absent is fine; a present null is "not an object"
    value = content[name]
    if not isinstance(value, dict):
        raise _reject(rv, sub, f"'{name}' must be an object")
    out: dict[str, int] = {}
    for key, raw in value.items():
        parsed = parse_power_level(raw, rv)
        if parsed is None:
            raise _reject(rv, sub, f"'{name}.{key}' is not a valid power level: {raw!r}")
        out[key] = parsed
    return out


def _lenient_map(value: object, rv: RoomVersion) -> dict[str, int]:
    """Parse a map of the *previous* power levels event (already accepted), skipping unusable values."""
    if not isinstance(value, dict):
        return {}
    out: dict[str, int] = {}
    for key, raw in value.items():
        parsed = parse_power_level(raw, rv)
        if parsed is not None:
            out[key] = parsed
    return out


def _lenient_named(content: Mapping[str, Any], rv: RoomVersion) -> dict[str, int]:
    out: dict[str, int] = {}
    for name in NAMED_LEVEL_DEFAULTS:
        if name in content:
            parsed = parse_power_level(content[name], rv)
            if parsed is not None:
                out[name] = parsed
    return out


def _new_named(content: Mapping[str, Any], rv: RoomVersion, sub: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for name in NAMED_LEVEL_DEFAULTS:
        if name in content:
            parsed = parse_power_level(content[name], rv)
            if parsed is None:
                raise _reject(rv, sub, f"'{name}' is not a valid power level: {content[name]!r}")
            out[name] = parsed
    return out


def _new_maps(content: Mapping[str, Any], rv: RoomVersion, sub: str) -> dict[str, dict[str, int]]:
    maps = {"events": _int_map(content, rv, "events", sub)}
    if rv.limit_notifications_power_levels:
        # since v6 (MSC2209) "notifications" takes part in the checks; before, it is not looked at
        maps["notifications"] = _int_map(content, rv, "notifications", sub)
    return maps


def check_power_levels_event(event: Pdu, auth_events: Mapping[StateKey, Pdu]) -> None:
    """Rule 10 (v1-v5, v12) / rule 9 (v6-v11): may ``event`` replace the current power levels?"""
    rv = event.room_version
    content = event.content

    if rv.integer_power_levels:
        # since v10, 9.1: the seven named levels are integers when present;
        # 9.2: "events" and "notifications" are objects of integers when present
        new_named = _new_named(content, rv, "level_ints")
        new_maps = _new_maps(content, rv, "maps_ints")

    # 10.1 (v1-v9) / 9.3 (v10+): "users" maps valid user ids to integers (or integer strings before v10)
    new_users = _int_map(content, rv, "users", "users")
    for user_id in new_users:
        if not is_valid_user_id(user_id):
            raise _reject(rv, "users", f"'users' key {user_id!r} is not a valid user id")

    if rv.privileged_creators:
        # since v12, 10.4: room creators cannot appear in "users" (they have infinite power anyway)
        create = auth_events.get(CREATE_KEY)
        creators = room_creators(create) if create is not None else set()
        listed = creators.intersection(new_users)
        if listed:
            raise _reject(rv, "creators", f"room creators may not be listed in 'users': {sorted(listed)}")

    previous = auth_events.get(PL_KEY)
    if previous is None:
        return  # "If there is no previous m.room.power_levels event in the room, allow."

    if not rv.integer_power_levels:
        # v1-v9 only check "users" up front. Other values must still be levels once they are compared
        # with the sender's (10.3-10.5): one that is not cannot be ordered, so the event is rejected there.
        new_named = _new_named(content, rv, "levels_new")
        new_maps = _new_maps(content, rv, "events_new")

    sender_level = get_user_power_level(event.sender, auth_events, rv)
    old = previous.content

    # the seven named levels: added, changed or removed
    old_named = _lenient_named(old, rv)
    for name in NAMED_LEVEL_DEFAULTS:
        old_value, new_value = old_named.get(name), new_named.get(name)
        if old_value == new_value:
            continue
        if old_value is not None and old_value > sender_level:
            raise _reject(rv, "levels_old", f"cannot change '{name}' from {old_value} above own level")
        if new_value is not None and new_value > sender_level:
            raise _reject(rv, "levels_new", f"cannot set '{name}' to {new_value} above own level")

    # "events" (and since v6 "notifications"): changed or removed, then added or changed
    old_maps = {name: _lenient_map(old.get(name), rv) for name in new_maps}
    for name, old_map in old_maps.items():
        for key, old_value in old_map.items():
            if new_maps[name].get(key) != old_value and old_value > sender_level:
                raise _reject(rv, "events_old", f"cannot change '{name}.{key}' ({old_value}) above own level")
    for name, new_map in new_maps.items():
        old_map = old_maps[name]
        for key, new_value in new_map.items():
            if old_map.get(key) != new_value and new_value > sender_level:
                raise _reject(rv, "events_new", f"cannot set '{name}.{key}' to {new_value} above own level")

    # "users": changed or removed (others' entries only), then added or changed
    old_users = _lenient_map(old.get("users"), rv)
    for user_id, old_value in old_users.items():
        if user_id == event.sender or new_users.get(user_id) == old_value:
            continue
        if old_value >= sender_level:
            raise _reject(rv, "users_old", f"cannot change the level of {user_id} ({old_value}) >= own level")
    for user_id, new_value in new_users.items():
        if old_users.get(user_id) != new_value and new_value > sender_level:
            raise _reject(rv, "users_new", f"cannot give {user_id} level {new_value} above own level")
