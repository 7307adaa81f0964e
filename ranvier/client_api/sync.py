"""GET /sync (CS "Syncing"): full and incremental, with long-polling.

The token is ``s<events>_<account data>_<receipts>_<typing>`` (see sync_extras.py). A room's timeline
is its live events after the token (the last ``limit`` of them); ``state`` is the state at the start of
the timeline when the client could not have it (first sync, newly joined, or a limited timeline), per the
spec's "state is up to the start of timeline". The ``filter`` (sync_filter.py) picks rooms and events;
with ``lazy_load_members`` the state carries only the members the timeline needs (sync_lazy_members.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import nullcontext
from dataclasses import replace
from typing import Any, Protocol

from aiohttp import web

from ..clock import now_ms
from ..logs.tracing import EventOrigins, Tracing
from ..presence.state import STATES as PRESENCE_STATES
from ..presence.sync_section import PresenceSync
from ..protocol.events import Pdu, StateKey
from ..storage.protocols.composite import (
    HasFilters,
    HasPartialState,
    HasPushActions,
    HasState,
    HasStream,
)
from ..storage.sql.push_counts import MAIN_THREAD, Counts, RoomCounts
from ..sync.changes import ChangesStorage
from ..sync.partial_rooms import cited_sender_members
from ..sync.stripped import membership_stripped_state
from ..sync.waiting import wait_any
from .account_data import forgotten_event
from .auth import Authenticator, Requester
from .bundled import BundledAggregations, BundledStorage
from .ephemeral import SyncNotifier, TypingStream
from .errors import MatrixError
from .event_format import format_client_event
from .filters import parse_filter, valid_filter_id
from .http_util import query_int
from .presence import sync_presence_filter
from .sync_extras import SyncExtras, SyncToken
from .sync_filter import EventFilter, SyncFilter, sync_filter
from .sync_lazy_members import DeviceMembers, LazyMembersSent

PREFIXES = ("/_matrix/client/v3", "/_matrix/client/r0")
MAX_TIMEOUT_MS = 60_000
MEMBER = "m.room.member"


class SyncStorage(
    BundledStorage, ChangesStorage, HasState, HasStream, HasFilters, HasPartialState, HasPushActions, Protocol
):
    """What client_api/sync.py asks of storage."""


class SyncHandlers:
    def __init__(
        self,
        storage: SyncStorage,
        authenticator: Authenticator,
        typing: TypingStream | None = None,
        notifier: SyncNotifier | None = None,
        visibility: Any = None,
        e2ee: Any = None,
        presence: PresenceSync | None = None,
    ) -> None:
        self._storage = storage
        # ranvier.presence.sync_section.PresenceSync: the presence section and set_presence.
        self._presence = presence
        # ranvier.devices.sync_section.E2eeSync: to_device, device_lists and the key counts.
        self._e2ee = e2ee
        self._auth = authenticator
        # rooms.visibility.HistoryVisibilityFilter: a timeline may reach back before the user's join
        # (CS "History visibility"), e.g. the first sync after joining a room with "joined" visibility.
        self._visibility = visibility
        # Bundled aggregations on limited timelines (CS "Aggregations of child events": "GET /sync when the
        # relevant section has a limited value of true"); a client aggregates what it sees arrive itself.
        self._bundled = BundledAggregations(storage, visibility) if visibility is not None else None
        self._typing = typing if typing is not None else TypingStream()
        self._notifier = notifier if notifier is not None else SyncNotifier()
        self._extras = SyncExtras(storage, self._typing)
        # Set by the app when tracing: the long-poll wait is a span, and each timeline event this /sync
        # delivers gets a span in its own trace (logs.tracing.EventOrigins).
        self.tracing: Tracing | None = None
        self.origins: EventOrigins | None = None
        # Set by the app: an initial /sync without lazy-loading waits (bounded) for partial-state rooms
        # whose resync is in its first attempt, rather than leave them out (sync/partial_rooms.py).
        self.wait_partial_rooms: Callable[[set[str]], Awaitable[None]] | None = None
        # What lazy-loading /sync sent each device (sync_lazy_members.py): redundant members are skipped.
        self._lazy_sent = LazyMembersSent()

    def routes(self) -> list[web.RouteDef]:
        r: list[web.RouteDef] = []
        for p in PREFIXES:
            r += [
                web.get(p + "/sync", self.sync),
                web.post(p + "/user/{user}/filter", self.create_filter),
                web.get(p + "/user/{user}/filter/{filter_id}", self.get_filter),
            ]
        return r

    async def create_filter(self, request: web.Request) -> web.Response:
        # Stored as given (checked by filters.py); /sync reads what it honours with sync_filter.py.
        requester = await self._auth.require_user(request)
        if request.match_info["user"] != requester.user_id:
            raise MatrixError(403, "M_FORBIDDEN", "Cannot create filters for other users")
        body = await request.read()
        parsed = parse_filter(body if body.strip() else b"{}")
        filter_id = await self._storage.filters.store_filter(requester.user_id, parsed)
        return web.json_response({"filter_id": str(filter_id)})

    async def get_filter(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        filter_id = request.match_info["filter_id"]
        stored = None
        if valid_filter_id(filter_id) and request.match_info["user"] == requester.user_id:
            stored = await self._storage.filters.get_filter(requester.user_id, filter_id)
        if stored is None:
            raise MatrixError(404, "M_NOT_FOUND", "No such filter")
        return web.json_response(stored)

    async def _sync_filter(self, requester: Requester, raw_filter: str | None) -> SyncFilter:
        """The filter's /sync options (sync_filter.py); none given, or an unknown id, leaves the defaults."""
        if not raw_filter:
            return SyncFilter()
        parsed: Any
        if valid_filter_id(raw_filter):
            parsed = await self._storage.filters.get_filter(requester.user_id, raw_filter)
        else:
            parsed = parse_filter(raw_filter)  # CS "/sync": "the filter ID, or a JSON-encoded filter"
        return sync_filter(parsed)

    async def sync(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        since_raw = request.query.get("since")
        since: SyncToken | None = None
        if since_raw:
            try:
                since = SyncToken.parse(since_raw)
            except ValueError:
                raise MatrixError(400, "M_INVALID_PARAM", f"invalid since token {since_raw!r}") from None
        timeout_ms = query_int(request, "timeout", 0, 0, MAX_TIMEOUT_MS)
        full_state = request.query.get("full_state") == "true"
        options = await self._sync_filter(requester, request.query.get("filter"))
        set_presence = request.query.get("set_presence")
        if set_presence is not None and set_presence not in PRESENCE_STATES:
            raise MatrixError(400, "M_INVALID_PARAM", "set_presence must be online, offline or unavailable")
        if self._presence is None:
            return await self._poll(requester, request, since, timeout_ms, full_state, options)
        async with self._presence.syncing(requester.user_id, requester.device_id, set_presence):
            return await self._poll(requester, request, since, timeout_ms, full_state, options)

    async def _poll(
        self,
        requester: Requester,
        request: web.Request,
        since: SyncToken | None,
        timeout_ms: int,
        full_state: bool,
        options: SyncFilter,
    ) -> web.Response:
        presence_filter = await sync_presence_filter(
            self._storage, requester.user_id, request.query.get("filter")
        )
        stream = self._storage.stream
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000
        while True:
            ticket = self._notifier.ticket()  # before reading positions: see SyncNotifier
            upto = await self._extras.position(stream.current_position())
            presence_events: list[dict[str, Any]] = []
            if self._presence is not None:
                upto = replace(upto, presence=await self._presence.position())
                presence_events = await self._presence.collect(
                    requester.user_id, since.presence if since else None, upto.presence, presence_filter
                )
            body = await self._build(requester, since, upto, full_state, options)
            if self._presence is not None and since is not None:
                presence_events = await self._presence.with_new_members(
                    requester.user_id, body, presence_events, presence_filter
                )
            body["presence"] = {"events": presence_events}
            remaining = deadline - loop.time()
            if since is None or full_state or remaining <= 0 or _has_news(body) or presence_events:
                if self.origins is not None:
                    self.origins.mark_delivered(_timeline_event_ids(body), requester.user_id)
                return web.json_response(body)
            # Long-poll: nothing for this user yet. Wait for the event stream, account data, receipts or
            # typing to move (or for a typist to time out), then look again.
            expiry = self._typing.seconds_to_next_expiry()
            if expiry is not None:
                remaining = min(remaining, expiry + 0.01)
            with self.tracing.internal_span("sync wait") if self.tracing else nullcontext():
                await wait_any(stream.wait_for_new(upto.events, remaining), ticket.wait(), remaining)

    async def _build(
        self,
        requester: Requester,
        since_token: SyncToken | None,
        upto: SyncToken,
        full_state: bool,
        options: SyncFilter,
    ) -> dict[str, Any]:
        since = since_token.events if since_token is not None else None
        limit = options.limit
        lazy = options.lazy_members
        position = upto.events
        # The device's lazy-loading record; an initial sync starts it afresh (the client holds nothing).
        sent = (
            self._lazy_sent.device(requester.user_id, requester.device_id, since, position)
            if lazy and not options.include_redundant_members
            else None
        )
        user_id = requester.user_id
        memberships = await self._storage.state.get_rooms_for_user(user_id)
        # CS RoomFilter "rooms"/"not_rooms": the rooms left out appear in no section.
        memberships = {r: m for r, m in memberships.items() if options.room_allowed(r)}
        now = now_ms()
        join: dict[str, Any] = {}
        invite: dict[str, Any] = {}
        leave: dict[str, Any] = {}
        knock: dict[str, Any] = {}
        joined_rooms = [r for r, m in memberships.items() if m == "join"]
        extras = await self._extras.collect(user_id, joined_rooms, since_token, upto)
        e2ee: dict[str, Any] = {}
        if self._e2ee is not None:
            section = await self._e2ee.collect(user_id, requester.device_id, since_token, upto)
            e2ee = section.body
            upto = replace(upto, to_device=section.to_device_position)
        # CS "Receiving notifications": the push actions after the user's read receipts.
        counts = await self._storage.push_actions.unread_counts(user_id, joined_rooms)
        # Rooms joined with partial state (MSC3706; see sync/partial_rooms.py): left out without lazy-
        # loading until complete; once complete, sent as newly joined (with the full state).
        partial = await self._storage.partial_state.partial_among(joined_rooms)
        if partial and not lazy and since is None and self.wait_partial_rooms is not None:
            await self.wait_partial_rooms(partial)
            partial = await self._storage.partial_state.partial_among(joined_rooms)
            position = max(position, self._storage.stream.current_position())
            upto = replace(upto, events=position)
        completed: set[str] = set()
        if since is not None and joined_rooms:
            completed = await self._storage.partial_state.completed_between(joined_rooms, since, position)
        # Rooms whose partial-state resync found the user's join rejected against the full state (the
        # resident lied, or the user had been banned): left at the completion, whatever the position of
        # the membership the full state holds (an outlier the resync fetched), or without one.
        left_at_completion: set[str] = set()
        if since is not None:
            left_at_completion = await self._storage.partial_state.left_at_completion(
                user_id, since, position
            )
        new_events: dict[str, list[Pdu]] = {}
        if since is not None and joined_rooms:
            new_events = await self._storage.stream.get_room_events_between(
                joined_rooms, since, position, limit + 1
            )
        for room_id, membership in sorted(memberships.items()):
            if membership == "join":
                if room_id in partial and not lazy:
                    continue
                room_since = None if room_id in completed else since
                if room_since is None or full_state:
                    timeline = await self._storage.stream.get_recent_events(
                        room_id, limit + 1, before_stream=position + 1
                    )
                else:
                    timeline = new_events.get(room_id, [])
                    if not timeline and room_id not in extras.rooms():
                        continue
                room = await self._joined_room(
                    room_id,
                    user_id,
                    timeline,
                    limit,
                    room_since,
                    full_state,
                    now,
                    room_id in partial,
                    lazy,
                    sent,
                    options,
                )
                ephemeral = options.ephemeral.apply(extras.ephemeral.get(room_id, []))
                account_data = options.room_account_data.apply(extras.room_account_data.get(room_id, []))
                if (
                    room_since is not None
                    and not full_state
                    and options.timeline != EventFilter()
                    and not room["timeline"]["events"]
                    and not room["state"]["events"]
                    and not ephemeral
                    and not account_data
                ):
                    continue  # the filter left nothing of the room's news
                room["ephemeral"]["events"] = ephemeral
                room["account_data"]["events"] = account_data
                room.update(unread_counts(counts.get(room_id), options.thread_counts))
                join[room_id] = room
            elif membership == "invite":
                member = await self._storage.state.get_membership(room_id, user_id)
                if member is None:
                    continue
                meta = await self._storage.events.get_event_meta(member[1])
                if since is not None and meta is not None and meta.stream_ordering <= since:
                    continue
                invite[room_id] = {"invite_state": {"events": await self._invite_state(room_id, member[1])}}
            elif membership == "knock":
                # CS "Knocking on rooms": the room as the knocker saw it (the send_knock answer's state).
                member = await self._storage.state.get_membership(room_id, user_id)
                if member is None:
                    continue
                meta = await self._storage.events.get_event_meta(member[1])
                if since is not None and meta is not None and meta.stream_ordering <= since:
                    continue
                events = await self._invite_state(room_id, member[1], "knock_room_state")
                knock[room_id] = {"knock_state": {"events": events}}
            elif membership in ("leave", "ban") and (since is not None or options.include_leave):
                # An incremental sync tells of rooms left since; an initial one, with the filter's
                # ``include_leave``, of every room left (and not forgotten) too.
                member = await self._storage.state.get_membership(room_id, user_id)
                if member is None:
                    continue
                meta = await self._storage.events.get_event_meta(member[1])
                if meta is None or meta.stream_ordering > position:
                    continue
                if since is not None and meta.stream_ordering <= since and room_id not in left_at_completion:
                    continue
                if await forgotten_event(self._storage, user_id, room_id) == member[1]:
                    continue  # the user forgot the room after leaving it (POST /forget)
                event = await self._storage.events.get_event(member[1])
                leave[room_id] = {
                    "timeline": {
                        "events": [format_client_event(event, now)]
                        if event and options.timeline.allows(event.type, event.sender, event.content)
                        else [],
                        "limited": False,
                    },
                    "state": {"events": []},
                    "account_data": {"events": []},
                }
        for room_id in sorted(left_at_completion - memberships.keys()):
            if options.room_allowed(room_id):  # the full state has no membership of the user at all
                leave[room_id] = {
                    "timeline": {"events": [], "limited": False},
                    "state": {"events": []},
                    "account_data": {"events": []},
                }
        return {
            "next_batch": str(upto),
            "rooms": {"join": join, "invite": invite, "leave": leave, "knock": knock},
            "presence": {"events": []},
            "account_data": {"events": options.account_data.apply(extras.account_data)},
            "to_device": {"events": []},
            "device_lists": {"changed": [], "left": []},
            "device_one_time_keys_count": {},
            **e2ee,
        }

    async def _joined_room(
        self,
        room_id: str,
        user_id: str,
        timeline: list[Pdu],
        limit: int,
        since: int | None,
        full_state: bool,
        now: int,
        partial: bool = False,
        lazy: bool = False,
        sent: DeviceMembers | None = None,
        filters: SyncFilter | None = None,
    ) -> dict[str, Any]:
        limited = len(timeline) > limit
        if limited:
            timeline = timeline[-limit:]
        breaks = (
            await self._storage.events.get_timeline_breaks(room_id, [e.event_id for e in timeline])
            if timeline
            else set()
        )
        if breaks:
            # An event of the window follows a hole: events missing still, or filled in by backfill since
            # (those never reach /sync). The timeline starts at the last such event and is limited, so the
            # client pages back from prev_batch, which reads the hole (/messages fills what is still
            # missing before answering) and then what the window held before it, instead of taking the
            # timeline as gapless.
            timeline = timeline[max(i for i, e in enumerate(timeline) if e.event_id in breaks) :]
            limited = True
        # The client needs the state at the start of the timeline when it has none (first sync or a
        # new join) or has missed events (limited); otherwise the timeline's state events suffice.
        newly_joined = any(
            e.type == "m.room.member" and e.state_key == user_id and e.membership == "join" for e in timeline
        )
        # The filter's timeline section (CS "Filtering") picks events of the window; limited and
        # prev_batch stay those of the whole window, so the client pages back from the right place.
        shown = timeline
        if filters is not None and filters.timeline != EventFilter():
            shown = [e for e in timeline if filters.timeline.allows(e.type, e.sender, e.content)]
        state_events: list[Pdu] = []
        state_ids: dict[StateKey, str] | None = None
        if since is None or full_state or limited or newly_joined:
            if timeline:
                state_ids = await self._storage.state.get_state_ids_before(timeline[0].event_id)
            else:
                state_ids = await self._storage.state.get_current_state_ids(room_id)
            in_timeline = {e.event_id for e in timeline}
            # Lazy-loading: only the members that may be sent are read (a big room has many).
            wanted = {e.sender for e in shown} | {user_id} if lazy else None
            loaded = await self._storage.events.get_events(
                [
                    e
                    for (event_type, state_key), e in state_ids.items()
                    if e not in in_timeline
                    and (wanted is None or event_type != MEMBER or state_key in wanted)
                ]
            )
            state_events = list(loaded.values())
        if lazy:
            state_events = await self._lazy_members(
                room_id, user_id, shown, state_ids, state_events, sent, partial, full_state
            )
        prev_batch = None
        if timeline:
            meta = await self._storage.events.get_event_meta(timeline[0].event_id)
            if meta is not None:
                prev_batch = str(meta.topo_before)
        timeline = shown
        if self._visibility is not None:
            # prev_batch stays the unfiltered position, so /messages continues from the right place.
            timeline = await self._visibility.filter_for_user(room_id, user_id, timeline)
        summary, hero_members = await self._summary(
            room_id, user_id, lazy, sent, state_events, timeline, partial
        )
        state_events += hero_members
        if filters is not None:
            # The state section's filter; its ``limit`` is not applied: a client holding an arbitrary
            # part of the state would take it for the whole.
            state_events = [e for e in state_events if filters.state.allows(e.type, e.sender, e.content)]
        timeline_json: dict[str, Any] = {
            "events": await self._bundled.serialize(room_id, user_id, timeline, now, include_room_id=False)
            if limited and self._bundled is not None
            else [format_client_event(e, now, include_room_id=False) for e in timeline],
            "limited": limited,
        }
        if prev_batch is not None:
            timeline_json["prev_batch"] = prev_batch
        return {
            "timeline": timeline_json,
            "state": {"events": [format_client_event(e, now, include_room_id=False) for e in state_events]},
            "ephemeral": {"events": []},
            "account_data": {"events": []},
            "summary": summary,
        }

    async def _summary(
        self,
        room_id: str,
        user_id: str,
        lazy: bool,
        sent: DeviceMembers | None,
        state_events: list[Pdu],
        timeline: list[Pdu],
        partial: bool = False,
    ) -> tuple[dict[str, Any], list[Pdu]]:
        """CS "Room summary" (``m.joined_member_count``, ``m.invited_member_count``, and ``m.heroes`` when
        the room has neither a name nor a canonical alias), and, when lazy-loading, the heroes' member
        events the client has not got (it names the room from them: they are in no timeline). A room
        joined with partial state holds few members: its joined count is the resident's, as told just
        after the join, moved by the member changes received since (``PartialStateStore``); its heroes
        are those of the send_join answer (the resident sends them when the room has no name)."""
        # Counted and looked up key by key: this runs for every room of every /sync, and reading the
        # members or the whole current state of a big room here made each answer grow with the room.
        joined, invited = await self._storage.state.get_member_counts(room_id)
        if partial:
            joined = await self._storage.partial_state.estimate_joined_count(room_id, joined)
        summary: dict[str, Any] = {"m.joined_member_count": joined, "m.invited_member_count": invited}
        for named_by in ("m.room.name", "m.room.canonical_alias"):
            if await self._storage.state.get_current_state_id(room_id, named_by, "") is not None:
                return summary, []
        heroes = await self._storage.state.get_hero_members(room_id, exclude=user_id)
        summary["m.heroes"] = [hero for hero, _ in heroes]
        if not lazy:
            return summary, []
        known = {e.state_key for e in (*state_events, *timeline) if e.type == MEMBER}
        missing = [
            event_id
            for hero, event_id in heroes
            if hero not in known and (sent is None or sent.sent(room_id, hero) != event_id)
        ]
        loaded = await self._storage.events.get_events(missing)
        found = [loaded[e] for e in missing if e in loaded]
        if sent is not None:
            for event in found:
                if event.state_key is not None:
                    sent.record(room_id, event.state_key, event.event_id)
        return summary, found

    async def _lazy_members(
        self,
        room_id: str,
        user_id: str,
        timeline: list[Pdu],
        state_ids: dict[StateKey, str] | None,
        state_events: list[Pdu],
        sent: DeviceMembers | None,
        partial: bool,
        full_state: bool,
    ) -> list[Pdu]:
        """CS "Lazy-loading room members": of the state at the start of the timeline, the member events
        of the timeline's senders and the user's own (other state as given); members this device was
        already sent (``sent``, None with ``include_redundant_members``) are left out unless
        ``full_state``. Incrementally, with no state otherwise due, the senders' member events not yet
        sent are added."""
        wanted = {e.sender for e in timeline} | {user_id}
        in_timeline = {e.event_id for e in timeline}

        def redundant(member: str, event_id: str) -> bool:
            return sent is not None and not full_state and sent.sent(room_id, member) == event_id

        kept = [
            e
            for e in state_events
            if e.type != MEMBER or (e.state_key in wanted and not redundant(e.state_key, e.event_id))
        ]
        # An incremental, unlimited timeline: the client has the state, but maybe not its senders'
        # members. The state is read only when some sender's member event may be missing.
        if (
            state_ids is None
            and timeline
            and (sent is None or any(sent.sent(room_id, s) is None for s in wanted - {user_id}))
        ):
            state_ids = await self._storage.state.get_state_ids_before(timeline[0].event_id)
            missing = [
                member_id
                for s in wanted - {user_id}
                if (member_id := state_ids.get((MEMBER, s))) is not None
                and member_id not in in_timeline
                and not redundant(s, member_id)
            ]
            loaded = await self._storage.events.get_events(missing)
            kept += [loaded[m] for m in missing if m in loaded]
        if partial and timeline:
            # On partial state: the member events of timeline senders that the state (or, incrementally,
            # the current state) lacks, from the auth events the timeline cites.
            if state_ids is None:
                state_ids = await self._storage.state.get_current_state_ids(room_id)
            cited = await cited_sender_members(self._storage, timeline, state_ids)
            kept += [
                e for e in cited if e.event_id not in in_timeline and not redundant(e.sender, e.event_id)
            ]
        if sent is not None:
            for e in (*kept, *timeline):
                if e.type == MEMBER and e.state_key is not None:
                    sent.record(room_id, e.state_key, e.event_id)
        return kept

    async def _invite_state(
        self, room_id: str, invite_event_id: str, carried_key: str = "invite_room_state"
    ) -> list[dict[str, Any]]:
        return await membership_stripped_state(self._storage, room_id, invite_event_id, carried_key)


def unread_counts(room: RoomCounts | None, by_thread: bool) -> dict[str, Any]:
    """``unread_notifications`` (every thread together, or the main timeline alone when the filter asks
    for ``unread_thread_notifications``, which then holds each thread's counts by root event id)."""
    threads = room.threads if room is not None else {}

    def counts(c: Counts) -> dict[str, int]:
        return {"notification_count": c.notification_count, "highlight_count": c.highlight_count}

    if not by_thread:
        return {"unread_notifications": counts(room.total() if room is not None else Counts())}
    return {
        "unread_notifications": counts(threads.get(MAIN_THREAD, Counts())),
        "unread_thread_notifications": {t: counts(c) for t, c in threads.items() if t != MAIN_THREAD},
    }


def _has_news(body: dict[str, Any]) -> bool:
    rooms = body["rooms"]
    lists = body["device_lists"]
    return bool(
        rooms["join"]
        or rooms["invite"]
        or rooms["leave"]
        or rooms["knock"]
        or body["account_data"]["events"]
        or body["to_device"]["events"]
        or lists["changed"]
        or lists["left"]
    )


def _timeline_event_ids(body: dict[str, Any]) -> list[str]:
    rooms = body.get("rooms", {}).get("join", {})
    return [
        e["event_id"]
        for room in rooms.values()
        for e in room.get("timeline", {}).get("events", [])
        if isinstance(e, dict) and isinstance(e.get("event_id"), str)
    ]
