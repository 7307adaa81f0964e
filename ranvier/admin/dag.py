"""The room-DAG page: an operator's picture of a room's event graph.

- ``GET /_ranvier/admin/v1/rooms/{roomId}/dag?limit=N&around=EVENT_ID``: the window as JSON (admins only):
  nodes by depth with their prev edges, forward extremities, outliers, rejected and soft-failed events,
  redactions, the join-gap/extremity-healing dummy events and what each tied together, the prev events we
  do not hold (gaps), and for our own events the servers that have not acknowledged them yet.
- ``GET /_ranvier/admin/rooms/{roomId}/dag``: the page (static HTML; it asks for an admin access token,
  kept in the browser's localStorage, and fetches the JSON above). Layout: cytoscape with the dagre
  layered layout, vendored as their built files in ``static/vendor`` (see the README there).
- ``GET /_ranvier/admin/static/{name}``: the page's script, style and the vendored files.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from ..client_api.auth import Authenticator
from ..client_api.errors import MatrixError, not_found
from ..client_api.http_util import query_int
from ..storage.protocols.composite import HasState
from ..storage.sql.engine import Database
from ..storage.sql.room_dag import DagEvent, DagWindow, RoomDagStore

logger = logging.getLogger("ranvier.admin")

STATIC_DIR = Path(__file__).resolve().parent / "static"
API_PREFIX = "/_ranvier/admin/v1/rooms/{room_id}/dag"
PAGE_PATH = "/_ranvier/admin/rooms/{room_id}/dag"
DUMMY_EVENT_TYPE = "org.matrix.dummy_event"
MAX_WINDOW = 2_000
_CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".md": "text/plain"}


def _node(event: DagEvent, window: DagWindow, forward: set[str], backward: set[str]) -> dict[str, Any]:
    node: dict[str, Any] = {
        "event_id": event.event_id,
        "type": event.type,
        "sender": event.sender,
        "depth": event.depth,
        "stream_ordering": event.stream_ordering,
        "origin_server_ts": event.origin_server_ts,
        "prev_events": list(event.prev_event_ids),
        "outlier": event.outlier,
        "soft_failed": event.soft_failed,
        "redacted": event.redacted,
        "forward_extremity": event.event_id in forward,
        # a backward extremity we now hold as an outlier: its own prev events were never fetched
        "backward_extremity": event.event_id in backward,
        "unacknowledged_by": window.unacknowledged.get(event.event_id, []),
    }
    if event.state_key is not None:
        node["state_key"] = event.state_key
    if event.rejected_reason is not None:
        node["rejected_reason"] = event.rejected_reason
    if event.content_summary is not None:
        node["summary"] = event.content_summary
    if event.type == DUMMY_EVENT_TYPE:
        # Sent by a resident to heal the join gap or too many forward extremities: it ties its prev
        # events (the branches) together.
        node["ties"] = list(event.prev_event_ids)
    return node


def window_json(window: DagWindow, servers: list[str]) -> dict[str, Any]:
    forward, backward = set(window.forward_extremities), set(window.backward_extremities)
    children: dict[str, int] = {}
    for event in window.events:
        for prev in event.prev_event_ids:
            children[prev] = children.get(prev, 0) + 1
    return {
        "room_id": window.room_id,
        "servers": servers,
        "events": [_node(e, window, forward, backward) for e in window.events],
        "forward_extremities": window.forward_extremities,
        "backward_extremities": window.backward_extremities,
        "missing": window.missing,
        # events of the window that more than one event of the window builds on: where the DAG forked
        "forks": sorted(e for e, n in children.items() if n > 1),
        "more_before": window.more_before,
    }


class RoomDagHandlers:
    def __init__(self, storage: HasState, db: Database, authenticator: Authenticator) -> None:
        self._storage = storage
        self._dag = RoomDagStore(db)
        self._auth = authenticator

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(API_PREFIX, self.get_dag),
            web.get(PAGE_PATH, self.page),
            web.get("/_ranvier/admin/static/{name:[A-Za-z0-9_.-]+}", self.static),
            web.get("/_ranvier/admin/static/vendor/{name:[A-Za-z0-9_.-]+}", self.vendor),
        ]

    async def get_dag(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        if not requester.is_admin:
            raise MatrixError(403, "M_FORBIDDEN", "You are not a server admin")
        room_id = request.match_info["room_id"]
        limit = query_int(request, "limit", 200, 1, MAX_WINDOW)
        around = request.query.get("around")
        window = await self._dag.window(room_id, limit, around)
        if window is None:
            raise not_found("Unknown room" if around is None else "Unknown room or event")
        servers = sorted(await self._storage.state.get_joined_servers(room_id))
        logger.info(
            "admin %s read the DAG of %s (limit %d, around %s)", requester.user_id, room_id, limit, around
        )
        return web.json_response(window_json(window, servers))

    async def page(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "dag.html", headers={"Content-Type": "text/html; charset=utf-8"})

    async def static(self, request: web.Request) -> web.StreamResponse:
        return self._file(STATIC_DIR / request.match_info["name"])

    async def vendor(self, request: web.Request) -> web.StreamResponse:
        return self._file(STATIC_DIR / "vendor" / request.match_info["name"])

    def _file(self, path: Path) -> web.StreamResponse:
        # The route's pattern admits no "/" and the file must sit directly in a static directory.
        if not path.is_file() or path.parent not in (STATIC_DIR, STATIC_DIR / "vendor"):
            raise not_found("No such file")
        content_type = _CONTENT_TYPES.get(path.suffix, "application/octet-stream")
        return web.FileResponse(path, headers={"Content-Type": content_type})
