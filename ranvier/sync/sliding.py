"""Simplified sliding sync (MSC4186), the response for one request: the lists, the rooms to send, the
extensions, and the connection position it ends at.

Built on the same positions as /sync: a ``pos`` holds a /sync token (``SyncToken``: events, account data,
receipts, typing, to-device, device lists), and "what changed since" is read the same way, from the event
stream between two positions and ``SyncExtras`` for the rest. What the connection has already been sent
of each room lives in ranvier/sync/connections.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Protocol

from ..client_api.account_data import forgotten_event
from ..clock import now_ms
from ..storage.protocols.composite import HasAccountData, HasEvents, HasPartialState, HasPushActions
from ..storage.protocols.sliding_sync import SlidingSyncStorage
from ..storage.sql.push_counts import Counts
from .changes import SyncToken
from .connections import Position, RoomSent
from .extensions import ExtensionRooms, SlidingExtensions, has_news
from .partial_rooms import partial_room_allowed
from .required_state import RequiredState
from .room_data import RoomConfig, RoomContext, RoomDataBuilder, RoomDataStorage, invite_state
from .room_list import (
    CREATE,
    ENCRYPTION,
    SPACE_CHILD,
    RoomEntry,
    RoomFacts,
    candidate_rooms,
    dm_room_ids,
    in_ranges,
    passes,
    sort_rooms,
    state_facts,
    stripped_facts,
    sync_ops,
    valid_space_child,
    with_bump_stamps,
)
from .sliding_request import ListFilters, RoomParams, SlidingRequest

ROOMS_AT_ONCE = 8


class SlidingStorage(RoomDataStorage, HasEvents, HasAccountData, HasPushActions, HasPartialState, Protocol):
    """What sync/sliding.py asks of storage."""


@dataclass(frozen=True, slots=True)
class SlidingResult:
    body: dict[str, Any]  # everything but "pos"
    position: Position
    has_news: bool


class SlidingSync:
    def __init__(
        self,
        storage: SlidingStorage,
        store: SlidingSyncStorage,
        rooms: RoomDataBuilder,
        extensions: SlidingExtensions,
    ) -> None:
        self._storage = storage
        self._store = store
        self._rooms = rooms
        self._extensions = extensions

    async def compute(
        self, user_id: str, device_id: str, request: SlidingRequest, since: Position | None, upto: SyncToken
    ) -> SlidingResult:
        since_events = since.token.events if since is not None else None
        rows = await self._store.memberships(user_id)
        gone = [r for r in rows if r.membership in ("leave", "ban")]
        forgotten = {
            r.event_id for r in gone if await forgotten_event(self._storage, user_id, r.room_id) == r.event_id
        }
        listed = await with_bump_stamps(
            self._store, candidate_rooms(rows, user_id, since_events, forgotten), upto.events
        )
        m_direct = await self._storage.account_data.get_global(user_id, "m.direct")
        dm_rooms = dm_room_ids(m_direct)

        configs: dict[str, RoomConfig] = {}
        lists: dict[str, Any] = {}
        by_list: dict[str, list[str]] = {}
        ordered = sort_rooms(listed.values())
        facts = await self._facts(ordered) if _needs_facts(request) else {}
        # Rooms joined with partial state (MSC3706): only for configs that need no full membership.
        partial = await self._storage.partial_state.partial_among(e.room_id for e in ordered)
        for name, params in request.lists.items():
            children = await self._space_children(params.filters, listed)
            config = _config(params.room, user_id)
            servable = partial_room_allowed(config.required_state, user_id)
            chosen = [
                e.room_id
                for e in ordered
                if (servable or e.room_id not in partial)
                and passes(
                    e,
                    params.filters,
                    facts.get(e.room_id, RoomFacts(None, None, False)),
                    dm_rooms,
                    children,
                    await self._tags(user_id, e.room_id, params.filters),
                )
            ]
            lists[name] = {"count": len(chosen), "ops": sync_ops(chosen, params.ranges)}
            by_list[name] = in_ranges(chosen, params.ranges)
            config = _config(params.room, user_id)
            for room_id in by_list[name]:
                configs[room_id] = configs[room_id].merge(config) if room_id in configs else config

        # Room subscriptions: any room the user has a membership in, a left one included (its timeline
        # ends at the leave); rooms the user never was in are left out, as Synapse does.
        all_rooms = {r.room_id: r for r in rows}
        subscribed: list[str] = []
        for room_id, sub in request.room_subscriptions.items():
            row = all_rooms.get(room_id)
            if row is None:
                continue
            config = _config(sub, user_id)
            if not partial_room_allowed(
                config.required_state, user_id
            ) and await self._storage.partial_state.is_partial(room_id):
                continue
            if room_id not in listed:
                extra = RoomEntry(row.room_id, row.membership, row.event_id, row.position, row.sender)
                listed.update(await with_bump_stamps(self._store, {room_id: extra}, upto.events))
            subscribed.append(room_id)
            config = _config(sub, user_id)
            configs[room_id] = configs[room_id].merge(config) if room_id in configs else config

        joined = [r for r in configs if listed[r].membership == "join"]
        counts = await self._storage.push_actions.unread_counts(user_id, joined) if joined else {}
        member_counts = await self._store.member_counts(joined)
        for room_id in await self._storage.partial_state.partial_among(joined):
            # Joined with partial state: the room's count, not the few members held (PartialStateStore).
            held, invited = member_counts.get(room_id, (0, 0))
            joined_count = await self._storage.partial_state.estimate_joined_count(room_id, held)
            member_counts[room_id] = (joined_count, invited)
        sent: dict[str, RoomSent] = dict(since.rooms) if since is not None else {}
        previously = {r: sent[r].events_position for r in configs if r in sent}
        quiet: set[str] = set()
        if previously:
            busy = await self._store.rooms_with_events(previously, min(previously.values()), upto.events)
            quiet = set(previously) - busy
        ctx = RoomContext(user_id, upto.events, since_events, str(upto), now_ms(), frozenset(quiet))
        gate = asyncio.Semaphore(ROOMS_AT_ONCE)

        async def build(room_id: str, config: RoomConfig) -> tuple[dict[str, Any] | None, RoomSent]:
            room_counts = counts.get(room_id)
            async with gate:
                return await self._rooms.build(
                    ctx,
                    listed[room_id],
                    config,
                    sent.get(room_id),
                    room_counts.total() if room_counts is not None else Counts(),
                    member_counts.get(room_id, (0, 0)),
                    room_id in dm_rooms,
                )

        # The rooms are read-only work, each its own handful of queries: several at once, so one room's
        # wait on the database overlaps another's (a PostgreSQL pool serves them in parallel).
        built = await asyncio.gather(*(build(r, c) for r, c in configs.items()))
        rooms: dict[str, Any] = {}
        for room_id, (room, now_sent) in zip(configs, built, strict=True):
            sent[room_id] = now_sent
            if room is not None:
                rooms[room_id] = room

        ext_rooms = ExtensionRooms(by_list, subscribed)
        all_joined = [r.room_id for r in rows if r.membership == "join"]
        extensions = await self._extensions.collect(
            request,
            user_id,
            device_id,
            since.token if since is not None else None,
            upto,
            ext_rooms,
            all_joined,
        )
        body: dict[str, Any] = {"lists": lists, "rooms": rooms, "extensions": extensions}
        return SlidingResult(body, Position(upto, sent), bool(rooms) or has_news(extensions))

    async def _facts(self, entries: list[RoomEntry]) -> dict[str, RoomFacts]:
        state = await self._store.current_state_of_types(
            [e.room_id for e in entries], [CREATE[0], ENCRYPTION[0]]
        )
        out: dict[str, RoomFacts] = {}
        for entry in entries:
            keys = state.get(entry.room_id, {})
            if CREATE not in keys and entry.membership in ("invite", "knock"):
                # A room this server is not in: what the invite carried.
                out[entry.room_id] = stripped_facts(await invite_state(self._storage, entry))
                continue
            create = await self._storage.events.get_event(keys[CREATE]) if CREATE in keys else None
            out[entry.room_id] = state_facts(
                create.content if create is not None else None, ENCRYPTION in keys
            )
        return out

    async def _space_children(
        self, filters: ListFilters, listed: dict[str, RoomEntry]
    ) -> Collection[str] | None:
        """The rooms named by valid ``m.space.child`` events of the filter's spaces the user is joined to
        (subspaces are not followed, as MSC4186 says)."""
        if filters.spaces is None:
            return None
        spaces = [s for s in filters.spaces if s in listed and listed[s].membership == "join"]
        children: set[str] = set()
        state = await self._store.current_state_of_types(spaces, [SPACE_CHILD])
        for keys in state.values():
            events = await self._storage.events.get_events(keys.values())
            for (_, child), event_id in keys.items():
                event = events.get(event_id)
                if event is not None and valid_space_child(event.content):
                    children.add(child)
        return children

    async def _tags(self, user_id: str, room_id: str, filters: ListFilters) -> Collection[str]:
        if filters.tags is None and filters.not_tags is None:
            return ()
        content = await self._storage.account_data.get_room(user_id, room_id, "m.tag")
        tags = content.get("tags") if content else None
        return list(tags) if isinstance(tags, dict) else ()


def _config(params: RoomParams, user_id: str) -> RoomConfig:
    return RoomConfig(RequiredState.parse(params.required_state, user_id), params.timeline_limit)


def _needs_facts(request: SlidingRequest) -> bool:
    return any(
        p.filters.is_encrypted is not None
        or p.filters.room_types is not None
        or p.filters.not_room_types is not None
        for p in request.lists.values()
    )
