"""``POST /search``, category ``room_events`` (CS "Server Side Search"): candidates from the full-text index
(``storage.search``), kept to what the user may see, with groups, context, profiles, state and pagination.

History visibility is applied event by event with the same filter /messages uses, so a result is exactly an
event the user could page to. Hidden candidates are skipped and the next page starts after them; a page is
read in a few rounds at most (``MAX_ROUNDS``), then answered short with a token to go on from.

Pagination tokens are opaque to clients: base64url of ``{"o": order, "n": position, "g": [key, value]}``,
the position being an offset in the ranked candidates (``rank``) or the stream ordering below which to go
on (``recent``), and ``g`` the group a group's ``next_batch`` is scoped to (CS "Pagination": "using a token
inside a group will return more results from within that group"). Within a group the ranked order is the
global order restricted to the group, so a group's offset counts that group's candidates only.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from ..protocol.events import Pdu
from ..rooms.visibility import HistoryVisibilityFilter
from ..storage.interfaces import UnknownEvent
from ..storage.protocols.composite import HasAccountData, HasEvents, HasSearch, HasState, HasStream
from ..storage.sql.search import Order, SearchHit, SearchScope
from .terms import SearchQuery, highlights

GROUP_KEYS = ("room_id", "sender")
IGNORED_USERS = "m.ignored_user_list"
MAX_ROUNDS = 8
MAX_TOKEN_LEN = 2048


class RoomEventSearchStorage(HasEvents, HasState, HasStream, HasAccountData, HasSearch, Protocol):
    """What search/room_events.py asks of storage."""


class BadToken(ValueError):
    """A ``next_batch`` this server did not hand out for this kind of request."""


@dataclass(frozen=True, slots=True)
class BatchToken:
    order: Order
    position: int
    group: tuple[str, str] | None = None

    def encode(self) -> str:
        data: dict[str, Any] = {"o": self.order, "n": self.position}
        if self.group is not None:
            data["g"] = list(self.group)
        raw = json.dumps(data, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> BatchToken:
        if len(text) > MAX_TOKEN_LEN:
            raise BadToken("token too long")
        try:
            data = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise BadToken("not a search token") from None
        if not isinstance(data, dict):
            raise BadToken("not a search token")
        order, position, group = data.get("o"), data.get("n"), data.get("g")
        if order not in ("rank", "recent") or not isinstance(position, int) or isinstance(position, bool):
            raise BadToken("not a search token")
        if not -(2**63) < position < 2**63 or (order == "rank" and position < 0):
            raise BadToken("token out of range")
        if group is not None and not (
            isinstance(group, list)
            and len(group) == 2
            and group[0] in GROUP_KEYS
            and isinstance(group[1], str)
            and "\x00" not in group[1]
        ):
            raise BadToken("not a search token")
        return cls(order, position, (group[0], group[1]) if group is not None else None)


@dataclass(frozen=True, slots=True)
class RoomEventsRequest:
    query: SearchQuery
    scope: SearchScope
    order: Order
    limit: int
    contains_url: bool | None = None
    context: tuple[int, int] | None = None  # (before_limit, after_limit) when context was asked for
    include_profile: bool = False
    include_state: bool = False
    group_by: tuple[str, ...] = ()


@dataclass(slots=True)
class EventContext:
    before: list[Pdu]
    after: list[Pdu]
    start: str
    end: str
    profiles: dict[str, dict[str, str]] | None = None


@dataclass(slots=True)
class Result:
    pdu: Pdu
    rank: float
    context: EventContext | None = None


@dataclass(slots=True)
class Group:
    order: int
    results: list[str] = field(default_factory=list)
    next_batch: str | None = None


@dataclass(slots=True)
class RoomEventsAnswer:
    results: list[Result]
    count: int
    highlights: list[str]
    next_batch: str | None
    groups: dict[str, dict[str, Group]] | None = None
    state: dict[str, list[Pdu]] | None = None


class RoomEventSearch:
    def __init__(self, storage: RoomEventSearchStorage, visibility: HistoryVisibilityFilter) -> None:
        self._storage = storage
        self._visibility = visibility

    async def search(
        self,
        user_id: str,
        request: RoomEventsRequest,
        token: BatchToken | None,
        excluded_rooms: Collection[str] = (),
    ) -> RoomEventsAnswer:
        """``excluded_rooms``: rooms whose history the user gave up (forgotten), searched no more."""
        if token is not None and token.order != request.order:
            raise BadToken("the token belongs to a search in another order")
        scope = request.scope
        if excluded_rooms:
            scope = replace(scope, not_rooms=[*scope.not_rooms, *excluded_rooms])
        group = token.group if token is not None else None
        if group is not None:
            scope = (
                replace(scope, room_id=group[1]) if group[0] == "room_id" else replace(scope, sender=group[1])
            )
        start = token.position if token is not None else None
        ignored = await self._ignored_users(user_id)
        found, consumed, position, exhausted = await self._visible(user_id, request, scope, start, ignored)
        count = await self._storage.search.count(user_id, request.query, scope)
        next_batch = None if exhausted else BatchToken(request.order, position, group).encode()
        results = [Result(pdu, hit.rank) for hit, pdu in found]
        if request.context is not None:
            for result in results:
                result.context = await self._context(
                    user_id, result.pdu, *request.context, request.include_profile
                )
        answer = RoomEventsAnswer(
            results=results,
            count=max(count, len(results)),
            highlights=highlights(request.query, [hit.text for hit, _ in found]),
            next_batch=next_batch,
        )
        if request.group_by:
            answer.groups = self._groups(request, found, consumed, start, exhausted, group)
        if request.include_state:
            answer.state = await self._states(user_id, {pdu.room_id for _, pdu in found})
        return answer

    async def _ignored_users(self, user_id: str) -> frozenset[str]:
        """CS "Ignoring Users": events of users in ``m.ignored_user_list`` are never served to the user."""
        content = await self._storage.account_data.get_global(user_id, IGNORED_USERS)
        users = content.get("ignored_users") if isinstance(content, dict) else None
        return frozenset(u for u in users if isinstance(u, str)) if isinstance(users, dict) else frozenset()

    async def _visible(
        self,
        user_id: str,
        request: RoomEventsRequest,
        scope: SearchScope,
        start: int | None,
        ignored: frozenset[str],
    ) -> tuple[list[tuple[SearchHit, Pdu]], list[SearchHit], int, bool]:
        """(visible hits with their events, the candidates consumed, the position after them, whether the
        candidates ran out)."""
        found: list[tuple[SearchHit, Pdu]] = []
        consumed: list[SearchHit] = []
        offset = start if request.order == "rank" and start is not None else 0
        before = start if request.order == "recent" else None
        position = offset if request.order == "rank" else (before if before is not None else 2**62)
        batch_size = max(request.limit * 2, 20)
        for _ in range(MAX_ROUNDS):
            hits = await self._storage.search.search(
                user_id, request.query, scope, request.order, batch_size, offset=offset, before_stream=before
            )
            shown = await self._shown(
                user_id, [h for h in hits if h.sender not in ignored], request.contains_url
            )
            for hit in hits:
                consumed.append(hit)
                offset += 1
                before = hit.stream_ordering
                position = offset if request.order == "rank" else before
                pdu = shown.get(hit.event_id)
                if pdu is not None:
                    found.append((hit, pdu))
                    if len(found) >= request.limit:
                        # Out of candidates only if this was the last of a short read.
                        return found, consumed, position, hit is hits[-1] and len(hits) < batch_size
            if len(hits) < batch_size:
                return found, consumed, position, True
        return found, consumed, position, False

    async def _shown(
        self, user_id: str, hits: Sequence[SearchHit], contains_url: bool | None
    ) -> dict[str, Pdu]:
        """The hits the user may see, as events (served form: redactions applied)."""
        pdus: dict[str, Pdu] = await self._storage.events.get_events([h.event_id for h in hits])
        by_room: dict[str, list[Pdu]] = {}
        for hit in hits:
            pdu = pdus.get(hit.event_id)
            if pdu is None or "redacted_because" in pdu.unsigned:
                continue
            if contains_url is not None and isinstance(pdu.content.get("url"), str) != contains_url:
                continue
            by_room.setdefault(pdu.room_id, []).append(pdu)
        shown: dict[str, Pdu] = {}
        for room_id, events in by_room.items():
            for pdu in await self._visibility.filter_for_user(room_id, user_id, events):
                shown[pdu.event_id] = pdu
        return shown

    def _groups(
        self,
        request: RoomEventsRequest,
        found: list[tuple[SearchHit, Pdu]],
        consumed: list[SearchHit],
        start: int | None,
        exhausted: bool,
        scoped: tuple[str, str] | None,
    ) -> dict[str, dict[str, Group]]:
        out: dict[str, dict[str, Group]] = {}
        for key in request.group_by:
            groups: dict[str, Group] = {}
            for hit, _ in found:
                value = hit.room_id if key == "room_id" else hit.sender
                groups.setdefault(value, Group(order=len(groups) + 1)).results.append(hit.event_id)
            if not exhausted:
                for value, group in groups.items():
                    if request.order == "recent":
                        position = consumed[-1].stream_ordering
                    else:
                        # The group's own offset: its candidates consumed so far (and before this page, when
                        # the page was itself scoped to this group).
                        mine = [h for h in consumed if (h.room_id if key == "room_id" else h.sender) == value]
                        position = len(mine) + (start or 0 if scoped == (key, value) else 0)
                    if scoped is None or scoped == (key, value):
                        group.next_batch = BatchToken(request.order, position, (key, value)).encode()
            out[key] = groups
        return out

    async def _context(
        self, user_id: str, pdu: Pdu, before_limit: int, after_limit: int, include_profile: bool
    ) -> EventContext | None:
        meta = await self._storage.events.get_event_meta(pdu.event_id)
        if meta is None:  # purged since the search found it: no context to give
            return None
        room_id = pdu.room_id
        before, before_token = await self._storage.stream.paginate(
            room_id, meta.topo_before, "b", before_limit
        )
        after, after_token = await self._storage.stream.paginate(room_id, meta.topo, "f", after_limit)
        before = await self._visibility.filter_for_user(room_id, user_id, before)
        after = await self._visibility.filter_for_user(room_id, user_id, after)
        context = EventContext(
            before, after, str(before_token or meta.topo_before), str(after_token or meta.topo)
        )
        if include_profile:
            # The profiles as of the last event shown (CS: "the historic profile information").
            last = after[-1] if after else pdu
            senders = sorted({e.sender for e in (*before, pdu, *after)})
            ids = await self._storage.state.get_state_ids_after(
                last.event_id, [("m.room.member", s) for s in senders]
            )
            members = await self._storage.events.get_events(list(ids.values()))
            context.profiles = {}
            for (_, sender), event_id in ids.items():
                member = members.get(event_id)
                if member is None:
                    continue
                context.profiles[sender] = {
                    k: v for k in ("displayname", "avatar_url") if isinstance(v := member.content.get(k), str)
                }
        return context

    async def _states(self, user_id: str, room_ids: Collection[str]) -> dict[str, list[Pdu]]:
        """Each room's current state, or for a room the user left, the state as they left it."""
        out: dict[str, list[Pdu]] = {}
        for room_id in sorted(room_ids):
            membership = await self._storage.state.get_membership(room_id, user_id)
            if membership is not None and membership[0] == "join":
                ids = await self._storage.state.get_current_state_ids(room_id)
            elif membership is not None:
                try:
                    ids = await self._storage.state.get_state_ids_after(membership[1])
                except UnknownEvent:
                    continue  # a membership held without its state (an out-of-band leave): none to show
            else:
                continue
            events = await self._storage.events.get_events(list(ids.values()))
            out[room_id] = [events[e] for e in ids.values() if e in events]
        return out
