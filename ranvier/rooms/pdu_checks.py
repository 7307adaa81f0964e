"""The per-PDU checks shared by the intake of new PDUs (``incoming``) and of history (``backfill``).

S2S "Checks performed on receipt of a PDU", steps 4 and 5, plus the redact-level question asked of v3+
redactions, and the orders in which a batch of events is judged (parents first). Each check reads the
events it needs through the caller's ``load``: events with their verdicts (None: accepted), from the
caller's run or from storage, so that an event judged earlier in the same run is seen with its verdict.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

from ..protocol.auth import check_auth_events_list, check_auth_rules, rule_number
from ..protocol.auth.power_levels import get_named_level, get_user_power_level
from ..protocol.auth.selection import auth_types_of
from ..protocol.errors import AuthRejected
from ..protocol.events import Pdu, StateKey
from ..protocol.room_versions import EventIdFormat, RoomVersion
from .state import StateIds

CREATE_KEY: StateKey = ("m.room.create", "")
PL_KEY: StateKey = ("m.room.power_levels", "")
# The start of the reason given when an event's auth events cannot be found (not a verdict on the event).
MISSING_AUTH_EVENTS = "missing auth events"

Loaded = dict[str, tuple[Pdu, str | None]]
Load = Callable[[Iterable[str]], Awaitable[Loaded]]

# Event types whose authorisation reads more than the event's room, sender, type and state key and the
# create, power levels and sender's member events (their content, the redacted event, other members).
_NOT_PLAIN = frozenset(
    {
        "m.room.create",
        "m.room.member",
        "m.room.third_party_invite",
        "m.room.aliases",
        "m.room.power_levels",
        "m.room.redaction",
    }
)
_MEMO_LIMIT = 10_000
_PlainKey = tuple[str, str, str, str | None, str, tuple[str, ...]]


class _PlainVerdicts:
    """What the auth rules decided for "plain" events (any type but _NOT_PLAIN), which nothing decides but
    the event's room, sender, type and state key, the room version, and the create, power levels and
    sender's member events (``check_auth_rules``: rule 2.5 reads those three keys, rule 3 the create
    event, the membership and power level rules the member and power levels events;
    ``check_auth_events_list``: the cited ids and their (type, state_key) and rooms). A chain of messages
    of one sender cites the same auth events and has the same state before it, so each event repeated
    both checks (steps 4 and 5) on the same inputs: about 12 us a message in a v10 room. Only room
    versions whose event ids are hashes of the event are remembered (an id then stands for one content),
    and only passes (a rejection is worked out again, with its reason)."""

    def __init__(self) -> None:
        self.lists: dict[_PlainKey, dict[StateKey, str]] = {}  # the cited list, checked -> key -> event id
        self.passed: set[_PlainKey] = set()  # check_auth_rules passed with these three events

    @staticmethod
    def shape(pdu: Pdu) -> tuple[str, str, str, str | None, str] | None:
        rv = pdu.room_version
        if pdu.type in _NOT_PLAIN or rv.event_id_format is EventIdFormat.DOMAIN:
            return None
        return (rv.identifier, pdu.room_id, pdu.type, pdu.state_key, pdu.sender)

    def auth_events_list(self, pdu: Pdu, loaded: Mapping[str, Pdu]) -> dict[StateKey, Pdu]:
        """``check_auth_events_list`` of ``pdu`` against its cited events (``loaded``, by id)."""
        shape = self.shape(pdu)
        if shape is None:
            return check_auth_events_list(pdu, [loaded[a] for a in dict.fromkeys(pdu.auth_event_ids)])
        key = (*shape, pdu.auth_event_ids)
        ids = self.lists.get(key)
        if ids is None:
            auth_map = check_auth_events_list(pdu, [loaded[a] for a in dict.fromkeys(pdu.auth_event_ids)])
            if len(self.lists) >= _MEMO_LIMIT:
                self.lists.clear()
            self.lists[key] = {k: e.event_id for k, e in auth_map.items()}
            return auth_map
        return {k: loaded[event_id] for k, event_id in ids.items()}

    def check_rules(self, pdu: Pdu, auth_events: Mapping[StateKey, Pdu]) -> None:
        """``check_auth_rules(pdu, auth_events)``."""
        shape = self.shape(pdu)
        if shape is None:
            check_auth_rules(pdu, auth_events)
            return
        create, pl = auth_events.get(CREATE_KEY), auth_events.get(PL_KEY)
        member = auth_events.get(("m.room.member", pdu.sender))
        used = tuple(e.event_id if e is not None else "" for e in (create, pl, member))
        key = (*shape, used)
        if key in self.passed:
            return
        check_auth_rules(pdu, auth_events)
        if len(self.passed) >= _MEMO_LIMIT:
            self.passed.clear()
        self.passed.add(key)


_plain = _PlainVerdicts()


async def check_against_auth_events(rv: RoomVersion, pdu: Pdu, load: Load) -> str | None:
    """Step 4: the rules against the event's own auth events. The rejection reason, or None."""
    loaded = await load(pdu.auth_event_ids)
    lacking = [a for a in pdu.auth_event_ids if a not in loaded]
    if lacking:
        return f"{MISSING_AUTH_EVENTS} {', '.join(lacking)}"
    rejected = [a for a in pdu.auth_event_ids if loaded[a][1] is not None]
    if rejected:
        # rule 2.3 (3.3 in v12): "entries which were themselves rejected"
        return f"rule {rule_number(rv, 'auth_events', 'rejected')}: auth event {rejected[0]} was rejected"
    try:
        auth_map = _plain.auth_events_list(pdu, {a: loaded[a][0] for a in pdu.auth_event_ids})
        if rv.room_id_from_create_event and pdu.type != "m.room.create":
            # since v12 the create event is implied by the room id, and must itself be accepted
            create_id = "$" + pdu.room_id[1:]
            create = (await load([create_id])).get(create_id)
            if create is not None and create[1] is None:
                auth_map[CREATE_KEY] = create[0]
        _plain.check_rules(pdu, auth_map)
    except AuthRejected as e:
        return str(e)
    return None


