"""Applying history visibility to what we hand out: to our users (/messages, /context, /event) and to other
servers (/event, /backfill, /get_missing_events).

The rules themselves are pure (``ranvier.protocol.visibility``); this module loads what they need. The state
that matters is the state *before* each event (CS "Room History Visibility", "Server behaviour": "the state of
the room at that event"), and only two kinds of entry of it: ``m.room.history_visibility`` and the members in
question. Events of a page mostly share a state group (a run of messages changes no state), so the entries are
read once per distinct group, with the groups of the whole page found in one read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from ..protocol.errors import InvalidIdentifier
from ..protocol.events import Pdu, StateKey
from ..protocol.identifiers import server_of
from ..protocol.visibility import (
    HISTORY_VISIBILITY,
    MEMBER,
    EventFacts,
    HistoryVisibility,
    UserAtEvent,
    membership_from_content,
    server_may_see,
    user_may_see,
    visibility_from_content,
)
from ..storage.interfaces import UnknownEvent
from ..storage.protocols.composite import HasEvents, HasState

HV_KEY: StateKey = (HISTORY_VISIBILITY, "")
# How many of a user's membership changes we walk back to find their last join (rule 3).
MAX_MEMBERSHIP_WALK = 50


class VisibilityStorage(HasEvents, HasState, Protocol):
    """What rooms/visibility.py asks of storage."""


def facts(pdu: Pdu) -> EventFacts:
    return EventFacts(pdu.type, pdu.state_key, pdu.content)


class HistoryVisibilityFilter:
    def __init__(self, storage: VisibilityStorage) -> None:
        self._storage = storage

    # -- users -------------------------------------------------------------------------------------

    async def filter_for_user(self, room_id: str, user_id: str, events: Sequence[Pdu]) -> list[Pdu]:
        """The events of ``events`` that ``user_id`` may see, in their order. Events without known state
        (outliers) are left out: there is nothing to judge them by, and clients never see outliers."""
        if not events:
            return []
        states = await self._states_before(events, [HV_KEY, (MEMBER, user_id)])
        joined_later = await self._joined_later(room_id, [user_id], states.values())
        erased = await self._erased_senders(events)
        kept = []
        for pdu in events:
            state = states.get(pdu.event_id)
            if state is None:
                continue
            visibility = visibility_from_content(state.get(HV_KEY))
            membership = membership_from_content(state.get((MEMBER, user_id)))
            if user_may_see(facts(pdu), user_id, membership, visibility, joined_later[user_id](pdu)):
                # CS "/account/deactivate" erase: only those who could see it before (joined when it was
                # sent) still see an erased user's event whole.
                if pdu.sender in erased and membership != "join" and pdu.sender != user_id:
                    pdu = pdu.redacted()
                kept.append(pdu)
        return await self._without_pending_redactions(kept)

    async def _erased_senders(self, events: Sequence[Pdu]) -> set[str]:
        """The senders of ``events`` whose accounts were erased (``accounts.deactivation``)."""
        tokens = getattr(self._storage, "account_tokens", None)
        if tokens is None:
            return set()
        found: set[str] = await tokens.erased_among({p.sender for p in events})
        return found

    async def _without_pending_redactions(self, events: list[Pdu]) -> list[Pdu]:
        """Leave out redactions that were not applied: v3+ "Handling redactions" sends a redaction to
        clients only once the server applies it (the redact level, or the original sender's server), and
        a client that saw one would hide the target on its own. One whose target is not held yet waits
        too. Applied ones are shown: their target is held and served redacted."""
        redactions = [p for p in events if p.type == "m.room.redaction"]
        if not redactions:
            return events
        held = await self._storage.events.get_events([p.redacts for p in redactions if p.redacts is not None])

        def applied(pdu: Pdu) -> bool:
            target = held.get(pdu.redacts) if pdu.redacts is not None else None
            return target is not None and "redacted_because" in target.unsigned

        return [p for p in events if p.type != "m.room.redaction" or applied(p)]

    async def user_may_see(self, room_id: str, user_id: str, pdu: Pdu) -> bool:
        return bool(await self.filter_for_user(room_id, user_id, [pdu]))

    async def current_visibility(self, room_id: str) -> HistoryVisibility:
        event = await self._storage.state.get_current_state_event(room_id, *HV_KEY)
        return visibility_from_content(event.content if event is not None else None)

    # -- servers -----------------------------------------------------------------------------------

    async def filter_for_server(self, room_id: str, server_name: str, events: Sequence[Pdu]) -> list[Pdu]:
        """``events`` in their order, each in full if ``server_name`` may see it and redacted otherwise.

        The S2S spec has no history-visibility text of its own; we apply the CS rules to the server's users
        (see ``server_may_see``). What the server may not see is redacted rather than left out: /backfill
        and /get_missing_events answers must stay a connected DAG for the asking server to persist them,
        and a redacted event keeps what that needs (ids, prev and auth events, the auth-relevant content)
        while its signatures still verify (S2S "Validating hashes and signatures on received events": an
        event failing the content hash check is redacted by its receiver and processed as such).

        Events without known state (outliers, e.g. the auth chain of a partial-state join) are judged
        by kind: state events are served whole, as /state and /event_auth serve them anyway; others are
        redacted."""
        if not events:
            return []
        members: dict[str, str] = await self._storage.state.get_members(room_id)
        users = sorted(u for u in members if _server(u) == server_name)
        states = await self._states_before(events, [HV_KEY, *((MEMBER, u) for u in users)])
        joined_later = await self._joined_later(room_id, users, states.values())
        erased = await self._erased_senders(events)
        out = []
        for pdu in events:
            state = states.get(pdu.event_id)
            if state is None:
                out.append(pdu if pdu.is_state else pdu.redacted())
                continue
            visibility = visibility_from_content(state.get(HV_KEY))
            at_event = [
                UserAtEvent(u, membership_from_content(state.get((MEMBER, u))), joined_later[u](pdu))
                for u in users
            ]
            whole = server_may_see(facts(pdu), visibility, at_event)
            if whole and pdu.sender in erased:
                # Erasure: a server none of whose users was joined at the event gets it redacted.
                whole = any(u.membership == "join" for u in at_event)
            out.append(pdu if whole else pdu.redacted())
        return out

    # -- loading -----------------------------------------------------------------------------------

    async def _states_before(
        self, events: Sequence[Pdu], keys: list[StateKey]
    ) -> dict[str, Mapping[StateKey, Mapping[str, Any]]]:
        """event id -> the contents of ``keys`` in the state before it; events without state left out."""
        groups: dict[str, int] = await self._storage.state.get_state_groups_before(e.event_id for e in events)
        ids_by_group: dict[int, dict[StateKey, str]] = {}
        for group in dict.fromkeys(groups.values()):
            ids_by_group[group] = await self._storage.state.get_state_ids_for_group(group, keys)
        wanted = {event_id for ids in ids_by_group.values() for event_id in ids.values()}
        pdus: dict[str, Pdu] = await self._storage.events.get_events(wanted) if wanted else {}
        contents = {
            group: {key: pdus[e].content for key, e in ids.items() if e in pdus}
            for group, ids in ids_by_group.items()
        }
        return {event_id: contents[group] for event_id, group in groups.items()}

    async def _joined_later(
        self, room_id: str, users: Iterable[str], states: Iterable[Mapping[StateKey, Mapping[str, Any]]]
    ) -> dict[str, _JoinedAfter]:
        """Per user, a test of rule 3's "the user joined the room at any point after the event was sent".
        Only "shared" asks it, so when no event of ``states`` was sent under "shared" nothing is read.

        A user joined now is: the events we hand out are ones we hold, sent before now (an event after their
        current join has them joined at it, and rule 2 allows it anyway). For anyone else it is their last
        join, found by walking their membership changes back from the current one; "after" is by depth,
        the DAG's own measure of before and after."""
        if all(visibility_from_content(s.get(HV_KEY)) is not HistoryVisibility.SHARED for s in states):
            return {user_id: _JoinedAfter(None) for user_id in users}
        out: dict[str, _JoinedAfter] = {}
        for user_id in users:
            current = await self._storage.state.get_membership(room_id, user_id)
            if current is not None and current[0] == "join":
                out[user_id] = _JoinedAfter(None, always=True)
            else:
                depth = await self._last_join_depth(user_id, current[1] if current is not None else None)
                out[user_id] = _JoinedAfter(depth)
        return out

    async def _last_join_depth(self, user_id: str, event_id: str | None) -> int | None:
        for _ in range(MAX_MEMBERSHIP_WALK):
            if event_id is None:
                return None
            pdu: Pdu | None = await self._storage.events.get_event(event_id)
            if pdu is None:
                return None
            if pdu.membership == "join":
                return pdu.depth
            try:
                before = await self._storage.state.get_state_ids_before(event_id, keys=[(MEMBER, user_id)])
            except UnknownEvent:
                return None
            event_id = before.get((MEMBER, user_id))
        return None


class _JoinedAfter:
    """Whether a user joined after a given event: always (joined now), or when their last join is deeper."""

    __slots__ = ("always", "depth")

    def __init__(self, depth: int | None, always: bool = False) -> None:
        self.depth = depth
        self.always = always

    def __call__(self, pdu: Pdu) -> bool:
        return self.always or (self.depth is not None and pdu.depth < self.depth)


def _server(user_id: str) -> str | None:
    try:
        return server_of(user_id)
    except InvalidIdentifier:
        return None
