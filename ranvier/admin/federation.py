"""Federation destinations, as Synapse's admin API shows them (``/_synapse/admin/v1/federation/...``).

- ``GET  /_synapse/admin/v1/federation/destinations``: every destination we hold state for (a back-off,
  or something queued), paginated with ``from``/``limit``, ordered by ``order_by``/``dir`` like Synapse;
- ``GET  /_synapse/admin/v1/federation/destinations/{destination}``: one of them (404 if unknown);
- ``POST /_synapse/admin/v1/federation/destinations/{destination}/reset_connection``: end its back-off
  now, so its queue is sent at once;
- ``GET  /_synapse/admin/v1/federation/destinations/{destination}/rooms``: the rooms in which that server
  has joined members (``from``/``limit``/``dir``), each with Synapse's ``stream_ordering`` (the newest of
  our events in the room it acknowledged; null before the first) and Ranvier's ``pending_pdus`` (events of
  that room queued for it).

Each entry has Synapse's fields ``destination``, ``retry_last_ts``, ``retry_interval`` and ``failure_ts``
(when the current failure streak began; null while the destination is healthy). Synapse's
``last_successful_stream_ordering`` is the stream ordering of the newest of our PDUs the destination
acknowledged (null before the first). Ranvier's own fields:
``failure_count``, ``pending_pdus``, ``pending_edus`` and ``state`` (idle, sending or backing_off). Only
server admins may call these.
"""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from ..client_api.auth import Authenticator
from ..client_api.errors import MatrixError, invalid_param, not_found
from ..client_api.http_util import query_int
from ..federation.sender import FederationSender
from ..storage.protocols.composite import HasDb, HasOutbox
from ..storage.sql.outbox import RetryState
from .access import audit_log

PREFIX = "/_synapse/admin/v1/federation/destinations"
ORDERS = ("destination", "retry_last_ts", "retry_interval", "failure_ts")


class FederationAdminStorage(HasDb, HasOutbox, Protocol):
    """What admin/federation.py asks of storage."""


class FederationAdminHandlers:
    def __init__(
        self, storage: FederationAdminStorage, authenticator: Authenticator, sender: FederationSender
    ) -> None:
        self._storage = storage
        self._auth = authenticator
        self._sender = sender

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(PREFIX, self.list_destinations),
            web.get(PREFIX + "/{destination}", self.get_destination),
            web.post(PREFIX + "/{destination}/reset_connection", self.reset_connection),
            web.get(PREFIX + "/{destination}/rooms", self.destination_rooms),
        ]

    async def _require_admin(self, request: web.Request) -> None:
        requester = await self._auth.require_user(request)
        if not requester.is_admin:
            audit_log.warning(
                "refused admin request %s %s by non-admin %s", request.method, request.path, requester.user_id
            )
            raise MatrixError(403, "M_FORBIDDEN", "You are not a server admin")
        audit_log.info("admin %s: %s %s", requester.user_id, request.method, request.path)

    async def _entries(self) -> dict[str, dict[str, Any]]:
        retries: dict[str, RetryState] = await self._storage.outbox.get_all_retries()
        pending: dict[str, tuple[int, int]] = await self._storage.outbox.pending_counts()
        progress: dict[str, int] = await self._storage.outbox.last_successful()
        out = {}
        for destination in sorted(set(retries) | set(pending) | set(progress)):
            retry = retries.get(destination)
            pdus, edus = pending.get(destination, (0, 0))
            out[destination] = {
                "destination": destination,
                "retry_last_ts": retry.retry_last_ts if retry else 0,
                "retry_interval": retry.retry_interval if retry else 0,
                "failure_ts": retry.failure_ts if retry else None,
                "last_successful_stream_ordering": progress.get(destination),
                "failure_count": retry.failure_count if retry else 0,
                "pending_pdus": pdus,
                "pending_edus": edus,
                "state": self._sender.worker_state(destination),
            }
        return out

    async def list_destinations(self, request: web.Request) -> web.Response:
        await self._require_admin(request)
        start = query_int(request, "from", 0, 0, 2**31)
        limit = query_int(request, "limit", 100, 0, 10_000)
        order_by = request.query.get("order_by", "destination")
        if order_by not in ORDERS:
            raise invalid_param(f"order_by must be one of {', '.join(ORDERS)}")
        direction = request.query.get("dir", "f")
        if direction not in ("f", "b"):
            raise invalid_param("dir must be 'f' or 'b'")
        entries = list((await self._entries()).values())
        entries.sort(key=lambda e: (e[order_by] is not None, e[order_by] or 0, e["destination"]))
        if order_by == "destination":
            entries.sort(key=lambda e: e["destination"])
        if direction == "b":
            entries.reverse()
        page = entries[start : start + limit]
        body: dict[str, Any] = {"destinations": page, "total": len(entries)}
        if start + limit < len(entries):
            body["next_token"] = str(start + limit)
        return web.json_response(body)

    async def get_destination(self, request: web.Request) -> web.Response:
        await self._require_admin(request)
        entry = (await self._entries()).get(request.match_info["destination"])
        if entry is None:
            raise not_found("Unknown destination")
        return web.json_response(entry)

    async def reset_connection(self, request: web.Request) -> web.Response:
        await self._require_admin(request)
        destination = request.match_info["destination"]
        if destination not in await self._entries():
            raise not_found("Unknown destination")
        self._sender.reset_backoff(destination)
        return web.json_response({})

    async def destination_rooms(self, request: web.Request) -> web.Response:
        await self._require_admin(request)
        destination = request.match_info["destination"]
        start = query_int(request, "from", 0, 0, 2**31)
        limit = query_int(request, "limit", 100, 0, 10_000)
        direction = request.query.get("dir", "f")
        if direction not in ("f", "b"):
            raise invalid_param("dir must be 'f' or 'b'")
        rows = await self._storage.db.fetchall(
            "SELECT DISTINCT room_id FROM room_memberships WHERE server_name = ? AND membership = 'join'"
            " ORDER BY room_id",
            (destination,),
        )
        if not rows and destination not in await self._entries():
            raise not_found("Unknown destination")
        backlogs: dict[str, int] = await self._storage.outbox.room_backlogs(destination)
        progress: dict[str, int] = await self._storage.outbox.room_progress(destination)
        room_ids = [r[0] for r in rows]
        if direction == "b":
            room_ids.reverse()
        page = room_ids[start : start + limit]
        body: dict[str, Any] = {
            "rooms": [
                {"room_id": r, "stream_ordering": progress.get(r), "pending_pdus": backlogs.get(r, 0)}
                for r in page
            ],
            "total": len(room_ids),
        }
        if start + limit < len(room_ids):
            body["next_token"] = str(start + limit)
        return web.json_response(body)
