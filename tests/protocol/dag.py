"""Readable DAG fixtures: build a room's events from names and edges, sign them, and resolve state.

    dag = Dag("11").public_room("alice", members=["bob", "zara"], users={"bob": 50})
    dag.member("BAN", "bob", "ban", target="zara", prev=["IMZ"])
    dag.power_levels("PL2", "alice", users={"bob": 0}, prev=["IMZ"])
    assert dag.resolve("BAN", "PL2")[("m.room.power_levels", "")] == "PL2"

Each event's auth events are picked (auth events selection, ``auth_types_for_event``) from the state before
it: the resolution of the states after its prev events, the way a server would. Users are short names
("alice" is "@alice:example.org"); events are named in capitals after Synapse's test DAGs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ranvier.protocol.auth import auth_types_for_event, check_auth_rules
from ranvier.protocol.errors import AuthRejected
from ranvier.protocol.events import Pdu, StateKey, build_event
from ranvier.protocol.room_versions import RoomVersion, get_room_version
from ranvier.protocol.signing import SigningKey
from ranvier.protocol.state_res import AuthChainIndex, DictEventSource, resolve_state
from ranvier.protocol.state_res.auth_chain import CREATE_KEY, auth_event_ids

SERVER = "example.org"
_KEY = SigningKey.from_seed("dag", b"\x07" * 32)
PL_KEY: StateKey = ("m.room.power_levels", "")
JR_KEY: StateKey = ("m.room.join_rules", "")


def user(name: str) -> str:
    return name if name.startswith("@") else f"@{name}:{SERVER}"


class Dag:
    def __init__(self, room_version: RoomVersion | str) -> None:
        self.room_version = (
            room_version if isinstance(room_version, RoomVersion) else get_room_version(room_version)
        )
        self.source = DictEventSource()
        self.index = AuthChainIndex()
        self.room_id: str | None = None if self.room_version.room_id_from_create_event else f"!room:{SERVER}"
        self.events: dict[str, Pdu] = {}
        self.names: dict[str, str] = {}  # event id -> name
        self.states: dict[str, dict[StateKey, str]] = {}  # name -> state after the event
        self.last: str | None = None
        self._ts = 0

    # -- building -------------------------------------------------------------------------------

    def add(
        self,
        name: str,
        event_type: str,
        sender: str,
        content: Mapping[str, Any],
        *,
        state_key: str | None = None,
        prev: Sequence[str] | None = None,
        ts: int | None = None,
        rejected: bool | None = None,
    ) -> Dag:
        """Add an event after ``prev`` (default: the last event added).

        ``rejected``: None checks the event against its auth events and the state before it and marks
        it rejected if either refuses it; True or False forces the verdict.
        """
        if name in self.events:
            raise ValueError(f"duplicate event name {name}")
        sender = user(sender)
        if prev is None:
            prev = [] if self.last is None else [self.last]
        before = self.state_before(prev)
        keys = auth_types_for_event(self.room_version, event_type, state_key, sender, content)
        auth_ids = sorted(before[k] for k in keys if k in before)
        self._ts += 1
        event = build_event(
            room_version=self.room_version,
            room_id=self.room_id,
            sender=sender,
            event_type=event_type,
            content=dict(content),
            prev_events=[self.events[p].event_id for p in prev],
            auth_events=auth_ids,
            depth=1 + max((self.events[p].depth for p in prev), default=0),
            origin_server_ts=self._ts if ts is None else ts,
            server_name=SERVER,
            signing_key=_KEY,
            state_key=state_key,
        )
        if event_type == "m.room.create" and self.room_id is None:
            self.room_id = event.room_id
        if rejected is None:
            rejected = not self._passes(event, before)
        self.source.add(event, rejected=rejected)
        self.events[name] = event
        self.names[event.event_id] = name
        after = dict(before)
        if state_key is not None and not rejected:
            after[(event_type, state_key)] = event.event_id
        self.states[name] = after
        self.last = name
        return self

    def _passes(self, event: Pdu, before: Mapping[StateKey, str]) -> bool:
        """Whether a server would accept ``event``: against its auth events and the state before it."""
        get = self.source.get_event
        own = {e.state_tuple: e for i in auth_event_ids(event) if (e := get(i)) is not None and e.state_tuple}
        state = {k: e for k, i in before.items() if (e := get(i)) is not None}
        try:
            check_auth_rules(event, own)
            check_auth_rules(event, state)
        except AuthRejected:
            return False
        return True

    def create(self, name: str, sender: str, **content: Any) -> Dag:
        body: dict[str, Any] = {"room_version": self.room_version.identifier, **content}
        if not self.room_version.implicit_room_creator:
            body.setdefault("creator", user(sender))
        return self.add(name, "m.room.create", sender, body, state_key="", prev=[])

    def member(self, name: str, sender: str, membership: str, *, target: str | None = None, **kw: Any) -> Dag:
        content = {"membership": membership, **kw.pop("content", {})}
        return self.add(name, "m.room.member", sender, content, state_key=user(target or sender), **kw)

    def join(self, name: str, who: str, **kw: Any) -> Dag:
        return self.member(name, who, "join", **kw)

    def power_levels(self, name: str, sender: str, users: Mapping[str, int] | None = None, **kw: Any) -> Dag:
        content = {"users": {user(u): level for u, level in (users or {}).items()}, **kw.pop("content", {})}
        return self.add(name, "m.room.power_levels", sender, content, state_key="", **kw)

    def join_rules(self, name: str, sender: str, rule: str, **kw: Any) -> Dag:
        return self.add(name, "m.room.join_rules", sender, {"join_rule": rule}, state_key="", **kw)

    def topic(self, name: str, sender: str, topic: str | None = None, **kw: Any) -> Dag:
        return self.add(name, "m.room.topic", sender, {"topic": topic or name}, state_key="", **kw)

    def public_room(
        self, creator: str, members: Sequence[str] = (), users: Mapping[str, int] | None = None
    ) -> Dag:
        """CREATE, IMA (creator joins), IPOWER, IJR (public) and IM<initial> joins of ``members``.

        Before v12 the creator gets 100 in IPOWER; since v12 creators may not be listed (MSC4289).
        """
        levels = dict(users or {})
        if not self.room_version.privileged_creators:
            levels.setdefault(creator, 100)
        self.create("CREATE", creator).join("IMA", creator).power_levels("IPOWER", creator, levels)
        self.join_rules("IJR", creator, "public")
        for m in members:
            self.join(f"IM{m[0].upper()}", m)
        return self

    # -- state ----------------------------------------------------------------------------------

    def state_before(self, prev: Sequence[str]) -> dict[StateKey, str]:
        return resolve_state(self.room_version, [self.states[p] for p in prev], self.source, index=self.index)

    def resolve(self, *names: str, states: Sequence[Mapping[StateKey, str]] = ()) -> dict[StateKey, str]:
        """Resolve the states after ``names`` (and any explicit ``states``); values are event names."""
        sets = [self.states[n] for n in names] + [dict(s) for s in states]
        resolved = resolve_state(self.room_version, sets, self.source, index=AuthChainIndex())
        return {k: self.names[v] for k, v in resolved.items()}

    def state_of(self, *names: str) -> dict[StateKey, str]:
        """A hand-written state map: each named event under its own key."""
        return {self.events[n].state_tuple or ("", ""): self.events[n].event_id for n in names}

    def id(self, name: str) -> str:
        return self.events[name].event_id

    def rejected(self, name: str) -> bool:
        return self.source.is_rejected(self.id(name))


def named(state: Mapping[StateKey, str], dag: Dag) -> dict[StateKey, str]:
    return {k: dag.names[v] for k, v in state.items()}


__all__ = ["CREATE_KEY", "JR_KEY", "PL_KEY", "Dag", "named", "user"]
