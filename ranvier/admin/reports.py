"""Reporting content (CS "Reporting content") and the admins' view of the reports (Synapse's admin API).

Client endpoints (any user):
- ``POST /_matrix/client/v3/rooms/{roomId}/report/{eventId}``: the reporter must be joined to the room and
  the event be in it (404 M_NOT_FOUND otherwise, as the spec says since 1.8);
- ``POST /_matrix/client/v3/rooms/{roomId}/report``: a room we know (404 otherwise), joined or not;
- ``POST /_matrix/client/v3/users/{userId}/report``: one of our users (404 when we have no such account)
  or another server's user.

Admin endpoints: ``GET /_synapse/admin/v1/event_reports`` (``from``/``limit``, ``dir`` newest first by
default, ``room_id``, ``user_id``), ``GET/DELETE /_synapse/admin/v1/event_reports/{reportId}``. Room and
user reports are stored beside event reports; Synapse's admin API lists only event reports, and so does
this one. The deprecated ``score`` is kept in the stored request content when a client still sends it.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from aiohttp import web

from ..client_api.auth import Authenticator
from ..client_api.errors import invalid_param, not_found
from ..client_api.http_util import query_int, read_json_body
from ..storage.protocols.admin import AdminStorage
from ..storage.protocols.composite import HasEvents, HasRooms, HasState, HasUsers
from ..storage.sql.admin import ContentReport
from .access import AdminAccess, note

logger = logging.getLogger(__name__)

CLIENT_PREFIXES = ("/_matrix/client/v3", "/_matrix/client/r0")
ADMIN = "/_synapse/admin/v1/event_reports"
MAX_REASON_LENGTH = 1000


class ReportsStorage(HasRooms, HasEvents, HasState, HasUsers, Protocol):
    """What admin/reports.py asks of storage."""


def _reason(body: dict[str, Any], required: bool) -> str | None:
    reason = body.get("reason")
    if reason is None and not required:
        return None
    if not isinstance(reason, str):
        raise invalid_param("'reason' must be a string")
    if len(reason) > MAX_REASON_LENGTH:
        raise invalid_param(f"'reason' may be at most {MAX_REASON_LENGTH} characters")
    return reason


class ReportHandlers:
    def __init__(
        self,
        storage: ReportsStorage,
        admin_store: AdminStorage,
        authenticator: Authenticator,
        access: AdminAccess,
    ) -> None:
        self._storage = storage
        self._store = admin_store
        self._auth = authenticator
        self._access = access

    def routes(self) -> list[web.RouteDef]:
        routes = []
        for prefix in CLIENT_PREFIXES:
            routes += [
                web.post(prefix + "/rooms/{room_id}/report/{event_id}", self.report_event),
                web.post(prefix + "/rooms/{room_id}/report", self.report_room),
                web.post(prefix + "/users/{user_id}/report", self.report_user),
            ]
        routes += [
            web.get(ADMIN, self.list_reports),
            web.get(ADMIN + "/{report_id}", self.get_report),
            web.delete(ADMIN + "/{report_id}", self.delete_report),
        ]
        return routes

    # -- reporting --------------------------------------------------------------------------------

    async def report_event(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        room_id, event_id = request.match_info["room_id"], request.match_info["event_id"]
        body = await read_json_body(request, allow_empty=True)
        reason = _reason(body, required=False)
        membership = await self._storage.state.get_membership(room_id, requester.user_id)
        event = await self._storage.events.get_event(event_id)
        if membership is None or membership[0] != "join" or event is None or event.room_id != room_id:
            raise not_found("The event was not found or you are not joined to the room.")
        report_id = await self._store.add_report(
            "event", requester.user_id, reason, body, room_id=room_id, event_id=event_id
        )
        logger.info("%s reported event %s in %s (report %d)", requester.user_id, event_id, room_id, report_id)
        return web.json_response({})

    async def report_room(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        room_id = request.match_info["room_id"]
        body = await read_json_body(request)
        reason = _reason(body, required=True)
        if await self._storage.rooms.get_room(room_id) is None:
            raise not_found("The room was not found.")
        report_id = await self._store.add_report("room", requester.user_id, reason, body, room_id=room_id)
        logger.info("%s reported room %s (report %d)", requester.user_id, room_id, report_id)
        return web.json_response({})

    async def report_user(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        user_id = request.match_info["user_id"]
        if not user_id.startswith("@") or ":" not in user_id:
            raise invalid_param(f"{user_id!r} is not a user id")
        body = await read_json_body(request)
        reason = _reason(body, required=True)
        is_local = user_id.split(":", 1)[1] == self._access.server_name
        if is_local and await self._storage.users.get_user(user_id) is None:
            raise not_found("The user was not found on the homeserver.")
        report_id = await self._store.add_report(
            "user", requester.user_id, reason, body, target_user_id=user_id
        )
        logger.info("%s reported user %s (report %d)", requester.user_id, user_id, report_id)
        return web.json_response({})

    # -- the admins' view -------------------------------------------------------------------------

    async def _report_json(self, report: ContentReport, with_event: bool) -> dict[str, Any]:
        event = await self._storage.events.get_event(report.event_id) if report.event_id else None
        room_id = report.room_id or ""
        name_event = await self._storage.state.get_current_state_event(room_id, "m.room.name", "")
        alias_event = await self._storage.state.get_current_state_event(room_id, "m.room.canonical_alias", "")
        entry: dict[str, Any] = {
            "id": report.id,
            "received_ts": report.received_ts,
            "room_id": report.room_id,
            "name": name_event.content.get("name") if name_event is not None else None,
            "canonical_alias": alias_event.content.get("alias") if alias_event is not None else None,
            "event_id": report.event_id,
            "user_id": report.user_id,
            "reason": report.reason,
            "sender": event.sender if event is not None else None,
        }
        if isinstance(report.content.get("score"), int):
            entry["score"] = report.content["score"]
        if with_event:
            # The event as stored (its federation form), as Synapse gives it.
            entry["event_json"] = event.to_federation() if event is not None else None
        return entry

    async def list_reports(self, request: web.Request) -> web.Response:
        await self._access.require_admin(request)
        start = query_int(request, "from", 0)
        limit = query_int(request, "limit", 100, lo=0, hi=10_000)
        direction = request.query.get("dir", "b")
        if direction not in ("f", "b"):
            raise invalid_param("'dir' must be 'f' or 'b'")
        reports, total = await self._store.list_reports(
            "event",
            start=start,
            limit=limit,
            backwards=direction == "b",
            room_id=request.query.get("room_id"),
            user_id=request.query.get("user_id"),
        )
        body: dict[str, Any] = {
            "event_reports": [await self._report_json(r, with_event=False) for r in reports],
            "total": total,
        }
        if start + len(reports) < total and reports:
            body["next_token"] = start + len(reports)
        return web.json_response(body)

    async def _report(self, request: web.Request) -> ContentReport:
        raw = request.match_info["report_id"]
        if not raw.isdigit() or len(raw) > 18:
            raise invalid_param("The report_id parameter must be a string representing a positive integer.")
        report = await self._store.get_report(int(raw))
        if report is None or report.kind != "event":
            raise not_found("Event report not found")
        return report

    async def get_report(self, request: web.Request) -> web.Response:
        await self._access.require_admin(request)
        report = await self._report(request)
        return web.json_response(await self._report_json(report, with_event=True))

    async def delete_report(self, request: web.Request) -> web.Response:
        admin = await self._access.require_admin(request)
        report = await self._report(request)
        await self._store.delete_report(report.id)
        note(admin, "deleted event report", report_id=report.id)
        return web.json_response({})
