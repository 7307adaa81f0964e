"""A small room builder for the auth-rule tests.

``Room`` keeps the current state and the last event; ``make`` builds and signs an event with the auth events
the selection picks from the current state, *without* checking it, so tests can build events that must be
rejected; ``send`` also checks the event against the state and applies it.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import pytest

from ranvier.protocol.auth import auth_types_for_event, check_auth_rules, rule_number
from ranvier.protocol.errors import AuthRejected
from ranvier.protocol.events import Pdu, StateKey, build_event
from ranvier.protocol.room_versions import RoomVersion, get_room_version
from ranvier.protocol.signing import SigningKey

ALICE = "@alice:a.example"  # the creator
BOB = "@bob:b.example"
CAROL = "@carol:c.example"
DAVE = "@dave:d.example"

_CLOCK = itertools.count(1_700_000_000_000)

# One key per server, from fixed seeds: building events stays fast and deterministic.
_KEYS: dict[str, SigningKey] = {}


def key_for(server: str) -> SigningKey:
    if server not in _KEYS:
        seed = (server.encode() * 32)[:32]
        _KEYS[server] = SigningKey.from_seed("k1", seed)
    return _KEYS[server]


def server(user_id: str) -> str:
    return user_id.split(":", 1)[1]


# The versions the brief asks every rule to be tested in, and all of them.
CORE_VERSIONS = ["1", "6", "10", "11", "12"]
ALL_VERSIONS = [str(n) for n in range(1, 13)]


class Room:
    def __init__(self, version: str | RoomVersion, creator: str = ALICE, room_id: str | None = None) -> None:
        self.version = version if isinstance(version, RoomVersion) else get_room_version(version)
        self.creator = creator
        self.state: dict[StateKey, Pdu] = {}
        if self.version.room_id_from_create_event:
            self.room_id = None  # v12: known once the create event exists
        else:
            self.room_id = room_id or f"!room:{server(creator)}"
        self.last: Pdu | None = None
        self.depth = 0

    # -- building ---------------------------------------------------------------------------------

    def make(
        self,
        sender: str,
        event_type: str,
        content: dict[str, Any],
        state_key: str | None = None,
        *,
        prev: list[Pdu] | None = None,
        auth: list[Pdu] | None = None,
        redacts: str | None = None,
        extra_signers: tuple[str, ...] = (),
        room_id: str | None = None,
    ) -> Pdu:
        if auth is None:
            keys = auth_types_for_event(self.version, event_type, state_key, sender, content)
            auth = [self.state[k] for k in sorted(keys) if k in self.state]
        if prev is None:
            prev = [self.last] if self.last is not None else []
        return build_event(
            room_version=self.version,
            room_id=room_id if room_id is not None else self.room_id,
            sender=sender,
            event_type=event_type,
            content=content,
            state_key=state_key,
            prev_events=prev,
            auth_events=auth,
            depth=self.depth + 1,
            origin_server_ts=next(_CLOCK),  # distinct events even when two rooms are built alike
            server_name=server(sender),
            signing_key=key_for(server(sender)),
            redacts=redacts,
            extra_signatures=[(s, key_for(s)) for s in extra_signers],
        )

    def apply(self, event: Pdu) -> Pdu:
        if event.type == "m.room.create" and self.room_id is None:
            self.room_id = event.room_id
        if event.state_tuple is not None:
            self.state[event.state_tuple] = event
        self.last = event
        self.depth = max(self.depth, event.depth)
        return event

    def send(
        self, sender: str, event_type: str, content: dict[str, Any], state_key: str | None = None
    ) -> Pdu:
        event = self.make(sender, event_type, content, state_key)
        check_auth_rules(event, self.state)
        return self.apply(event)

    # -- shortcuts --------------------------------------------------------------------------------

    def member(self, sender: str, target: str, membership: str, **extra: Any) -> Pdu:
        return self.make(sender, "m.room.member", {"membership": membership, **extra}, target)

    def set_member(self, sender: str, target: str, membership: str, **extra: Any) -> Pdu:
        """Apply a membership without checking it (set up a state directly)."""
        return self.apply(self.member(sender, target, membership, **extra))

    def join(self, user: str) -> Pdu:
        return self.send(user, "m.room.member", {"membership": "join"}, user)

    def create_content(self, **extra: Any) -> dict[str, Any]:
        content: dict[str, Any] = {"room_version": self.version.identifier, **extra}
        if not self.version.implicit_room_creator:
            content["creator"] = self.creator
        return content

    def users(self, **levels: int) -> dict[str, int]:
        """A "users" map: the creator at 100 (not since v12: creators cannot be listed) plus ``levels``."""
        base = {} if self.version.privileged_creators else {self.creator: 100}
        return {**base, **levels}

    def default_power_levels(self, users: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        if users is None:
            # since v12 creators cannot be listed: they have infinite power
            users = {} if self.version.privileged_creators else {self.creator: 100}
        return {
            "users": users,
            "users_default": 0,
            "events_default": 0,
            "state_default": 50,
            "ban": 50,
            "kick": 50,
            "redact": 50,
            "invite": 0,
            "events": {"m.room.power_levels": 100},
            **extra,
        }


def new_room(
    version: str | RoomVersion,
    *,
    join_rule: str | None = "public",
    power_levels: dict[str, Any] | None = None,
    with_power_levels: bool = True,
    members: tuple[str, ...] = (),
    create_extra: dict[str, Any] | None = None,
    creator: str = ALICE,
    room_id: str | None = None,
) -> Room:
    """A room with its creator joined, power levels (creator at 100 before v12), a join rule and members."""
    room = Room(version, creator, room_id)
    create = room.make(creator, "m.room.create", room.create_content(**(create_extra or {})), "")
    check_auth_rules(create, {})
    room.apply(create)
    room.join(creator)
    if with_power_levels:
        room.send(creator, "m.room.power_levels", power_levels or room.default_power_levels(), "")
    if join_rule is not None:
        room.send(creator, "m.room.join_rules", {"join_rule": join_rule}, "")
    for user in members:
        if join_rule == "public":
            room.join(user)
        else:
            room.set_member(creator, user, "invite")
            room.join(user)
    return room


def rejects(event: Pdu, state: Mapping[StateKey, Pdu], *path: str) -> AuthRejected:
    """Assert that ``event`` is rejected by exactly the rule at ``path`` (in its room version's numbering)."""
    expected = rule_number(event.room_version, *path)
    with pytest.raises(AuthRejected) as info:
        check_auth_rules(event, state)
    assert info.value.rule == expected, f"expected rule {expected} ({'/'.join(path)}), got {info.value}"
    return info.value


def accepts(event: Pdu, state: Mapping[StateKey, Pdu]) -> None:
    check_auth_rules(event, state)
