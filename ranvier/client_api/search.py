"""``POST /search`` (CS "Server Side Search"): the request checked and turned into a ``RoomEventsRequest``,
the answer (``ranvier.search.room_events``) written in the spec's shape.

Categories other than ``room_events`` are not defined by the spec and are ignored (answered without them).
"""

from __future__ import annotations

import fnmatch
from typing import Any, Protocol

from aiohttp import web

from ..clock import now_ms
from ..protocol.events import Pdu
from ..search.room_events import (
    GROUP_KEYS,
    BadToken,
    BatchToken,
    RoomEventsAnswer,
    RoomEventSearch,
    RoomEventsRequest,
)
from ..search.terms import parse_search_term
from ..storage.protocols.composite import HasAccountData, HasState
from ..storage.sql.search import KEY_TYPES, MAX_FILTER_LIST, SearchScope
from .account_data import forgotten_event
from .auth import Authenticator
from .bundled import BundledAggregations, Relations
from .errors import bad_json, invalid_param, missing_param
from .event_format import format_client_event
from .filters import room_event_filter
from .http_util import read_json_body

PREFIXES = ("/_matrix/client/v3", "/_matrix/client/r0")
DEFAULT_LIMIT = 10  # as Synapse
MAX_LIMIT = 100
DEFAULT_CONTEXT = 5  # CS: before_limit and after_limit default to 5
MAX_CONTEXT = 100
MAX_TERM_LEN = 1000


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad_json(f"'{where}' must be an object")
    return value


