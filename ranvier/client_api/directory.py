"""Room aliases and the published room directory (CS "Room aliases", "Published room directory")."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from ..protocol.errors import InvalidIdentifier
from ..protocol.identifiers import parse_room_alias, server_of
from ..rooms.membership import MembershipError, MembershipService
from ..storage.protocols.composite import HasAliases, HasDirectory, HasRooms, HasState
from .auth import Authenticator
from .errors import MatrixError, forbidden, invalid_param, not_found
from .http_util import query_int, read_json_body, require_str

PREFIXES = ("/_matrix/client/v3", "/_matrix/client/r0")


class DirectoryApiStorage(HasRooms, HasState, HasAliases, HasDirectory, Protocol):
    """What client_api/directory.py asks of storage."""


class DirectoryHandlers:
    def __init__(
        self,
        storage: DirectoryApiStorage,
        authenticator: Authenticator,
        server_name: str,
        membership: MembershipService,
    ) -> None:
        self._storage = storage
        self._auth = authenticator
        self.server_name = server_name
        self._membership = membership
        # Appservices (ranvier.appservice): asked about unknown aliases in their namespaces; the rooms they
        # published for their networks (an "appservice id|network id" instance id, or None for all).
        self.alias_query: Callable[[str], Awaitable[bool]] | None = None
        self.network_rooms: Callable[[str | None], Awaitable[list[str]]] | None = None

    def routes(self) -> list[web.RouteDef]:
        r: list[web.RouteDef] = []
        for p in PREFIXES:
            r += [
                web.get(p + "/directory/room/{alias}", self.get_alias),
                web.put(p + "/directory/room/{alias}", self.put_alias),
                web.delete(p + "/directory/room/{alias}", self.delete_alias),
                web.get(p + "/rooms/{room}/aliases", self.room_aliases),
                web.get(p + "/directory/list/room/{room}", self.get_visibility),
                web.put(p + "/directory/list/room/{room}", self.put_visibility),
                web.get(p + "/publicRooms", self.public_rooms),
                web.post(p + "/publicRooms", self.public_rooms),
            ]
        return r

    def _alias(self, request: web.Request) -> str:
        alias = request.match_info["alias"]
        try:
            parse_room_alias(alias)
        except InvalidIdentifier as e:
            raise invalid_param(e.message) from None
        return alias

    async def get_alias(self, request: web.Request) -> web.Response:
        alias = self._alias(request)
        try:
            room_id, servers = await self._membership.resolve_room(alias)
        except MembershipError as e:
            # AS "Query Room Alias": an appservice may create it now; then the look-up is tried again.
            if e.errcode != "M_NOT_FOUND" or self.alias_query is None or not await self.alias_query(alias):
                raise MatrixError(e.status, e.errcode, e.message) from None
            try:
                room_id, servers = await self._membership.resolve_room(alias)
            except MembershipError as e2:
                raise MatrixError(e2.status, e2.errcode, e2.message) from None
        if not servers:
            servers = sorted(await self._storage.state.get_joined_servers(room_id)) or [self.server_name]
        return web.json_response({"room_id": room_id, "servers": servers})

    async def put_alias(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        alias = self._alias(request)
        if server_of(alias) != self.server_name:
            raise invalid_param("Room aliases must be on this server")
        owner = self._auth.appservices.exclusive_owner_of_alias(alias)
        service = requester.appservice
        if (owner is not None and owner is not service) or (
            service is not None and not service.is_interested_in_alias(alias)
        ):
            raise MatrixError(400, "M_EXCLUSIVE", f"{alias} is in an application service's namespace")
        body = await read_json_body(request)
        room_id = require_str(body, "room_id")
        if await self._storage.rooms.get_room_version(room_id) is None:
            raise not_found(f"Unknown room {room_id}")
        if not await self._storage.aliases.create_alias(alias, room_id, requester.user_id):
            raise MatrixError(409, "M_UNKNOWN", f"Room alias {alias} already exists")
        return web.json_response({})

    async def delete_alias(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        alias = self._alias(request)
        record = await self._storage.aliases.get_alias(alias)
        if record is None:
            raise not_found(f"Room alias {alias} not found")
        if record.creator != requester.user_id and not requester.is_admin:
            raise forbidden("Only the alias's creator or an admin may delete it")
        await self._storage.aliases.delete_alias(alias)
        return web.json_response({})

    async def room_aliases(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        room_id = request.match_info["room"]
        membership = await self._storage.state.get_membership(room_id, requester.user_id)
        if membership is None or membership[0] != "join":
            raise forbidden("You are not in this room")
        return web.json_response({"aliases": await self._storage.aliases.aliases_for_room(room_id)})

    async def get_visibility(self, request: web.Request) -> web.Response:
        room_id = request.match_info["room"]
        if await self._storage.rooms.get_room_version(room_id) is None:
            raise not_found(f"Unknown room {room_id}")
        return web.json_response({"visibility": await self._storage.directory.get_visibility(room_id)})

    async def put_visibility(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        room_id = request.match_info["room"]
        body = await read_json_body(request)
        visibility = body.get("visibility", "public")
        if visibility not in ("public", "private"):
            raise invalid_param("visibility must be 'public' or 'private'")
        membership = await self._storage.state.get_membership(room_id, requester.user_id)
        if (membership is None or membership[0] != "join") and not requester.is_admin:
            raise forbidden("You are not in this room")
        await self._storage.directory.set_visibility(room_id, visibility)
        return web.json_response({})

    async def public_rooms(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = {}
        if request.method == "POST":
            await self._auth.require_user(request)
            body = await read_json_body(request, allow_empty=True)
        raw_limit = body.get("limit")
        limit: int = (
            # Clamped like the query form: a limit of 0 or less would hand out a next_batch that never
            # advances, and clients would page forever.
            max(1, min(500, raw_limit))
            if isinstance(raw_limit, int) and not isinstance(raw_limit, bool)
            else query_int(request, "limit", 100, 1, 500)
        )
        since = body.get("since") or request.query.get("since")
        search = ""
        if isinstance(body.get("filter"), dict) and isinstance(
            body["filter"].get("generic_search_term"), str
        ):
            search = body["filter"]["generic_search_term"].lower()
        room_ids = set(await self._storage.directory.public_room_ids())
        instance = body.get("third_party_instance_id")
        if self.network_rooms is not None:
            # CS "POST /publicRooms": one network's rooms, or every network's with the main list.
            if isinstance(instance, str):
                room_ids = set(await self.network_rooms(instance))
            elif body.get("include_all_networks") is True:
                room_ids |= set(await self.network_rooms(None))
        entries = []
        for room_id in sorted(room_ids):
            entry = await self._room_summary(room_id)
            if entry is None:
                continue
            text = " ".join(str(entry.get(k, "")) for k in ("name", "topic", "canonical_alias")).lower()
            if search and search not in text:
                continue
            entries.append(entry)
        entries.sort(key=lambda e: (-e["num_joined_members"], e["room_id"]))
        # ASCII digits only: str.isdigit() is also true of "²", which int() refuses.
        start = int(since) if isinstance(since, str) and since.isascii() and since.isdigit() else 0
        page = entries[start : start + limit]
        response: dict[str, Any] = {"chunk": page, "total_room_count_estimate": len(entries)}
        if start + limit < len(entries):
            response["next_batch"] = str(start + limit)
        if start > 0:
            response["prev_batch"] = str(max(0, start - limit))
        return web.json_response(response)

    async def _room_summary(self, room_id: str) -> dict[str, Any] | None:
        state = self._storage.state
        joined = await state.get_joined_users(room_id)
        entry: dict[str, Any] = {
            "room_id": room_id,
            "num_joined_members": len(joined),
            "world_readable": False,
            "guest_can_join": False,
        }
        for event_type, key, field in (
            ("m.room.name", "name", "name"),
            ("m.room.topic", "topic", "topic"),
            ("m.room.canonical_alias", "alias", "canonical_alias"),
            ("m.room.avatar", "url", "avatar_url"),
            ("m.room.join_rules", "join_rule", "join_rule"),
        ):
            pdu = await state.get_current_state_event(room_id, event_type, "")
            if pdu is not None and isinstance(pdu.content.get(key), str):
                entry[field] = pdu.content[key]
        hv = await state.get_current_state_event(room_id, "m.room.history_visibility", "")
        entry["world_readable"] = hv is not None and hv.content.get("history_visibility") == "world_readable"
        ga = await state.get_current_state_event(room_id, "m.room.guest_access", "")
        entry["guest_can_join"] = ga is not None and ga.content.get("guest_access") == "can_join"
        return entry
