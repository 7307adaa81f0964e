"""Room administration in the shape of Synapse's admin API (server admins only):

- ``GET /_synapse/admin/v1/rooms``: list (``from``/``limit``, ``order_by``, ``dir``, ``search_term``,
  ``public_rooms``, ``empty_rooms``), answering ``rooms``, ``offset``, ``total_rooms`` and
  ``next_batch``/``prev_batch``;
- ``GET /_synapse/admin/v1/rooms/{roomId}``: details; ``.../members``; ``.../state``;
- ``GET/PUT /_synapse/admin/v1/rooms/{roomId}/block``: local users may no longer join (``admin.policy``);
- ``GET/DELETE /_synapse/admin/v1/rooms/{roomId}/forward_extremities``: list; delete all but the newest
  (so that the next local event cites one parent), under the room's persist lock;
- ``GET /_synapse/admin/v1/rooms/{roomId}/context/{eventId}``: an event with the events around it and
  the state after it, whatever the admin's membership;
- ``GET /_synapse/admin/v1/rooms/{roomId}/messages`` (``from``, ``to``, ``limit``, ``dir``; forwards by
  default, as in Synapse, unlike the client API's /messages): the room's timeline in topological order,
  whatever the admin's membership and the room's history visibility, with ``start``/``end`` tokens
  (``t<depth>_<stream>``, as /messages gives them).

Every figure is computed from the room's current state and memberships. Ranvier does not record when an
event was received, so a forward extremity's ``received_ts`` is left out.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from aiohttp import web

from ..client_api.errors import invalid_param, not_found
from ..client_api.event_format import format_client_event
from ..client_api.http_util import query_int, read_json_body
from ..clock import now_ms
from ..protocol.events import Pdu
from ..rooms.persister import EventPersister
from ..storage.interfaces import TopoToken
from ..storage.protocols.admin import AdminStorage
from ..storage.protocols.composite import (
    HasDb,
    HasDevices,
    HasDirectory,
    HasEvents,
    HasRooms,
    HasState,
    HasStream,
)
from ..storage.sql.engine import Database
from .access import AdminAccess, note, query_bool, query_dir
from .policy import AdminPolicy

V1 = "/_synapse/admin/v1/rooms"

# Synapse's order_by values ("alphabetical" and "size" are its deprecated names for name and joined_members).
ROOM_ORDERS = (
    "name",
    "canonical_alias",
    "joined_members",
    "joined_local_members",
    "version",
    "creator",
    "encryption",
    "federatable",
    "public",
    "join_rules",
    "guest_access",
    "history_visibility",
    "state_events",
)
_ORDER_ALIASES = {"alphabetical": "name", "size": "joined_members"}
# Only in a room's details, as in Synapse.
_DETAIL_STATE = {("m.room.topic", ""): ("topic", "topic"), ("m.room.avatar", ""): ("avatar", "url")}

_SUMMARY_STATE = {
    ("m.room.name", ""): ("name", "name"),
    ("m.room.canonical_alias", ""): ("canonical_alias", "alias"),
    ("m.room.encryption", ""): ("encryption", "algorithm"),
    ("m.room.join_rules", ""): ("join_rules", "join_rule"),
    ("m.room.guest_access", ""): ("guest_access", "guest_access"),
    ("m.room.history_visibility", ""): ("history_visibility", "history_visibility"),
}


class RoomsAdminStorage(HasDb, HasRooms, HasEvents, HasState, HasStream, HasDevices, HasDirectory, Protocol):
    """What admin/rooms.py asks of storage."""


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


class RoomAdminHandlers:
    def __init__(
        self,
        storage: RoomsAdminStorage,
        admin_store: AdminStorage,
        access: AdminAccess,
        policy: AdminPolicy,
        persister: EventPersister,
        server_name: str,
    ) -> None:
        self._storage = storage
        self._store = admin_store
        self._access = access
        self._policy = policy
        self._persister = persister
        self._server_name = server_name

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(V1, self.list_rooms),
            web.get(V1 + "/{room_id}", self.room_details),
            web.get(V1 + "/{room_id}/members", self.members),
            web.get(V1 + "/{room_id}/state", self.state),
            web.get(V1 + "/{room_id}/block", self.get_block),
            web.put(V1 + "/{room_id}/block", self.put_block),
            web.get(V1 + "/{room_id}/forward_extremities", self.forward_extremities),
            web.delete(V1 + "/{room_id}/forward_extremities", self.delete_forward_extremities),
            web.get(V1 + "/{room_id}/context/{event_id}", self.context),
            web.get(V1 + "/{room_id}/messages", self.messages),
        ]

    # -- summaries -------------------------------------------------------------------------------

    async def summary(
        self, room_id: str, public_ids: set[str], details: bool = False
    ) -> dict[str, Any] | None:
        """The room's entry in the room list, or with ``details`` its details' (None for a room we do not
        hold)."""
        fields = {**_SUMMARY_STATE, **_DETAIL_STATE} if details else _SUMMARY_STATE
        record = await self._storage.rooms.get_room(room_id)
        if record is None:
            return None
        state_ids: dict[tuple[str, str], str] = await self._storage.state.get_current_state_ids(room_id)
        wanted = {key: state_ids[key] for key in fields if key in state_ids}
        create_id = state_ids.get(("m.room.create", ""))
        events: dict[str, Pdu] = await self._storage.events.get_events(
            [*wanted.values(), *([create_id] if create_id else [])]
        )
        entry: dict[str, Any] = {"room_id": room_id}
        for key, (field, content_key) in fields.items():
            event = events.get(wanted.get(key, ""))
            entry[field] = _text(event.content.get(content_key)) if event is not None else None
        members: dict[str, str] = await self._storage.state.get_members(room_id)
        joined = [u for u, m in members.items() if m == "join"]
        create = events.get(create_id or "")
        entry.update(
            joined_members=len(joined),
            joined_local_members=sum(1 for u in joined if u.split(":", 1)[1] == self._server_name),
            version=record.room_version.identifier,
            creator=record.creator,
            federatable=create is None or create.content.get("m.federate", True) is not False,
            public=room_id in public_ids,
            state_events=len(state_ids),
            room_type=_text(create.content.get("type")) if create is not None else None,
        )
        return entry

    async def _public_ids(self) -> set[str]:
        return set(await self._storage.directory.public_room_ids())

    async def _all_summaries(self) -> list[dict[str, Any]]:
        """Every room's list entry, from a handful of queries over all rooms (the list is sorted and
        filtered on any of its fields, so every room is summarised)."""
        types = (*(key[0] for key in _SUMMARY_STATE), "m.room.create")
        rows = await self._store.room_summary_rows(self._server_name, types)
        rooms, members, state_counts, contents, redacted = rows
        for room_id, event_type in redacted:
            event = await self._storage.state.get_current_state_event(room_id, event_type, "")
            contents[(room_id, event_type)] = dict(event.content) if event is not None else {}
        public_ids = await self._public_ids()
        entries = []
        for room_id, version, creator in rooms:
            entry: dict[str, Any] = {"room_id": room_id}
            for (event_type, _), (field, content_key) in _SUMMARY_STATE.items():
                content = contents.get((room_id, event_type))
                entry[field] = _text(content.get(content_key)) if content is not None else None
            create = contents.get((room_id, "m.room.create"))
            joined, local = members.get(room_id, (0, 0))
            entry.update(
                joined_members=joined,
                joined_local_members=local,
                version=version,
                creator=creator,
                federatable=create is None or create.get("m.federate", True) is not False,
                public=room_id in public_ids,
                state_events=state_counts.get(room_id, 0),
                room_type=_text(create.get("type")) if create is not None else None,
            )
            entries.append(entry)
        return entries

    async def list_rooms(self, request: web.Request) -> web.Response:
        await self._access.require_admin(request)
        start = query_int(request, "from", 0)
        limit = query_int(request, "limit", 100, lo=0, hi=10_000)
        order_by = request.query.get("order_by", "name")
        order_by = _ORDER_ALIASES.get(order_by, order_by)
        if order_by not in ROOM_ORDERS:
            raise invalid_param(f"'order_by' must be one of {', '.join(ROOM_ORDERS)}")
        backwards = query_dir(request)
        search = (request.query.get("search_term") or "").lower()
        public = None if "public_rooms" not in request.query else query_bool(request, "public_rooms", False)
        empty = None if "empty_rooms" not in request.query else query_bool(request, "empty_rooms", False)
        rooms = [
            entry
            for entry in await self._all_summaries()
            if (
                not search
                or any(search in (entry[f] or "").lower() for f in ("name", "canonical_alias", "room_id"))
            )
            and (public is None or entry["public"] == public)
            and (empty is None or (entry["joined_local_members"] == 0) == empty)
        ]
        # Rooms without a value for the key go last (first when backwards), ties by room id.
        present = [r for r in rooms if r[order_by] is not None]
        absent = sorted((r for r in rooms if r[order_by] is None), key=lambda r: r["room_id"])
        numeric = order_by in ("joined_members", "joined_local_members", "state_events")
        present.sort(
            key=lambda r: (
                r[order_by] if numeric or isinstance(r[order_by], bool) else str(r[order_by]),
                r["room_id"],
            )
        )
        if numeric:
            # Synapse lists the biggest rooms first unless dir=b.
            present.reverse()
        ordered = present + absent
        if backwards:
            ordered.reverse()
        page = ordered[start : start + limit]
        body: dict[str, Any] = {"rooms": page, "offset": start, "total_rooms": len(ordered)}
        if start + len(page) < len(ordered):
            body["next_batch"] = start + len(page)
        if start > 0:
            body["prev_batch"] = max(0, start - limit)
        return web.json_response(body)

    async def _room(self, request: web.Request) -> str:
        room_id = request.match_info["room_id"]
        if not room_id.startswith("!"):
            raise invalid_param(f"{room_id!r} is not a room id")
        if await self._storage.rooms.get_room(room_id) is None:
            raise not_found("Room not found")
        return room_id

    async def room_details(self, request: web.Request) -> web.Response:
        await self._access.require_admin(request)
        room_id = await self._room(request)
        entry = await self.summary(room_id, await self._public_ids(), details=True)
        assert entry is not None
        members: dict[str, str] = await self._storage.state.get_members(room_id)
        local = [u for u, m in members.items() if m == "join" and u.split(":", 1)[1] == self._server_name]
        devices = 0
        for user_id in local:
            devices += len(await self._storage.devices.list_devices(user_id))
        entry["joined_local_devices"] = devices
        return web.json_response(entry)

    async def members(self, request: web.Request) -> web.Response:
        await self._access.require_admin(request)
        room_id = await self._room(request)
        members: dict[str, str] = await self._storage.state.get_members(room_id)
        joined = sorted(u for u, m in members.items() if m == "join")
        return web.json_response({"members": joined, "total": len(joined)})

    async def state(self, request: web.Request) -> web.Response:
        await self._access.require_admin(request)
        room_id = await self._room(request)
        state_ids = await self._storage.state.get_current_state_ids(room_id)
        events = await self._storage.events.get_events(list(state_ids.values()))
        now = now_ms()
        ordered = sorted(events.values(), key=lambda e: (e.type, e.state_key or ""))
        return web.json_response({"state": [format_client_event(e, now) for e in ordered]})

    # -- blocking --------------------------------------------------------------------------------

    async def get_block(self, request: web.Request) -> web.Response:
        await self._access.require_admin(request)
        room_id = request.match_info["room_id"]
        by = await self._policy.blocked_by(room_id)
        return web.json_response({"block": True, "user_id": by} if by is not None else {"block": False})

    async def put_block(self, request: web.Request) -> web.Response:
        """A room may be blocked before we hold it (so that nobody here joins it), as in Synapse."""
        admin = await self._access.require_admin(request)
        room_id = request.match_info["room_id"]
        if not room_id.startswith("!"):
            raise invalid_param(f"{room_id!r} is not a room id")
        body = await read_json_body(request)
        block = body.get("block")
        if not isinstance(block, bool):
            raise invalid_param("'block' must be a boolean")
        await self._policy.set_room_blocked(room_id, admin.user_id, block)
        note(admin, "blocked room" if block else "unblocked room", room_id=room_id)
        return web.json_response({"block": block})

    # -- forward extremities ---------------------------------------------------------------------

    async def _extremities(self, room_id: str) -> list[dict[str, Any]]:
        db: Database = self._storage.db
        rows = await db.fetchall(
            "SELECT f.event_id, e.state_after_group, e.depth, e.stream_ordering FROM forward_extremities f"
            " JOIN events e ON e.event_id = f.event_id WHERE f.room_id = ?"
            " ORDER BY e.depth DESC, e.stream_ordering DESC",
            (room_id,),
        )
        return [
            {"event_id": r[0], "state_group": None if r[1] is None else int(r[1]), "depth": int(r[2])}
            for r in rows
        ]

    async def forward_extremities(self, request: web.Request) -> web.Response:
        await self._access.require_admin(request)
        room_id = await self._room(request)
        results = await self._extremities(room_id)
        return web.json_response({"count": len(results), "results": results})

    async def delete_forward_extremities(self, request: web.Request) -> web.Response:
        """Keep only the newest extremity (greatest depth, then the latest stored): the next local event
        then cites it alone, and the others stay in the DAG as ancestors nobody cites. For a room whose
        many extremities slow every new event down, as Synapse's same call."""
        admin = await self._access.require_admin(request)
        room_id = await self._room(request)
        db: Database = self._storage.db
        async with self._persister.room_lock(room_id):
            extremities = await self._extremities(room_id)
            drop = [e["event_id"] for e in extremities[1:]]
            if drop:
                async with db.transaction() as txn:
                    for event_id in drop:
                        await txn.execute(
                            "DELETE FROM forward_extremities WHERE room_id = ? AND event_id = ?",
                            (room_id, event_id),
                        )
        note(admin, "deleted forward extremities", room_id=room_id, count=len(drop))
        return web.json_response({"deleted": len(drop)})

    # -- event context ---------------------------------------------------------------------------

    async def context(self, request: web.Request) -> web.Response:
        await self._access.require_admin(request)
        room_id = await self._room(request)
        event_id = request.match_info["event_id"]
        pdu = await self._storage.events.get_event(event_id)
        meta = await self._storage.events.get_event_meta(event_id)
        if pdu is None or meta is None or pdu.room_id != room_id or meta.outlier:
            raise not_found("Event not found")
        limit = query_int(request, "limit", 10, 0, 100)
        before_n = limit // 2
        after_n = limit - before_n
        before, before_token = await self._storage.stream.paginate(room_id, meta.topo_before, "b", before_n)
        after, after_token = await self._storage.stream.paginate(room_id, meta.topo, "f", after_n)
        state_ids = await self._storage.state.get_state_ids_after(event_id)
        state_events = await self._storage.events.get_events(list(state_ids.values()))
        now = now_ms()
        return web.json_response(
            {
                "event": format_client_event(pdu, now),
                "events_before": [format_client_event(e, now) for e in before],
                "events_after": [format_client_event(e, now) for e in after],
                "start": str(before_token or meta.topo_before),
                "end": str(after_token or meta.topo),
                "state": [format_client_event(e, now) for e in state_events.values()],
            }
        )

    # -- messages --------------------------------------------------------------------------------

    async def messages(self, request: web.Request) -> web.Response:
        await self._access.require_admin(request)
        room_id = await self._room(request)
        raw_dir = request.query.get("dir", "f")
        if raw_dir not in ("f", "b"):
            raise invalid_param("'dir' must be 'f' or 'b'")
        direction: Literal["b", "f"] = "f" if raw_dir == "f" else "b"
        limit = query_int(request, "limit", 10, 0, 1000)
        tokens: dict[str, TopoToken | None] = {}
        for name in ("from", "to"):
            raw = request.query.get(name)
            try:
                tokens[name] = TopoToken.parse(raw) if raw else None
            except ValueError:
                raise invalid_param(f"invalid '{name}' token {raw!r}") from None
        events, end = await self._storage.stream.paginate(room_id, tokens["from"], direction, limit)
        to = tokens["to"]
        if to is not None:
            kept = []
            for event in events:
                meta = await self._storage.events.get_event_meta(event.event_id)
                position = meta.topo if meta is not None else None
                # Backwards stops at events at or before ``to``; forwards at events after it.
                if position is None or (position <= to if direction == "b" else position > to):
                    end = None
                    break
                kept.append(event)
            events = kept
        start = tokens["from"]
        if start is None:
            # Without ``from``: the edge the page starts at (after the newest event, or before the oldest).
            first = await self._storage.events.get_event_meta(events[0].event_id) if events else None
            start = (
                TopoToken(0, 0) if first is None else first.topo if direction == "b" else first.topo_before
            )
        now = now_ms()
        body: dict[str, Any] = {"chunk": [format_client_event(e, now) for e in events], "start": str(start)}
        if end is not None and len(events) == limit:
            body["end"] = str(end)
        return web.json_response(body)
