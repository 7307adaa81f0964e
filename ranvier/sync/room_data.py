"""One room of a sliding sync response (MSC4186 "Room response"), the first time a connection is sent
the room (``initial``) or with what changed since it was last sent.

The timeline is read by stream order, bounded by the user's leave or ban; ``required_state`` is the
room's current state (the state at the leave for a room the user left), and on an incremental response
only the entries that changed, were newly asked for, or are newly needed by ``$LAZY``. As in Synapse 1.163,
``name`` and ``avatar`` come from the room's ``m.room.name`` and ``m.room.avatar``, ``heroes`` are given
when the room has no name, and the member counts when the room is new to the connection or its
membership changed. Unlike Synapse (which sends 0 for both), ``notification_count`` and
``highlight_count`` are the user's unread counts from the push rules (ranvier/push).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ..client_api.bundled import BundledAggregations, BundledStorage
from ..client_api.event_format import format_client_event
from ..protocol.events import Pdu
from ..storage.protocols.composite import HasEvents, HasState, HasStream
from ..storage.protocols.sliding_sync import SlidingSyncStorage
from ..storage.sql.push_counts import Counts
from .connections import RoomSent
from .required_state import MEMBER, RequiredState, StateKey, timeline_members
from .room_list import AVATAR, BUMP_EVENT_TYPES, NAME, RoomEntry
from .stripped import membership_stripped_state

MAX_HEROES = 5


class RoomDataStorage(BundledStorage, HasEvents, HasState, HasStream, Protocol):
    """What sync/room_data.py asks of storage."""


@dataclass(frozen=True, slots=True)
class RoomConfig:
    required_state: RequiredState
    timeline_limit: int

    def merge(self, other: RoomConfig) -> RoomConfig:
        return RoomConfig(
            self.required_state.union(other.required_state), max(self.timeline_limit, other.timeline_limit)
        )


@dataclass(frozen=True, slots=True)
class RoomContext:
    """What the whole response shares: the user, the positions, and what was read for every room."""

    user_id: str
    upto_events: int
    request_since: int | None  # the event position of the request's pos (None: no pos)
    upto_token: str  # the response's stream token, a /messages ``from`` when the timeline is empty
    now: int
    # Rooms already sent that have no event since (one query for them all, instead of one each).
    quiet: frozenset[str] = frozenset()


class RoomDataBuilder:
    def __init__(self, storage: RoomDataStorage, store: SlidingSyncStorage, visibility: Any = None) -> None:
        self._storage = storage
        self._store = store
        self._visibility = visibility
        self._bundled = BundledAggregations(storage, visibility) if visibility is not None else None

    async def build(
        self,
        ctx: RoomContext,
        entry: RoomEntry,
        config: RoomConfig,
        prev: RoomSent | None,
        counts: Counts,
        member_counts: tuple[int, int],
        is_dm: bool,
    ) -> tuple[dict[str, Any] | None, RoomSent]:
        """The room's response (None when nothing changed since ``prev``) and what is now sent."""
        if entry.membership in ("invite", "knock"):
            return await self._invite(ctx, entry, config, prev, counts, is_dm)
        if prev is not None and prev.membership in ("invite", "knock") and entry.membership == "join":
            prev = None  # joined since the invite was sent: the room is new to the client (as Synapse)
        room_id = entry.room_id
        # People shouldn't see past their leave or ban.
        bound = ctx.upto_events if entry.membership == "join" else min(entry.position, ctx.upto_events)
        limit = config.timeline_limit
        initial = prev is None
        # A larger timeline_limit than the room was sent with: its timeline is sent again, as far back as
        # the new limit, flagged unstable_expanded_timeline (Synapse's answer to a client that opens a
        # room it had only in the room list).
        expanded = prev is not None and limit > prev.timeline_limit
        changed: set[StateKey] = set()
        news = prev is not None and prev.events_position < bound and room_id not in ctx.quiet
        if prev is None or expanded:
            raw = await self._storage.stream.get_recent_events(room_id, limit + 1, before_stream=bound + 1)
        elif news:
            found = await self._storage.stream.get_room_events_between(
                [room_id], prev.events_position, bound, limit + 1
            )
            raw = found.get(room_id, [])
        else:
            raw = []
        if prev is not None and news:
            changed = await self._store.state_keys_changed(room_id, prev.events_position, bound)
        added = (
            config.required_state.added_since(prev.required_state) if prev is not None else RequiredState()
        )
        if prev is not None and not raw and not changed and not added.entries and not expanded:
            return None, prev
        limited = len(raw) > limit
        timeline = raw[-limit:] if limit > 0 else []
        breaks = (
            await self._storage.events.get_timeline_breaks(room_id, [e.event_id for e in timeline])
            if timeline
            else set()
        )
        if breaks:
            # An event of the window follows a hole (see client_api/sync.py): start after it, limited,
            # so the client pages back through /messages, which fills the hole.
            timeline = timeline[max(i for i, e in enumerate(timeline) if e.event_id in breaks) :]
            limited = True
        prev_batch = ctx.upto_token
        positions: dict[str, int] = {}
        if timeline:
            meta = await self._storage.events.get_event_meta(timeline[0].event_id)
            if meta is not None:
                prev_batch = str(meta.topo_before)
            positions = await self._store.event_positions([e.event_id for e in timeline])
        if self._visibility is not None:
            visible = {
                e.event_id for e in await self._visibility.filter_for_user(room_id, ctx.user_id, timeline)
            }
            # The user's own membership events are always theirs to see: a rejected invite shows its
            # leave, or the client would never see the room go (Synapse makes the same exception).
            timeline = [e for e in timeline if e.event_id in visible or _own_membership(e, ctx.user_id)]

        state_ids = await self._state_ids(entry)
        lazy_sent = prev.lazy_members if prev is not None else frozenset()
        # Members asked for by name are sent when they change; $LAZY adds the timeline's other people
        # not sent before (as Synapse does).
        explicit = config.required_state.explicit_members()
        lazy_users = (
            timeline_members(timeline) - lazy_sent - explicit if config.required_state.lazy_members else set()
        )
        wanted: dict[StateKey, str]
        if prev is None:
            wanted = config.required_state.select(state_ids, lazy_users)
        else:
            # Membership changes reach a lazy-loading client that has the full timeline (as in Synapse).
            changed_members = {k for t, k in changed if t == MEMBER} if not limited else set()
            wanted = {
                k: state_ids[k]
                for k in changed
                if k in state_ids and config.required_state.wants(k, lazy_users | changed_members)
            }
            wanted.update(added.select(state_ids))
            wanted.update(
                {(MEMBER, u): state_ids[(MEMBER, u)] for u in lazy_users if (MEMBER, u) in state_ids}
            )
        state_events = await self._storage.events.get_events(wanted.values())

        room: dict[str, Any] = {}
        membership_changed = any(t == MEMBER for t, _ in changed)
        # CS "m.room.name": an absent or empty name is no name. As in Synapse, the name is only looked at
        # when the room is new to the connection or its name changed, and heroes go with a membership
        # change whenever no name was looked at.
        name = await self._content_field(state_ids.get(NAME), "name") if initial or NAME in changed else None
        if name:
            room["name"] = name
        if initial or AVATAR in changed:
            avatar = await self._content_field(state_ids.get(AVATAR), "url")
            if avatar:
                room["avatar"] = avatar
        if not name and (initial or membership_changed) and entry.membership == "join":
            heroes = await self._heroes(ctx.user_id, state_ids)
            if heroes:
                room["heroes"] = heroes
        if initial:
            room["initial"] = True
        if expanded:
            room["unstable_expanded_timeline"] = True
        if state_events:
            room["required_state"] = [
                format_client_event(state_events[e], ctx.now, include_room_id=False)
                for e in wanted.values()
                if e in state_events
            ]
        if timeline and limited and self._bundled is not None:
            # Bundled aggregations as /sync gives them: with a limited timeline (CS "Aggregations of child
            # events"), whose events the client may not have seen the relations of.
            room["timeline"] = await self._bundled.serialize(
                room_id, ctx.user_id, timeline, ctx.now, include_room_id=False
            )
        elif timeline:
            room["timeline"] = [format_client_event(e, ctx.now, include_room_id=False) for e in timeline]
        room["limited"] = limited
        room["prev_batch"] = prev_batch
        room["num_live"] = _num_live(timeline, positions, ctx.request_since)
        if is_dm:
            room["is_dm"] = True
        bump = _bump_stamp(timeline, positions)
        if entry.membership != "join":
            # A room the user left or was banned from: their membership is its last news for them
            # (as for invites, and as Synapse answers).
            bump = entry.position if entry.position > 0 else None
        elif bump is None and (initial or limited):
            bump = entry.bump_stamp
        if bump is not None:
            room["bump_stamp"] = bump
        if (initial or membership_changed) and entry.membership == "join":
            room["joined_count"], room["invited_count"] = member_counts
        room["notification_count"] = counts.notification_count
        room["highlight_count"] = counts.highlight_count
        # A lazily sent member whose membership changed since, without the change being sent now, is no
        # longer known to the client as it is: forget it, so that it is sent again when next needed
        # (otherwise the client keeps the stale member event; Synapse forgets it the same way).
        stale = {k for t, k in changed if t == MEMBER and (MEMBER, k) not in wanted}
        sent = RoomSent(
            bound,
            config.required_state,
            config.timeline_limit,
            (lazy_sent - stale) | {u for u in lazy_users if (MEMBER, u) in state_ids},
            entry.membership,
        )
        return room, sent

    async def _invite(
        self,
        ctx: RoomContext,
        entry: RoomEntry,
        config: RoomConfig,
        prev: RoomSent | None,
        counts: Counts,
        is_dm: bool,
    ) -> tuple[dict[str, Any] | None, RoomSent]:
        sent = RoomSent(
            entry.position, config.required_state, config.timeline_limit, membership=entry.membership
        )
        if prev is not None and prev.events_position >= entry.position:
            return None, prev
        room: dict[str, Any] = {"initial": True, "invite_state": await invite_state(self._storage, entry)}
        if is_dm:
            room["is_dm"] = True
        # The invite (or knock) is the user's latest activity in a room they are not in; an invite from
        # another server is an outlier with a position all the same (as Synapse answers).
        if entry.position > 0:
            room["bump_stamp"] = entry.position
        room["notification_count"] = counts.notification_count
        room["highlight_count"] = counts.highlight_count
        return room, sent

    async def _state_ids(self, entry: RoomEntry) -> dict[StateKey, str]:
        state: dict[StateKey, str]
        if entry.membership == "join":
            state = await self._storage.state.get_current_state_ids(entry.room_id)
            return state
        try:
            state = await self._storage.state.get_state_ids_after(entry.event_id)
            return state
        except LookupError:
            # The leave of a room this server was never in (a rejected remote invite) has no state.
            return {}

    async def _content_field(self, event_id: str | None, key: str) -> str | None:
        if event_id is None:
            return None
        event = await self._storage.events.get_event(event_id)
        value = event.content.get(key) if event is not None else None
        return value if isinstance(value, str) and value else None

    async def _heroes(self, user_id: str, state_ids: dict[StateKey, str]) -> list[dict[str, Any]]:
        """Up to five other members, joined and invited first, in the order they became members, then
        (when there are none) those who left; each with their display name and avatar where set."""
        member_ids = {k: e for (t, k), e in state_ids.items() if t == MEMBER and k != user_id}
        events = await self._storage.events.get_events(member_ids.values())
        positions = await self._store.event_positions(member_ids.values())
        current: list[tuple[int, str, Pdu]] = []
        former: list[tuple[int, str, Pdu]] = []
        for member, event_id in member_ids.items():
            event = events.get(event_id)
            if event is None:
                continue
            item = (positions.get(event_id, 0), member, event)
            (current if event.membership in ("join", "invite") else former).append(item)
        chosen = sorted(current)[:MAX_HEROES] or sorted(former)[:MAX_HEROES]
        heroes: list[dict[str, Any]] = []
        for _, member, event in chosen:
            hero: dict[str, Any] = {"user_id": member}
            name, avatar = event.content.get("displayname"), event.content.get("avatar_url")
            if isinstance(name, str):
                hero["displayname"] = name
            if isinstance(avatar, str):
                hero["avatar_url"] = avatar
            heroes.append(hero)
        return heroes


async def invite_state(storage: RoomDataStorage, entry: RoomEntry) -> list[dict[str, Any]]:
    key = "invite_room_state" if entry.membership == "invite" else "knock_room_state"
    return await membership_stripped_state(storage, entry.room_id, entry.event_id, key)


def _own_membership(event: Pdu, user_id: str) -> bool:
    return event.type == MEMBER and event.state_key == user_id


def _num_live(timeline: list[Pdu], positions: dict[str, int], since: int | None) -> int:
    """How many of the timeline's events (from its end) came after the request's position."""
    if since is None:
        return 0
    live = 0
    for event in reversed(timeline):
        if positions.get(event.event_id, 0) <= since:
            break
        live += 1
    return live


def _bump_stamp(timeline: list[Pdu], positions: dict[str, int]) -> int | None:
    for event in reversed(timeline):
        if event.type in BUMP_EVENT_TYPES and positions.get(event.event_id, 0) > 0:
            return positions[event.event_id]
    return None
