"""``GET /relations/{eventId}[/{relType}[/{eventType}]]`` (CS "Relationships API", ``recurse`` since v1.10)
and ``GET /threads`` (CS "Querying threads in a room", v1.4).

Pagination tokens are the topological positions ``/messages`` hands out (``t<depth>_<order>``); a ``/sync``
token (``s<stream>``) is accepted as a starting point too, as the spec allows for ``from`` and ``to``.
Children hidden by history visibility are left out of a page, which may then be shorter than ``limit``;
the token still moves past them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from ..clock import now_ms
from ..protocol.events import Pdu
from ..protocol.redaction import redact_event
from ..protocol.relations import ANNOTATION, THREAD, relation_of
from ..storage.interfaces import TopoToken
from ..storage.protocols.composite import HasEvents, HasRelations
from ..storage.sql.relations import RECURSION_DEPTH
from .auth import Authenticator
from .bundled import BundledAggregations
from .errors import MatrixError, invalid_param, not_found
from .http_util import query_int

if TYPE_CHECKING:
    from .messages import MessageHandlers

PREFIX = "/_matrix/client/v1"
DEFAULT_LIMIT = 5  # Synapse's default page for /relations and /threads
MAX_LIMIT = 100


class RelationsStorage(HasEvents, HasRelations, Protocol):
    """What client_api/relations.py asks of storage."""


async def check_new_relation(
    storage: RelationsStorage, room_id: str, sender: str, event_type: str, content: dict[str, Any]
) -> None:
    """What a client may not send (checked for new local events only; federation cannot be held to it):
    a thread started from an event that has a relationship itself (CS "Validation of m.thread
    relationships": 400 M_UNKNOWN), and a second identical annotation (CS "Avoiding duplicate annotations":
    400 M_DUPLICATE_ANNOTATION)."""
    relation = relation_of(content)
    if relation is None:
        return
    relations = storage.relations
    if relation.rel_type == THREAD and await relations.rel_type_of(relation.parent_id) is not None:
        raise MatrixError(400, "M_UNKNOWN", "Cannot start a thread from an event with a relationship")
    if (
        relation.rel_type == ANNOTATION
        and relation.key is not None
        and await relations.annotation_exists(room_id, relation.parent_id, sender, event_type, relation.key)
    ):
        raise MatrixError(400, "M_DUPLICATE_ANNOTATION", "Cannot send the same annotation twice")


class RelationHandlers:
    def __init__(
        self,
        storage: RelationsStorage,
        authenticator: Authenticator,
        messages: MessageHandlers,
        bundled: BundledAggregations,
        visibility: Any,
    ) -> None:
        self._storage = storage
        self._auth = authenticator
        # Membership (forgotten rooms, world_readable) and token parsing exactly as /messages has them.
        self._messages = messages
        self._bundled = bundled
        self._visibility = visibility  # rooms.visibility.HistoryVisibilityFilter

    def routes(self) -> list[web.RouteDef]:
        base = PREFIX + "/rooms/{room}/relations/{event}"
        return [
            web.get(base, self.relations),
            web.get(base + "/{rel_type}", self.relations),
            web.get(base + "/{rel_type}/{event_type}", self.relations),
            web.get(PREFIX + "/rooms/{room}/threads", self.threads),
        ]

    async def _token(self, room_id: str, raw: str | None) -> TopoToken | None:
        return await self._messages.topological_token(room_id, raw) if raw else None

    async def relations(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        user_id = requester.user_id
        room_id, parent_id = request.match_info["room"], request.match_info["event"]
        direction = request.query.get("dir", "b")
        if direction not in ("b", "f"):
            raise invalid_param("dir must be 'b' or 'f'")
        limit = query_int(request, "limit", DEFAULT_LIMIT, 0, MAX_LIMIT)
        recurse_raw = request.query.get("recurse")
        if recurse_raw not in (None, "true", "false"):
            raise invalid_param("recurse must be 'true' or 'false'")
        depth = RECURSION_DEPTH if recurse_raw == "true" else 1
        await self._messages.check_reader(room_id, user_id)
        # The parent: 404 if unknown here or hidden from the user (the spec's 404 covers both).
        parent = await self._storage.events.get_event(parent_id)
        meta = await self._storage.events.get_event_meta(parent_id)
        if parent is None or meta is None or parent.room_id != room_id or meta.outlier or meta.soft_failed:
            raise not_found("Event not found")
        if not await self._visibility.user_may_see(room_id, user_id, parent):
            raise not_found("Event not found")
        from_raw, to_raw = request.query.get("from"), request.query.get("to")
        from_token = await self._token(room_id, from_raw)
        to_token = await self._token(room_id, to_raw)
        ignored = await self._bundled.ignored_users(user_id)
        ids, next_token = await self._storage.relations.children(
            room_id,
            parent_id,
            rel_type=request.match_info.get("rel_type"),
            event_type=request.match_info.get("event_type"),
            from_token=from_token,
            to_token=to_token,
            direction=direction,
            limit=limit,
            depth=depth,
            ignored=ignored,
        )
        found = await self._storage.events.get_events(ids)
        page = [found[e] for e in ids if e in found]
        page = await self._visibility.filter_for_user(room_id, user_id, page)
        body: dict[str, Any] = {
            "chunk": await self._bundled.serialize(room_id, user_id, page, now_ms(), ignored=ignored)
        }
        if next_token is not None:
            body["next_batch"] = str(next_token)
        if from_raw:
            body["prev_batch"] = from_raw
        if recurse_raw is not None:
            body["recursion_depth"] = depth
        return web.json_response(body)

    async def threads(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        user_id = requester.user_id
        room_id = request.match_info["room"]
        include = request.query.get("include", "all")
        if include not in ("all", "participated"):
            raise invalid_param("include must be 'all' or 'participated'")
        # "Must be an integer greater than zero."
        limit = query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        await self._messages.check_reader(room_id, user_id)
        from_token = await self._token(room_id, request.query.get("from"))
        ignored = await self._bundled.ignored_users(user_id)
        roots, next_token = await self._storage.relations.thread_roots(
            room_id,
            participant=user_id if include == "participated" else None,
            from_token=from_token,
            limit=limit,
            ignored=ignored,
        )
        found = await self._storage.events.get_events([r.event_id for r in roots])
        page = [found[r.event_id] for r in roots if r.event_id in found]
        page = await self._visibility.filter_for_user(room_id, user_id, page)
        # "If the thread root event was sent by an ignored user, the event is returned redacted to the
        # caller", as a client aggregating locally would show it.
        page = [
            Pdu(redact_event(p.json, p.room_version), p.room_version) if p.sender in ignored else p
            for p in page
        ]
        body: dict[str, Any] = {
            "chunk": await self._bundled.serialize(room_id, user_id, page, now_ms(), ignored=ignored)
        }
        if next_token is not None:
            body["next_batch"] = str(next_token)
        return web.json_response(body)
