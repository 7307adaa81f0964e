"""Reading a room's history: /messages (both directions) and /context (CS "Getting events for a room").

Tokens: ``t<depth>_<stream>`` are topological positions (what /messages and prev_batch hand out);
``s<stream>`` are /sync positions, accepted as a starting point too (converted to the topological position
of the room's last event at or before that stream position).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, Protocol

from aiohttp import web

from ..clock import now_ms
from ..protocol.events import Pdu
from ..protocol.visibility import HistoryVisibility
from ..rooms.visibility import HistoryVisibilityFilter, VisibilityStorage
from ..storage.interfaces import TopoToken
from ..storage.protocols.composite import HasRooms, HasState, HasStream
from .account_data import forgotten_event
from .auth import Authenticator
from .bundled import BundledAggregations, BundledStorage
from .errors import forbidden, invalid_param, not_found
from .event_format import format_client_event
from .filters import parse_filter, room_event_filter
from .http_util import query_int
from .relations import RelationHandlers, RelationsStorage

PREFIXES = ("/_matrix/client/v3", "/_matrix/client/r0")
MAX_LIMIT = 1000
# Backfill requests one backwards /messages may make before answering with what it has.
MAX_BACKFILL_ROUNDS = 3
# Further pages one /messages reads when history visibility hid events of the first one, before it answers
# with fewer events than asked for (and a token to go on from).
MAX_HIDDEN_PAGES = 5

# (room id, how many events are wanted, the backward extremities to fetch before or None for all of them)
# -> whether older events were added (rooms.backfill.Backfiller)
Backfill = Callable[[str, int, Sequence[str] | None], Awaitable[bool]]


# Tokens as this server writes them: ASCII digits (int() would also take "+1", " 1", "1_0" or other
# scripts' digits), each part within the 64-bit integers storage compares them with.
_SYNC_TOKEN = re.compile(r"s([0-9]{1,18})(?:_[0-9]{1,18}){0,7}")
_TOPO_TOKEN = re.compile(r"t[0-9]{1,19}_-?[0-9]{1,18}")


class MessagesStorage(
    BundledStorage, RelationsStorage, VisibilityStorage, HasRooms, HasState, HasStream, Protocol
):
    """What client_api/messages.py asks of storage."""


def parse_sync_token(token: str) -> int:
    """The event stream position of a /sync token ``s<stream>[_...]``."""
    match = _SYNC_TOKEN.fullmatch(token)
    if match is None:
        raise ValueError(token)
    return int(match[1])


class MessageHandlers:
    def __init__(
        self,
        storage: MessagesStorage,
        authenticator: Authenticator,
        backfill: Backfill | None = None,
        visibility: HistoryVisibilityFilter | None = None,
    ) -> None:
        self._storage = storage
        self._auth = authenticator
        self._backfill = backfill
        self._visibility = visibility or HistoryVisibilityFilter(storage)
        # CS "Aggregations of child events": /messages and /context bundle them.
        self.bundled = BundledAggregations(storage, self._visibility)
        # /relations and /threads read history the same way (membership, tokens): served alongside.
        self.relations = RelationHandlers(storage, authenticator, self, self.bundled, self._visibility)

    def routes(self) -> list[web.RouteDef]:
        r: list[web.RouteDef] = []
        for p in PREFIXES:
            r += [
                web.get(p + "/rooms/{room}/messages", self.messages),
                web.get(p + "/rooms/{room}/context/{event}", self.context),
            ]
        return r + self.relations.routes()

    async def check_reader(self, room_id: str, user_id: str) -> None:
        """Raise unless ``user_id`` may read the room's history at all (for /relations and /threads)."""
        await self._check_member(room_id, user_id)

    async def topological_token(self, room_id: str, token: str) -> TopoToken:
        """A /messages or /sync token as a topological position (400 for anything else)."""
        return await self._to_topo(room_id, token)

    async def _check_member(self, room_id: str, user_id: str) -> None:
        if await self._storage.rooms.get_room_version(room_id) is None:
            raise forbidden(f"You are not in room {room_id}")
        membership = await self._storage.state.get_membership(room_id, user_id)
        # Members and former members may read, and anyone may read a world_readable room (CS "Room
        # Previews"); which events each sees is then up to history visibility, event by event.
        if membership is None or membership[0] not in ("join", "leave", "ban"):
            if await self._visibility.current_visibility(room_id) is not HistoryVisibility.WORLD_READABLE:
                raise forbidden(f"You are not a member of room {room_id}")
            return
        # CS "POST /rooms/{roomId}/forget": after forgetting, "a user will no longer be able to retrieve
        # history for this room" (until a new membership replaces the forgotten one).
        forgotten = membership[0] != "join" and await forgotten_event(self._storage, user_id, room_id)
        if forgotten == membership[1]:
            raise forbidden(f"You have forgotten room {room_id}")

    async def _to_topo(self, room_id: str, token: str) -> TopoToken:
        try:
            if token.startswith("t"):
                topo = TopoToken.parse(token) if _TOPO_TOKEN.fullmatch(token) else None
                if topo is None or topo.depth >= 2**63:
                    raise ValueError(token)
                return topo
            stream = parse_sync_token(token)
        except ValueError:
            raise invalid_param(f"invalid pagination token {token!r}") from None
        last = await self._storage.stream.get_recent_events(room_id, 1, before_stream=stream + 1)
        if not last:
            return TopoToken(0, 0)
        meta = await self._storage.events.get_event_meta(last[0].event_id)
        return meta.topo if meta is not None else TopoToken(0, 0)

    async def messages(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        room_id = request.match_info["room"]
        await self._check_member(room_id, requester.user_id)
        raw_dir = request.query.get("dir", "b")
        if raw_dir not in ("b", "f"):
            raise invalid_param("dir must be 'b' or 'f'")
        direction: Literal["b", "f"] = "b" if raw_dir == "b" else "f"
        limit = query_int(request, "limit", 10, 0, MAX_LIMIT)
        from_raw = request.query.get("from")
        from_token = await self._to_topo(room_id, from_raw) if from_raw else None
        to_raw = request.query.get("to")
        to_token = await self._to_topo(room_id, to_raw) if to_raw else None
        types = None
        filter_raw = request.query.get("filter")
        room_filter = parse_filter(filter_raw, room_event_filter) if filter_raw else {}
        if room_filter.get("types") is not None:
            types = list(room_filter["types"])
        events, next_token = await self._storage.stream.paginate(room_id, from_token, direction, limit, types)
        if direction == "b":
            events, next_token = await self._backfilled(room_id, from_token, limit, types, events, next_token)
        elif events and self._backfill is not None:
            events, next_token = await self._forward_filled(
                room_id, from_token, limit, types, events, next_token
            )
        if to_token is not None:
            kept = []
            for pdu in events:
                meta = await self._storage.events.get_event_meta(pdu.event_id)
                if meta is None:
                    continue
                if (direction == "b" and meta.topo <= to_token) or (
                    direction == "f" and meta.topo > to_token
                ):
                    next_token = None
                    break
                kept.append(pdu)
            events = kept
        events, next_token = await self._visible(
            room_id, requester.user_id, events, next_token, direction, limit, types, to_token
        )
        now = now_ms()
        start = from_raw or (str(from_token) if from_token else None)
        if start is None:
            position = self._storage.stream.current_position()
            start = f"s{position}"
        chunk = await self.bundled.serialize(room_id, requester.user_id, events, now)
        body: dict[str, Any] = {"chunk": chunk, "start": start}
        if next_token is not None:
            body["end"] = str(next_token)
        state_ids = set()
        if request.query.get("lazy_load_members") or room_filter.get("lazy_load_members"):
            state_ids = {e.sender for e in events}
        if state_ids:
            body["state"] = []
            for user in sorted(state_ids):
                member = await self._storage.state.get_current_state_event(room_id, "m.room.member", user)
                if member is not None:
                    body["state"].append(format_client_event(member, now))
        return web.json_response(body)

    async def _backfilled(
        self,
        room_id: str,
        from_token: TopoToken | None,
        limit: int,
        types: list[str] | None,
        events: list[Pdu],
        next_token: TopoToken | None,
    ) -> tuple[list[Pdu], TopoToken | None]:
        """A page read backwards from ``from_token``, completed first from other servers where it lacks
        events (S2S "Backfilling and retrieving missing events"): a short page reached the start of what
        we hold (history from before our server joined), and a page that crosses a hole in the middle of
        the timeline (events we know exist but could not fetch yet) is filled before it is answered."""
        for _ in range(MAX_BACKFILL_ROUNDS):
            if self._backfill is None:
                break
            holes = await self._holes(room_id, from_token, events, next_token, limit)
            if holes is None or not await self._backfill(room_id, limit, holes or None):
                break
            events, next_token = await self._storage.stream.paginate(room_id, from_token, "b", limit, types)
        return events, next_token

    async def _forward_filled(
        self,
        room_id: str,
        from_token: TopoToken | None,
        limit: int,
        types: list[str] | None,
        events: list[Pdu],
        next_token: TopoToken | None,
    ) -> tuple[list[Pdu], TopoToken | None]:
        """A page read forwards that passes a hole (the events before one of its events are missing) is
        completed first, like a backwards one."""
        assert self._backfill is not None
        for _ in range(MAX_BACKFILL_ROUNDS):
            gaps = await self._storage.events.get_timeline_gaps(room_id)
            top = next_token if len(events) >= limit else None  # a short page reached the newest event
            inside = [
                (position, event_id)
                for event_id, position in gaps.items()
                if (from_token is None or from_token < position) and (top is None or position <= top)
            ]
            if not inside or not await self._backfill(room_id, limit, [e for _, e in sorted(inside)]):
                break
            events, next_token = await self._storage.stream.paginate(room_id, from_token, "f", limit, types)
        return events, next_token

    async def _holes(
        self,
        room_id: str,
        from_token: TopoToken | None,
        events: list[Pdu],
        next_token: TopoToken | None,
        limit: int,
    ) -> list[str] | None:
        """What a backwards page read from ``from_token`` lacks: the holes inside it (the backward
        extremities whose missing events sort between the page's oldest event and ``from_token``), nearest
        first; else [] if the page is short (fetch before every backward extremity); else None."""
        short = len(events) < limit or next_token is None
        gaps = await self._storage.events.get_timeline_gaps(room_id)
        # The page's oldest event; a hole's events sort just before the earliest event citing them.
        bottom = None if short or next_token is None else TopoToken(next_token.depth, next_token.stream + 1)
        inside = [
            (position, event_id)
            for event_id, position in gaps.items()
            if (bottom is None or bottom <= position)
            and (from_token is None or position.depth <= from_token.depth + 1)
        ]
        if inside:
            return [event_id for _, event_id in sorted(inside, reverse=True)]
        return [] if short else None

    async def _visible(
        self,
        room_id: str,
        user_id: str,
        events: list[Pdu],
        next_token: TopoToken | None,
        direction: Literal["b", "f"],
        limit: int,
        types: list[str] | None,
        to_token: TopoToken | None,
    ) -> tuple[list[Pdu], TopoToken | None]:
        """The events of a page that the user may see (CS "Room History Visibility"), and the token to go on
        from. The token still advances past hidden events, so paging on never returns to them; while hiding
        left the page short, the following pages are read too (a few, then a short page is answered)."""
        visible = await self._visibility.filter_for_user(room_id, user_id, events)
        hidden = len(visible) < len(events)
        pages = 0
        # With ``to`` the clipping above would have to be repeated per page: a short page does there.
        while hidden and to_token is None and next_token is not None and len(visible) < limit:
            pages += 1
            if pages > MAX_HIDDEN_PAGES:
                break
            more, token = await self._storage.stream.paginate(
                room_id, next_token, direction, limit - len(visible), types
            )
            if not more:
                return visible, None
            shown = await self._visibility.filter_for_user(room_id, user_id, more)
            hidden = len(shown) < len(more)
            visible += shown
            next_token = token
        return visible, next_token

    async def context(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        room_id = request.match_info["room"]
        await self._check_member(room_id, requester.user_id)
        event_id = request.match_info["event"]
        pdu = await self._storage.events.get_event(event_id)
        meta = await self._storage.events.get_event_meta(event_id)
        if pdu is None or meta is None or pdu.room_id != room_id or meta.outlier or meta.soft_failed:
            raise not_found("Event not found")
        if not await self._visibility.user_may_see(room_id, requester.user_id, pdu):
            raise not_found("Event not found")  # as if unknown: whether it exists is not theirs to learn
        limit = query_int(request, "limit", 10, 0, 100)
        before_n = limit // 2
        after_n = limit - before_n
        just_before = meta.topo_before
        before, before_token = await self._storage.stream.paginate(room_id, just_before, "b", before_n)
        if before_n:
            # The events before may cross a hole (or reach the start of what we hold): filled first.
            before, before_token = await self._backfilled(
                room_id, just_before, before_n, None, before, before_token
            )
        after, after_token = await self._storage.stream.paginate(room_id, meta.topo, "f", after_n)
        # Tokens stay those of the whole pages, so paging on from them skips past what was hidden.
        before = await self._visibility.filter_for_user(room_id, requester.user_id, before)
        after = await self._visibility.filter_for_user(room_id, requester.user_id, after)
        now = now_ms()
        state_ids = await self._storage.state.get_state_ids_after(event_id)
        state_events = await self._storage.events.get_events(list(state_ids.values()))
        served = await self.bundled.serialize(room_id, requester.user_id, [pdu, *before, *after], now)
        return web.json_response(
            {
                "event": served[0],
                "events_before": served[1 : 1 + len(before)],
                "events_after": served[1 + len(before) :],
                "start": str(before_token or just_before),
                "end": str(after_token or meta.topo),
                "state": [format_client_event(e, now) for e in state_events.values()],
            }
        )