def _bool(value: Any, where: str, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad_json(f"'{where}' must be a boolean")
    return value


def _int(value: Any, where: str, default: int, hi: int) -> int:
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise invalid_param(f"'{where}' must be a non-negative integer")
    return min(value, hi)


def _types(keys: list[str], types: list[str] | None, not_types: list[str]) -> list[str]:
    """The event types searched: those of the keys, narrowed by the filter's types (``*`` wildcards)."""
    wanted = [KEY_TYPES[k] for k in keys]
    if types is not None:
        wanted = [t for t in wanted if any(fnmatch.fnmatchcase(t, p) for p in types)]
    return [t for t in wanted if not any(fnmatch.fnmatchcase(t, p) for p in not_types)]


def parse_room_events(criteria: dict[str, Any]) -> RoomEventsRequest:
    if "search_term" not in criteria:
        raise missing_param("Missing 'search_term'")
    term = criteria["search_term"]
    if not isinstance(term, str):
        raise bad_json("'search_term' must be a string")
    if len(term) > MAX_TERM_LEN:
        raise invalid_param(f"'search_term' is longer than {MAX_TERM_LEN} characters")
    keys = criteria.get("keys")
    if keys is None:
        keys = list(KEY_TYPES)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise bad_json("'keys' must be a list of strings")
    unknown = [k for k in keys if k not in KEY_TYPES]
    if unknown:
        raise invalid_param(f"Unknown search keys {unknown}; allowed: {sorted(KEY_TYPES)}")
    order = criteria.get("order_by", "rank")
    if order not in ("rank", "recent"):
        raise invalid_param("'order_by' must be 'rank' or 'recent'")
    event_filter = criteria.get("filter")
    if event_filter is None:
        event_filter = {}
    room_event_filter(event_filter, "filter")
    for name in ("rooms", "not_rooms", "senders", "not_senders", "types", "not_types"):
        if len(event_filter.get(name) or ()) > MAX_FILTER_LIST:
            raise invalid_param(f"'filter.{name}' lists more than {MAX_FILTER_LIST} entries")
    scope = SearchScope(
        rooms=event_filter.get("rooms"),
        not_rooms=event_filter.get("not_rooms") or (),
        senders=event_filter.get("senders"),
        not_senders=event_filter.get("not_senders") or (),
        types=_types(keys, event_filter.get("types"), event_filter.get("not_types") or []),
    )
    limit = event_filter.get("limit")
    limit = DEFAULT_LIMIT if limit is None else limit
    if limit < 1:
        raise invalid_param("'filter.limit' must be positive")
    context = None
    include_profile = False
    if criteria.get("event_context") is not None:
        ctx = _object(criteria["event_context"], "event_context")
        context = (
            _int(ctx.get("before_limit"), "event_context.before_limit", DEFAULT_CONTEXT, MAX_CONTEXT),
            _int(ctx.get("after_limit"), "event_context.after_limit", DEFAULT_CONTEXT, MAX_CONTEXT),
        )
        include_profile = _bool(ctx.get("include_profile"), "event_context.include_profile", False)
    group_by: list[str] = []
    if criteria.get("groupings") is not None:
        groups = _object(criteria["groupings"], "groupings").get("group_by") or []
        if not isinstance(groups, list):
            raise bad_json("'groupings.group_by' must be a list")
        for group in groups:
            key = _object(group, "groupings.group_by[]").get("key")
            if key not in GROUP_KEYS:
                raise invalid_param(f"Unknown group key {key!r}; allowed: {list(GROUP_KEYS)}")
            if key not in group_by:
                group_by.append(key)
    return RoomEventsRequest(
        query=parse_search_term(term),
        scope=scope,
        order=order,
        limit=min(limit, MAX_LIMIT),
        contains_url=event_filter.get("contains_url"),
        context=context,
        include_profile=include_profile,
        include_state=_bool(criteria.get("include_state"), "include_state", False),
        group_by=tuple(group_by),
    )


def format_answer(answer: RoomEventsAnswer, now: int, relations: Relations | None = None) -> dict[str, Any]:
    """``relations``: the bundled aggregations of the events served (event id -> m.relations)."""
    relations = relations or {}

    def client(pdu: Pdu) -> dict[str, Any]:
        return format_client_event(pdu, now, relations=relations.get(pdu.event_id))

    results = []
    for result in answer.results:
        item: dict[str, Any] = {"rank": result.rank, "result": client(result.pdu)}
        if result.context is not None:
            ctx = result.context
            item["context"] = {
                "start": ctx.start,
                "end": ctx.end,
                "events_before": [client(e) for e in ctx.before],
                "events_after": [client(e) for e in ctx.after],
            }
            if ctx.profiles is not None:
                item["context"]["profile_info"] = ctx.profiles
        results.append(item)
    body: dict[str, Any] = {"results": results, "count": answer.count, "highlights": answer.highlights}
    if answer.next_batch is not None:
        body["next_batch"] = answer.next_batch
    if answer.groups is not None:
        body["groups"] = {
            key: {
                value: {"order": g.order, "results": g.results}
                | ({"next_batch": g.next_batch} if g.next_batch is not None else {})
                for value, g in groups.items()
            }
            for key, groups in answer.groups.items()
        }
    if answer.state is not None:
        body["state"] = {room: [client(e) for e in events] for room, events in answer.state.items()}
    return body


class SearchHandlersStorage(HasState, HasAccountData, Protocol):
    """What client_api/search.py asks of storage."""


class SearchHandlers:
    def __init__(
        self,
        storage: SearchHandlersStorage,
        authenticator: Authenticator,
        search: RoomEventSearch,
        bundled: BundledAggregations,
    ) -> None:
        self._storage = storage
        self._auth = authenticator
        self._search = search
        self._bundled = bundled

    def routes(self) -> list[web.RouteDef]:
        return [web.post(p + "/search", self.search) for p in PREFIXES]

    async def _forgotten_rooms(self, user_id: str) -> list[str]:
        """Rooms the user left and forgot: CS "forget" - no more history from them, search included."""
        out = []
        for room_id, membership in (await self._storage.state.get_rooms_for_user(user_id)).items():
            if membership == "join":
                continue
            current = await self._storage.state.get_membership(room_id, user_id)
            if current is not None and await forgotten_event(self._storage, user_id, room_id) == current[1]:
                out.append(room_id)
        return out

    async def _relations(self, user_id: str, answer: RoomEventsAnswer, now: int) -> Relations:
        """Bundled aggregations (CS "Aggregations of child events") of the results and their context, one
        batch per room."""
        by_room: dict[str, list[Pdu]] = {}
        for result in answer.results:
            context = result.context
            events = [result.pdu, *(context.before if context else ()), *(context.after if context else ())]
            by_room.setdefault(result.pdu.room_id, []).extend(events)
        out: Relations = {}
        for room_id, pdus in by_room.items():
            unique = list({p.event_id: p for p in pdus}.values())
            out.update(await self._bundled.relations(room_id, user_id, unique, now))
        return out

    async def search(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        body = await read_json_body(request)
        if "search_categories" not in body:
            raise missing_param("Missing 'search_categories'")
        categories = _object(body["search_categories"], "search_categories")
        token = None
        raw_token = request.query.get("next_batch")
        if raw_token is not None:
            try:
                token = BatchToken.decode(raw_token)
            except BadToken as e:
                raise invalid_param(f"Invalid next_batch token: {e}") from None
        answer: dict[str, Any] = {}
        if categories.get("room_events") is not None:
            criteria = parse_room_events(_object(categories["room_events"], "search_categories.room_events"))
            excluded = await self._forgotten_rooms(requester.user_id)
            try:
                found = await self._search.search(requester.user_id, criteria, token, excluded)
            except BadToken as e:
                raise invalid_param(f"Invalid next_batch token: {e}") from None
            now = now_ms()
            answer["room_events"] = format_answer(
                found, now, await self._relations(requester.user_id, found, now)
            )
        return web.json_response({"search_categories": answer})
