"""The deprecated read endpoints still in the spec and still called by older clients and bots (CS
"Legacy /events and /initialSync", "Room initial sync", and "GET /events/{eventId}"), plus
``GET /mutual_rooms`` (v1.x, CS "Mutual rooms").

They are served from the same storage and history-visibility rules as /sync and /messages:

* ``GET /rooms/{roomId}/initialSync``: the room's state (current for members and world-readable rooms,
  as of the leave for former members), its latest messages with pagination tokens /messages accepts,
  the directory visibility and the user's room account data;
* ``GET /initialSync``: the same for every room of the user (left ones with ``archived=true``), with
  the invite event for pending invites, the user's global account data and the presence of the users
  sharing a room with them;
* ``GET /events``: the event stream from a /sync position (``s<stream>`` tokens), waiting up to
  ``timeout`` for something new; ``room_id`` peeks into a world-readable room (CS "Peeking");
* ``GET /events/{eventId}``: one event, when the user may see it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from aiohttp import web

from ..clock import now_ms
from ..presence.state import OFFLINE, UserPresence, client_event
from ..protocol.events import Pdu
from ..protocol.visibility import HistoryVisibility
from ..rooms.visibility import HistoryVisibilityFilter
from ..storage.interfaces import TopoToken
from ..storage.protocols.composite import (
    HasAccountData,
    HasDirectory,
    HasEvents,
    HasRooms,
    HasState,
    HasStream,
)
from .account_data import client_account_data
from .auth import Authenticator
from .errors import forbidden, invalid_param, missing_param, not_found
from .event_format import format_client_event
from .http_util import query_int
from .messages import parse_sync_token

PREFIXES = ("/_matrix/client/v3", "/_matrix/client/r0")
MAX_LIMIT = 100
MAX_TIMEOUT_MS = 60_000
MUTUAL_ROOMS_BATCH = 100
# Presence of at most this many room-mates in /initialSync (the rest arrives through /sync anyway).
MAX_PRESENCE = 500

# user ids -> their m.presence events (``presence.state.client_event``), for /initialSync.
PresenceEvents = Callable[[Iterable[str]], Awaitable[list[dict[str, Any]]]]


class LegacyStorage(HasRooms, HasEvents, HasState, HasStream, HasAccountData, HasDirectory, Protocol):
    """What client_api/legacy.py asks of storage."""


class PresenceReader(Protocol):
    """What /initialSync needs of ``presence.service.PresenceService``."""

    async def get_state(self, user_id: str) -> UserPresence: ...


def presence_events_of(service: PresenceReader) -> PresenceEvents:
    """The m.presence events of the users whose presence is known (an offline user never seen active
    has nothing to tell)."""

    async def read(user_ids: Iterable[str]) -> list[dict[str, Any]]:
        now = now_ms()
        out = []
        for user_id in user_ids:
            state = await service.get_state(user_id)
            if state.state != OFFLINE or state.last_active_ts:
                out.append(client_event(state, now))
        return out

    return read


class LegacyHandlers:
    def __init__(
        self,
        storage: LegacyStorage,
        authenticator: Authenticator,
        visibility: HistoryVisibilityFilter,
        presence_events: PresenceEvents | None = None,
    ) -> None:
        self._storage = storage
        self._auth = authenticator
        self._visibility = visibility
        # Set by app.py when presence is wired (ranvier.presence); without it /initialSync has none to give.
        self.presence_events = presence_events

    def routes(self) -> list[web.RouteDef]:
        r = [web.get("/_matrix/client/v1/mutual_rooms", self.mutual_rooms)]
        for p in PREFIXES:
            r += [
                web.get(p + "/rooms/{room}/initialSync", self.room_initial_sync),
                web.get(p + "/initialSync", self.initial_sync),
                web.get(p + "/events", self.events),
                web.get(p + "/events/{event_id}", self.event),
            ]
        return r

    # -- one room ------------------------------------------------------------------------------------

    async def _room_info(self, room_id: str, user_id: str, limit: int) -> dict[str, Any] | None:
        """The RoomInfo of /initialSync for ``room_id``, or None when the user may not read it."""
        now = now_ms()
        membership = await self._storage.state.get_membership(room_id, user_id)
        kind = membership[0] if membership is not None else None
        info: dict[str, Any] = {"room_id": room_id}
        if kind is not None:
            info["membership"] = kind
        if kind == "invite":
            invite = await self._storage.events.get_event(membership[1]) if membership else None
            if invite is not None:
                info["invite"] = format_client_event(invite, now)
            return info
        world_readable = (
            await self._visibility.current_visibility(room_id) is HistoryVisibility.WORLD_READABLE
        )
        if kind not in ("join", "leave", "ban") and not world_readable:
            return None
        if kind in ("leave", "ban") and membership is not None:
            # "If the user has left the room this will be the state of the room when they left it."
            state_ids = dict(await self._storage.state.get_state_ids_before(membership[1]))
            state_ids[("m.room.member", user_id)] = membership[1]
            last_event = membership[1]
        else:
            state_ids = dict(await self._storage.state.get_current_state_ids(room_id))
            last_event = None
        state_events = await self._storage.events.get_events(list(state_ids.values()))
        info["state"] = [
            format_client_event(state_events[e], now) for e in state_ids.values() if e in state_events
        ]
        info["messages"] = await self._latest_messages(room_id, user_id, limit, last_event)
        info["visibility"] = await self._storage.directory.get_visibility(room_id)
        room_data = await self._storage.account_data.get_all_for_room(user_id, room_id)
        info["account_data"] = client_account_data(room_data)
        return info

    async def _latest_messages(
        self, room_id: str, user_id: str, limit: int, until_event: str | None
    ) -> dict[str, Any]:
        """The newest ``limit`` events the user may see (up to and including ``until_event`` for a
        former member), oldest first; ``start`` pages back with /messages, ``end`` is where they stop."""
        from_token: TopoToken | None = None
        if until_event is not None:
            meta = await self._storage.events.get_event_meta(until_event)
            from_token = meta.topo if meta is not None else None
        events, next_token = await self._storage.stream.paginate(room_id, from_token, "b", limit)
        visible = await self._visibility.filter_for_user(room_id, user_id, events)
        now = now_ms()
        chunk = [format_client_event(p, now) for p in reversed(visible)]
        end = str(from_token) if from_token is not None else f"s{self._storage.stream.current_position()}"
        body: dict[str, Any] = {"chunk": chunk, "end": end}
        if next_token is not None:
            body["start"] = str(next_token)
        return body

    async def room_initial_sync(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        room_id = request.match_info["room"]
        if await self._storage.rooms.get_room_version(room_id) is None:
            raise forbidden(f"You are not in room {room_id}")
        limit = query_int(request, "limit", 10, 0, MAX_LIMIT)
        info = await self._room_info(room_id, requester.user_id, limit)
        if info is None or info.get("membership") == "invite":
            raise forbidden(f"You are not a member of room {room_id}")
        return web.json_response(info)

    # -- every room ----------------------------------------------------------------------------------

    async def initial_sync(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        limit = query_int(request, "limit", 10, 0, MAX_LIMIT)
        archived = request.query.get("archived", "false") == "true"
        end = f"s{self._storage.stream.current_position()}"
        memberships: dict[str, str] = await self._storage.state.get_rooms_for_user(requester.user_id)
        wanted = ("join", "invite", "leave", "ban") if archived else ("join", "invite")
        rooms = []
        for room_id, kind in sorted(memberships.items()):
            if kind in wanted:
                info = await self._room_info(room_id, requester.user_id, limit)
                if info is not None:
                    rooms.append(info)
        global_data = await self._storage.account_data.get_all_global(requester.user_id)
        presence: list[dict[str, Any]] = []
        if self.presence_events is not None:
            mates: set[str] = set()
            for room_id, kind in memberships.items():
                if kind == "join":
                    mates.update(await self._storage.state.get_joined_users(room_id))
            presence = await self.presence_events(sorted(mates)[:MAX_PRESENCE])
        body = {
            "end": end,
            "rooms": rooms,
            "presence": presence,
            "account_data": client_account_data(global_data),
        }
        return web.json_response(body)

    # -- the event stream ----------------------------------------------------------------------------

    async def events(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        stream = self._storage.stream
        from_raw = request.query.get("from")
        try:
            start = parse_sync_token(from_raw) if from_raw else stream.current_position()
        except ValueError:
            raise invalid_param(f"invalid stream token {from_raw!r}") from None
        timeout_ms = query_int(request, "timeout", 30_000, 0, 2**31)
        peek = request.query.get("room_id")
        if peek is not None:
            room_ids = [peek]
            joined = await self._storage.state.get_membership(peek, requester.user_id)
            readable = await self._visibility.current_visibility(peek) is HistoryVisibility.WORLD_READABLE
            if not readable and (joined is None or joined[0] != "join"):
                raise forbidden(f"You may not peek into {peek}")
        else:
            memberships = await self._storage.state.get_rooms_for_user(requester.user_id)
            room_ids = sorted(r for r, kind in memberships.items() if kind == "join")
        deadline = asyncio.get_running_loop().time() + min(timeout_ms, MAX_TIMEOUT_MS) / 1000
        origin, position = start, start
        while True:
            current = stream.current_position()
            upto, by_room = await self._window(room_ids, position, current)
            chunk: list[tuple[int, Pdu]] = []
            for room_id, pdus in sorted(by_room.items()):
                visible = {
                    p.event_id
                    for p in await self._visibility.filter_for_user(room_id, requester.user_id, pdus)
                }
                for pdu in pdus:
                    if pdu.event_id in visible:
                        meta = await self._storage.events.get_event_meta(pdu.event_id)
                        chunk.append((meta.stream_ordering if meta is not None else 0, pdu))
            chunk.sort(key=lambda item: item[0])
            # Nothing the user may see up to ``upto``: go on from there (at once when a narrowed window
            # left newer events to read, else once something new is stored or the timeout ends).
            position = max(position, upto)
            remaining = deadline - asyncio.get_running_loop().time()
            if chunk or remaining <= 0:
                break
            if position < current:
                continue
            await stream.wait_for_new(position, remaining)
        now = now_ms()
        return web.json_response(
            {
                "chunk": [format_client_event(p, now) for _, p in chunk],
                "start": f"s{origin}",
                "end": f"s{position}",
            }
        )

    async def _window(self, room_ids: list[str], start: int, upto: int) -> tuple[int, dict[str, list[Pdu]]]:
        """Every event of ``room_ids`` after ``start``, up to a stream position chosen so that at most
        MAX_LIMIT come back: the window is halved until no room had more (the storage read keeps each
        room's newest MAX_LIMIT, which would otherwise leave a hole). (window end, room id -> events)."""
        while upto > start:
            by_room = await self._storage.stream.get_room_events_between(room_ids, start, upto, MAX_LIMIT)
            total = sum(len(pdus) for pdus in by_room.values())
            fits = total <= MAX_LIMIT and all(len(pdus) < MAX_LIMIT for pdus in by_room.values())
            if fits or upto - start == 1:
                return upto, by_room
            upto = start + (upto - start) // 2
        return upto, {}

    async def event(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        pdu = await self._storage.events.get_event(request.match_info["event_id"])
        seen = await self._visibility.filter_for_user(pdu.room_id, requester.user_id, [pdu]) if pdu else []
        if not seen:
            raise not_found("Event not found")
        return web.json_response(format_client_event(seen[0], now_ms()))

    # -- mutual rooms ---------------------------------------------------------------------------------

    async def mutual_rooms(self, request: web.Request) -> web.Response:
        """Rooms both users are joined to, in batches of MUTUAL_ROOMS_BATCH ordered by room id; the
        batch token is the last room id of the previous batch."""
        requester = await self._auth.require_user(request)
        other = request.query.get("user_id")
        if not other:
            raise missing_param("Missing 'user_id'")
        if other == requester.user_id:
            raise invalid_param("user_id must be another user")
        mine = await self._storage.state.get_rooms_for_user(requester.user_id)
        theirs = await self._storage.state.get_rooms_for_user(other)
        shared = sorted(r for r, kind in mine.items() if kind == "join" and theirs.get(r) == "join")
        after = request.query.get("from")
        page = [r for r in shared if after is None or r > after][:MUTUAL_ROOMS_BATCH]
        body: dict[str, Any] = {"joined": page, "count": len(shared)}
        if page and page[-1] != shared[-1]:
            body["next_batch"] = page[-1]
        return web.json_response(body)
