"""What /createRoom puts in a new room, in order (CS "Creation"): pure, so it is easy to test.

The order is the spec's: create, the creator's join, power levels, canonical alias, the preset's state,
initial_state, name, topic. Invites are sent afterwards as membership events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..protocol.room_versions import RoomVersion

StateEventSpec = tuple[str, str, dict[str, Any]]  # (type, state_key, content)

_PRESETS: dict[str, dict[str, str]] = {
    "private_chat": {"join_rule": "invite", "history_visibility": "shared", "guest_access": "can_join"},
    "trusted_private_chat": {
        "join_rule": "invite",
        "history_visibility": "shared",
        "guest_access": "can_join",
    },
    "public_chat": {"join_rule": "public", "history_visibility": "shared", "guest_access": "forbidden"},
}


class CreateRoomError(ValueError):
    """A /createRoom body the spec does not allow; carries the errcode to answer with."""

    def __init__(self, errcode: str, message: str) -> None:
        super().__init__(message)
        self.errcode = errcode
        self.message = message


@dataclass(frozen=True)
class RoomPlan:
    create_content: dict[str, Any]
    state: list[StateEventSpec]  # after the create event and the creator's join
    invites: list[str]
    is_direct: bool
    alias_localpart: str | None
    publish: bool


def default_power_levels(
    creator: str, room_version: RoomVersion, preset: str, invites: list[str]
) -> dict[str, Any]:
    users: dict[str, int] = {}
    if not room_version.privileged_creators:
        users[creator] = 100  # since v12 creators have infinite power and must not be listed
    if preset == "trusted_private_chat":
        for user in invites:
            users[user] = 100
    return {
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": 150 if room_version.privileged_creators else 100,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 0,
        "historical": 100,
        "notifications": {"room": 50},
    }


MEGOLM = "m.megolm.v1.aes-sha2"


def plan_room(
    body: dict[str, Any],
    creator: str,
    room_version: RoomVersion,
    server_name: str,
    encrypt_by_default: str = "off",
) -> RoomPlan:
    """``encrypt_by_default``: "all" (every new room), "invite" (rooms of the private presets) or "off":
    the operator's choice of rooms that start encrypted unless the request's ``initial_state`` says how
    (Synapse's ``encryption_enabled_by_default_for_room_type``; the spec leaves it to the server)."""
    visibility = body.get("visibility", "private")
    if not isinstance(visibility, str) or visibility not in ("public", "private"):
        raise CreateRoomError("M_INVALID_PARAM", "visibility must be 'public' or 'private'")
    preset = body.get("preset")
    if preset is None:
        preset = "public_chat" if visibility == "public" else "private_chat"
    if not isinstance(preset, str) or preset not in _PRESETS:  # a list or an object is not hashable
        raise CreateRoomError("M_INVALID_PARAM", f"preset must be one of {', '.join(_PRESETS)}")
    is_direct = body.get("is_direct", False)
    if not isinstance(is_direct, bool):
        raise CreateRoomError("M_INVALID_PARAM", "is_direct must be a boolean")

    invites = body.get("invite", [])
    if not isinstance(invites, list) or not all(isinstance(u, str) for u in invites):
        raise CreateRoomError("M_INVALID_PARAM", "invite must be a list of user ids")

    creation_content = body.get("creation_content") or {}
    if not isinstance(creation_content, dict):
        raise CreateRoomError("M_INVALID_PARAM", "creation_content must be an object")
    create_content = {k: v for k, v in creation_content.items() if k != "room_version"}
    create_content["room_version"] = room_version.identifier
    if not room_version.implicit_room_creator:
        create_content["creator"] = creator  # before v11 the create event names its creator
    if room_version.privileged_creators:
        extra = create_content.get("additional_creators")
        if extra is not None and (not isinstance(extra, list) or not all(isinstance(u, str) for u in extra)):
            raise CreateRoomError("M_INVALID_PARAM", "additional_creators must be a list of user ids")

    state: list[StateEventSpec] = []
    power_levels = default_power_levels(creator, room_version, preset, invites)
    override = body.get("power_level_content_override")
    if override is not None:
        if not isinstance(override, dict):
            raise CreateRoomError("M_INVALID_PARAM", "power_level_content_override must be an object")
        power_levels.update(override)
    state.append(("m.room.power_levels", "", power_levels))

    alias_localpart = body.get("room_alias_name")
    if alias_localpart is not None:
        if (
            not isinstance(alias_localpart, str)
            or not alias_localpart
            or ":" in alias_localpart
            or any(c.isspace() for c in alias_localpart)
        ):
            raise CreateRoomError(
                "M_INVALID_PARAM", "room_alias_name must be a localpart without ':' or spaces"
            )
        if len(f"#{alias_localpart}:{server_name}".encode()) > 255:  # CS "Room aliases": at most 255 bytes
            raise CreateRoomError("M_INVALID_PARAM", "the room alias would be longer than 255 bytes")
        state.append(("m.room.canonical_alias", "", {"alias": f"#{alias_localpart}:{server_name}"}))

    preset_values = _PRESETS[preset]
    state.append(("m.room.join_rules", "", {"join_rule": preset_values["join_rule"]}))
    state.append(
        ("m.room.history_visibility", "", {"history_visibility": preset_values["history_visibility"]})
    )
    state.append(("m.room.guest_access", "", {"guest_access": preset_values["guest_access"]}))
    if encrypt_by_default == "all" or (
        encrypt_by_default == "invite" and preset in ("private_chat", "trusted_private_chat")
    ):
        asked = body.get("initial_state")
        if not (
            isinstance(asked, list)
            and any(isinstance(i, dict) and i.get("type") == "m.room.encryption" for i in asked)
        ):
            state.append(("m.room.encryption", "", {"algorithm": MEGOLM}))

    initial_state = body.get("initial_state", [])
    if not isinstance(initial_state, list):
        raise CreateRoomError("M_INVALID_PARAM", "initial_state must be a list")
    for item in initial_state:
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise CreateRoomError("M_INVALID_PARAM", "initial_state entries need a 'type'")
        content = item.get("content", {})
        state_key = item.get("state_key", "")
        if not isinstance(content, dict) or not isinstance(state_key, str):
            raise CreateRoomError("M_INVALID_PARAM", "initial_state entries need object content")
        if item["type"] in ("m.room.create", "m.room.member", "m.room.power_levels"):
            continue  # these come from the request's other fields, never from initial_state
        state.append((item["type"], state_key, content))

    name = body.get("name")
    if name is not None:
        if not isinstance(name, str):
            raise CreateRoomError("M_INVALID_PARAM", "name must be a string")
        state.append(("m.room.name", "", {"name": name}))
    topic = body.get("topic")
    if topic is not None:
        if not isinstance(topic, str):
            raise CreateRoomError("M_INVALID_PARAM", "topic must be a string")
        state.append(
            (
                "m.room.topic",
                "",
                {"topic": topic, "m.topic": {"m.text": [{"body": topic, "mimetype": "text/plain"}]}},
            )
        )

    # Later entries with the same (type, state_key) win, as the spec's ordering implies.
    deduped: dict[tuple[str, str], StateEventSpec] = {}
    for spec in state:
        deduped.pop((spec[0], spec[1]), None)
        deduped[(spec[0], spec[1])] = spec
    return RoomPlan(
        create_content=create_content,
        state=list(deduped.values()),
        invites=invites,
        is_direct=is_direct,
        alias_localpart=alias_localpart,
        publish=visibility == "public",
    )