async def auth_state(pdu: Pdu, state: StateIds, load: Load) -> dict[StateKey, Pdu]:
    """The events of ``state`` that the rules consult for ``pdu`` (the create event always)."""
    keys = auth_types_of(pdu) | {CREATE_KEY}
    wanted = {k: state[k] for k in keys if k in state}
    loaded = await load(wanted.values())
    return {k: loaded[e][0] for k, e in wanted.items() if e in loaded}


async def check_against_state(pdu: Pdu, state: StateIds, load: Load) -> str | None:
    """Step 5: the rules against the state before the event. The rejection reason, or None."""
    try:
        _plain.check_rules(pdu, await auth_state(pdu, state, load))
    except AuthRejected as e:
        return f"against the state before it: {e}"
    return None


async def may_redact(rv: RoomVersion, pdu: Pdu, state: StateIds, load: Load) -> bool:
    """For v3+ redactions: does the sender have the redact level (checked when applied)?"""
    keys = {k: state[k] for k in (CREATE_KEY, PL_KEY) if k in state}  # two lookups, not a scan of the room
    loaded = await load(keys.values())
    events = {k: loaded[v][0] for k, v in keys.items() if v in loaded}
    return get_user_power_level(pdu.sender, events, rv) >= get_named_level(events, "redact")


def dag_order(pdus: Iterable[Pdu]) -> list[Pdu]:
    """Prev events before the events citing them (within the batch), otherwise by depth and the order
    they came in."""
    return _topo(list(pdus), lambda p: p.prev_event_ids)


def auth_order(pdus: Iterable[Pdu]) -> list[Pdu]:
    """Auth events before the events citing them (within the batch), otherwise as ``dag_order``."""
    return _topo(list(pdus), lambda p: p.auth_event_ids)


def _topo(pdus: Sequence[Pdu], parents: Callable[[Pdu], Iterable[str]]) -> list[Pdu]:
    by_id: dict[str, Pdu] = {p.event_id: p for p in pdus}
    position = {p.event_id: i for i, p in enumerate(pdus)}
    out: list[Pdu] = []
    entered: set[str] = set()  # a cycle (possible with v1-v2 ids, which are not hashes) is cut
    for start in sorted(by_id.values(), key=lambda p: (p.depth, position[p.event_id])):
        # Iterative depth-first walk (a chain of auth or prev events can be thousands long), parents in
        # the order the event names them.
        stack: list[tuple[Pdu, bool]] = [(start, False)]
        while stack:
            pdu, expanded = stack.pop()
            if expanded:
                out.append(pdu)
                continue
            if pdu.event_id in entered:
                continue
            entered.add(pdu.event_id)
            stack.append((pdu, True))
            for parent_id in reversed(list(parents(pdu))):
                parent = by_id.get(parent_id)
                if parent is not None and parent_id not in entered:
                    stack.append((parent, False))
    return out
