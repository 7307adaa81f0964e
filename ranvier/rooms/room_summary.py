"""What a room looks like from outside: its summary (CS "GET /room_summary", the ``rooms`` of "GET
/hierarchy", S2S "GET /hierarchy") and who may see it.

A summary is built from the room's current state, so only for rooms this server is in (a local user
joined); of other rooms we know at most an invite's or knock's stripped state, and their summaries come
from a resident over federation (``rooms.spaces``).

Who may see a summary (CS "GET /hierarchy", ``rooms``): a member, anyone who may join (invited, a public
room, a restricted room whose ``allow`` conditions the user meets), anyone who may knock (``knock`` and,
since v10, ``knock_restricted``), and anyone at all when the history is ``world_readable``. Over federation
the asking server takes the user's place: it may see the room when one of its users could (S2S "GET
/hierarchy": "the requesting server ... the room is accessible"), and never when the room's server ACL
denies it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..protocol.errors import ProtocolError
from ..protocol.events import Pdu, StateKey
from ..protocol.room_versions import get_room_version
from .incoming_acl import server_allowed_by_acl

SPACE_CHILD = "m.space.child"
SPACE_ROOM_TYPE = "m.space"
# S2S/CS "m.space.child": an ``order`` is at most 50 characters of U+0020..U+007E, else it is ignored.
MAX_ORDER_LENGTH = 50


class LocalRoom:
    """A room this server is in, with its current state loaded."""

    def __init__(self, room_id: str, state: Mapping[StateKey, Pdu], joined_members: int) -> None:
        self.room_id = room_id
        self.state = state
        self.joined_members = joined_members

    def content(self, event_type: str, state_key: str = "") -> dict[str, Any]:
        pdu = self.state.get((event_type, state_key))
        return pdu.content if pdu is not None else {}

    @property
    def join_rule(self) -> str:
        rule = self.content("m.room.join_rules").get("join_rule")
        return rule if isinstance(rule, str) else "invite"  # no join rules event: invite (auth rules)

    @property
    def room_type(self) -> str | None:
        value = self.content("m.room.create").get("type")
        return value if isinstance(value, str) else None

    @property
    def is_space(self) -> bool:
        return self.room_type == SPACE_ROOM_TYPE

    def child_events(self) -> list[Pdu]:
        """The room's ``m.space.child`` events with a valid ``via`` (the others are no child), ordered as
        the spec's "Ordering of children within a space" says."""
        children = [
            pdu
            for (etype, _), pdu in self.state.items()
            if etype == SPACE_CHILD and valid_via(pdu.content.get("via"))
        ]
        return sorted(
            children, key=lambda p: child_sort_key(p.content, p.origin_server_ts, p.state_key or "")
        )

    def summary(self) -> dict[str, Any]:
        """The room's summary (CS "definitions/room_summary": the public rooms chunk, room_type,
        allowed_room_ids, encryption, room_version). Absent fields are left out, never guessed."""
        out: dict[str, Any] = {
            "room_id": self.room_id,
            "num_joined_members": self.joined_members,
            "world_readable": self.content("m.room.history_visibility").get("history_visibility")
            == "world_readable",
            "guest_can_join": self.content("m.room.guest_access").get("guest_access") == "can_join",
            "join_rule": self.join_rule,
        }
        for event_type, key, field in (
            ("m.room.name", "name", "name"),
            ("m.room.topic", "topic", "topic"),
            ("m.room.canonical_alias", "alias", "canonical_alias"),
            ("m.room.avatar", "url", "avatar_url"),
            ("m.room.encryption", "algorithm", "encryption"),
        ):
            value = self.content(event_type).get(key)
            if isinstance(value, str) and value:
                out[field] = value
        if self.room_type is not None:
            out["room_type"] = self.room_type
        create = self.state.get(("m.room.create", ""))
        if create is not None:
            out["room_version"] = create.room_version.identifier
        allowed = allowed_room_ids(self.content("m.room.join_rules"))
        if self.join_rule in ("restricted", "knock_restricted") and allowed:
            out["allowed_room_ids"] = allowed
        return out

    def children_state(self) -> list[dict[str, Any]]:
        """The space's child events as stripped state with ``origin_server_ts`` (empty for other rooms)."""
        if not self.is_space:
            return []
        return [
            {
                "type": pdu.type,
                "state_key": pdu.state_key or "",
                "content": pdu.content,
                "sender": pdu.sender,
                "origin_server_ts": pdu.origin_server_ts,
            }
            for pdu in self.child_events()
        ]

    def server_allowed(self, server: str) -> bool:
        acl = self.state.get(("m.room.server_acl", ""))
        return server_allowed_by_acl(server, acl.content if acl is not None else None)


def valid_via(via: Any) -> bool:
    return isinstance(via, list) and any(isinstance(s, str) and s for s in via)


def via_servers(content: Mapping[str, Any]) -> list[str]:
    via = content.get("via")
    return [s for s in via if isinstance(s, str) and s] if isinstance(via, list) else []


def child_sort_key(content: Mapping[str, Any], ts: int, room_id: str) -> tuple[int, str, int, str]:
    """CS "Ordering of children within a space": children with a valid ``order`` first, by order
    (code points), then the rest; ties by the child event's timestamp, then by room id."""
    order = content.get("order")
    if (
        isinstance(order, str)
        and len(order) <= MAX_ORDER_LENGTH
        and all(0x20 <= ord(c) <= 0x7E for c in order)
    ):
        return (0, order, ts, room_id)
    return (1, "", ts, room_id)


def allowed_room_ids(join_rules: Mapping[str, Any]) -> list[str]:
    allow = join_rules.get("allow")
    out = []
    for condition in allow if isinstance(allow, list) else []:
        if (
            isinstance(condition, dict)
            and condition.get("type") == "m.room_membership"
            and isinstance(condition.get("room_id"), str)
        ):
            out.append(condition["room_id"])
    return out


def open_to_anyone(summary: Mapping[str, Any]) -> bool:
    """Public, knockable or world-readable: anyone may see the summary (and unauthenticated clients too,
    CS "GET /room_summary")."""
    join_rule = summary.get("join_rule")
    if summary.get("world_readable") is True or join_rule == "public":
        return True
    if join_rule not in ("knock", "knock_restricted"):
        return False
    # "in a room version that supports those settings": knock since v7, knock_restricted since v10.
    try:
        rv = get_room_version(str(summary.get("room_version")))
    except ProtocolError:
        return True  # a version we do not know (a remote room's): its knock rules are taken as meant
    return rv.knock_join_rule if join_rule == "knock" else rv.knock_restricted_join_rule


def accessible_to_user(
    summary: Mapping[str, Any], membership: str | None, user_joined_rooms: set[str]
) -> bool:
    """May a user with ``membership`` (in this room, as we know it) who is joined to
    ``user_joined_rooms`` see the room? Used alike for local summaries and for those of remote rooms."""
    if membership in ("join", "invite"):
        return True
    if open_to_anyone(summary):
        return True
    if summary.get("join_rule") in ("restricted", "knock_restricted"):
        allowed = summary.get("allowed_room_ids")
        if isinstance(allowed, list) and any(r in user_joined_rooms for r in allowed):
            return True
    return False
