"""``GET /notifications`` (CS "Push Notifications" > "Listing Notifications"): the events that notified
the user, newest first, from the push actions written at persist time; ``only=highlight`` keeps the
highlights, ``from`` is the ``next_token`` of the page before.
"""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from ..clock import now_ms
from ..storage.protocols.composite import HasEvents, HasPushActions
from .auth import Authenticator
from .errors import invalid_param
from .event_format import format_client_event
from .http_util import query_int

PREFIXES = ("/_matrix/client/v3", "/_matrix/client/r0")
DEFAULT_LIMIT = 20
MAX_LIMIT = 100


class NotificationsStorage(HasEvents, HasPushActions, Protocol):
    """What client_api/notifications.py asks of storage."""


class NotificationHandlers:
    def __init__(self, storage: NotificationsStorage, authenticator: Authenticator) -> None:
        self._storage = storage
        self._auth = authenticator

    def routes(self) -> list[web.RouteDef]:
        return [web.get(p + "/notifications", self.notifications) for p in PREFIXES]

    async def notifications(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        limit = query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        raw_from = request.query.get("from")
        before: int | None = None
        if raw_from is not None:
            if not raw_from.isascii() or not raw_from.isdigit() or len(raw_from) > 18:
                raise invalid_param("'from' is not a token this server gave")
            before = int(raw_from)
        only = request.query.get("only")
        found = await self._storage.push_actions.notifications(
            requester.user_id, before, limit, only == "highlight"
        )
        events = await self._storage.events.get_events([n.event_id for n in found])
        now = now_ms()
        out: list[dict[str, Any]] = []
        for n in found:
            pdu = events.get(n.event_id)
            if pdu is None:
                continue
            out.append(
                {
                    "actions": n.actions,
                    "event": format_client_event(pdu, now),
                    "read": n.read,
                    "room_id": n.room_id,
                    "ts": pdu.origin_server_ts,
                }
            )
        body: dict[str, Any] = {"notifications": out}
        if len(found) == limit:
            body["next_token"] = str(found[-1].stream_ordering)
        return web.json_response(body)
