"""Room endpoints: create, membership, send, state, redact, single events, members.

CS "Rooms", "Room membership", "Sending events to a room", "Getting events for a room".
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from ..clock import now_ms
from ..federation.client import DestinationUnreachable, FederationError
from ..protocol.errors import AuthRejected, ProtocolError, UnsupportedRoomVersion
from ..protocol.events import Pdu
from ..protocol.identifiers import is_valid_user_id, server_of
from ..protocol.room_versions import get_room_version
from ..protocol.visibility import HistoryVisibility
from ..rooms.create_room_plan import CreateRoomError, plan_room
from ..rooms.local_events import LocalEventCreator, RoomNotFound
from ..rooms.membership import MembershipError, MembershipService
from ..rooms.visibility import HistoryVisibilityFilter
from ..storage.protocols.composite import (
    HasAliases,
    HasClientTxns,
    HasDirectory,
    HasRooms,
    HasState,
    HasUsers,
)
from .account_data import forget_room, forgotten_event
from .auth import Authenticator, Requester
from .bundled import BundledAggregations, BundledStorage
from .errors import MatrixError, bad_json, forbidden, invalid_param, not_found
from .event_format import format_client_event
from .http_util import optional_str, read_json_body, require_str
from .relations import RelationsStorage, check_new_relation

PREFIXES = ("/_matrix/client/v3", "/_matrix/client/r0")


class RoomsStorage(
    BundledStorage,
    RelationsStorage,
    HasRooms,
    HasState,
    HasUsers,
    HasClientTxns,
    HasAliases,
    HasDirectory,
    Protocol,
):
    """What client_api/rooms.py asks of storage."""


def _room_error(e: Exception) -> MatrixError:
    if isinstance(e, RoomNotFound):
        return not_found(f"Unknown room {e}")
    if isinstance(e, MembershipError):
        return MatrixError(e.status, e.errcode, e.message)
    if isinstance(e, AuthRejected):
        return forbidden(e.message)
    raise e


def _remote_invite_error(e: FederationError | ProtocolError, target: str) -> MatrixError:
    """An invite the invitee's server did not countersign, should the rooms layer let the failure through
    (rooms.remote_join maps these itself). Synapse answers 500 here (synapse#2047); a client must get a
    Matrix error naming the server instead, with the statuses the rooms layer uses for joins and invites:
    no answer (the server does not exist, refuses connections, times out) or an unusable one is 502
    M_UNKNOWN (the failure is between servers, nothing the client sent); a refusal the invitee's server
    states (400/403/404 with a Matrix errcode) is passed on.
    """
    server = server_of(target)
    if isinstance(e, DestinationUnreachable):
        return MatrixError(
            502, "M_UNKNOWN", f"could not invite {target}: {server} could not be reached ({e})"
        )
    if isinstance(e, FederationError):
        if e.status in (400, 403, 404) and e.errcode and e.errcode.startswith("M_"):
            return MatrixError(e.status, e.errcode, f"{server} refused to invite {target}: {e.message[:300]}")
        return MatrixError(
            502, "M_UNKNOWN", f"could not invite {target}: {server} answered {e.status} {e.message[:300]}"
        )
    return MatrixError(502, "M_UNKNOWN", f"{server} answered the invite of {target} with an invalid event")


class _TxnIdTaken(Exception):
    """The client's transaction id is on record for another event already: the one to answer with."""

    def __init__(self, event_id: str) -> None:
        super().__init__(event_id)
        self.event_id = event_id


class RoomHandlers:
    def __init__(
        self,
        storage: RoomsStorage,
        creator: LocalEventCreator,
        membership: MembershipService,
        authenticator: Authenticator,
        server_name: str,
        default_room_version: str,
        visibility: HistoryVisibilityFilter | None = None,
        encrypt_by_default: str = "off",
    ) -> None:
        self._encrypt_by_default = encrypt_by_default
        self._storage = storage
        self._visibility = visibility or HistoryVisibilityFilter(storage)
        self._bundled = BundledAggregations(storage, self._visibility)
        self._creator = creator
        self._membership = membership
        self._auth = authenticator
        self.server_name = server_name
        self.default_room_version = default_room_version
        self._txn_locks: dict[tuple[str, str, str], asyncio.Lock] = {}
        # Appservices (ranvier.appservice): asked about an unknown local user in their namespaces
        # before an invite names it (AS "Query User"), so the bridge can create it first.
        self.user_query: Callable[[str], Awaitable[bool]] | None = None
        # Set by the app: waits (bounded) for a partial-state room's full state (MSC3706). /members,
        # /joined_members and /state wait, as in Synapse, rather than answer the few members the join carried.
        # Returns whether the room was partial (then what was read before the wait is read again).
        self.wait_full_state: Callable[[str], Awaitable[bool]] | None = None

    def routes(self) -> list[web.RouteDef]:
        r: list[web.RouteDef] = []
        for p in PREFIXES:
            r += [
                web.post(p + "/createRoom", self.create_room),
                web.post(p + "/join/{room}", self.join),
                web.post(p + "/rooms/{room}/join", self.join),
                web.post(p + "/rooms/{room}/leave", self.leave),
                web.post(p + "/rooms/{room}/forget", self.forget),
                web.post(p + "/rooms/{room}/invite", self.invite),
                web.post(p + "/rooms/{room}/kick", self.kick),
                web.post(p + "/rooms/{room}/ban", self.ban),
                web.post(p + "/rooms/{room}/unban", self.unban),
                web.get(p + "/joined_rooms", self.joined_rooms),
                web.put(p + "/rooms/{room}/send/{type}/{txn}", self.send),
                web.get(p + "/rooms/{room}/state", self.get_state),
                # The empty state key is written either way: ``state/{type}`` or ``state/{type}/`` (the
                # spec's ``/state/{eventType}/{stateKey}`` with an empty key; mautrix sends the slash).
                web.get(p + "/rooms/{room}/state/{type}", self.get_state_event),
                web.get(p + "/rooms/{room}/state/{type}/", self.get_state_event),
                web.get(p + "/rooms/{room}/state/{type}/{key}", self.get_state_event),
                web.put(p + "/rooms/{room}/state/{type}", self.put_state_event),
                web.put(p + "/rooms/{room}/state/{type}/", self.put_state_event),
                web.put(p + "/rooms/{room}/state/{type}/{key}", self.put_state_event),
                web.put(p + "/rooms/{room}/redact/{event}/{txn}", self.redact),
                web.get(p + "/rooms/{room}/event/{event}", self.get_event),
                web.get(p + "/rooms/{room}/members", self.members),
                web.get(p + "/rooms/{room}/joined_members", self.joined_members),
            ]
        return r

    # -- helpers ------------------------------------------------------------------------------------

    async def _require_joined(self, room_id: str, user_id: str) -> None:
        if await self._storage.rooms.get_room_version(room_id) is None:
            raise forbidden(f"You are not in room {room_id}")  # do not reveal whether the room exists
        membership = await self._storage.state.get_membership(room_id, user_id)
        if membership is None or membership[0] != "join":
            raise forbidden(f"You are not joined to room {room_id}")

    async def _readable_state(self, room_id: str, user_id: str) -> dict[tuple[str, str], str]:
        """The room state a user may read (CS "GET /rooms/{roomId}/state" and ``/members``): the current
        state for members and, in world_readable rooms, for anyone (room previews); for former members
        (left, kicked, banned) the state when they left; 403 for everyone else, and for a forgotten room.
        """
        if await self._storage.rooms.get_room_version(room_id) is None:
            raise forbidden(f"You are not in room {room_id}")  # do not reveal whether the room exists
        membership = await self._storage.state.get_membership(room_id, user_id)
        if membership is not None and membership[0] == "join":
            return dict(await self._storage.state.get_current_state_ids(room_id))
        if await self._visibility.current_visibility(room_id) is HistoryVisibility.WORLD_READABLE:
            return dict(await self._storage.state.get_current_state_ids(room_id))
        if (
            membership is not None
            and membership[0] in ("leave", "ban")
            and await forgotten_event(self._storage, user_id, room_id) != membership[1]
        ):
            return dict(await self._storage.state.get_state_ids_after(membership[1]))
        raise forbidden(f"You are not joined to room {room_id}")

    async def _idempotent(self, requester: Requester, path: str, txn_id: str, create: Any) -> str:
        """Run ``create`` once per (user, device, path, txn id); replays return the first event id.

        ``create(txn_hook)`` persists its event with ``txn_hook`` inside the persist transaction: the
        transaction id is recorded in the same commit as the event, so no crash can leave an event whose
        retry would create a second one. Should the id be on record already, the hook refuses and the
        event rolls back."""
        device = requester.device_id or ""
        key = (requester.user_id, device, path + txn_id)
        lock = self._txn_locks.setdefault(key, asyncio.Lock())
        store = self._storage.client_txns
        try:
            async with lock:
                existing = await store.get_event_id(requester.user_id, device, path, txn_id)
                if existing is not None:
                    return str(existing)

                async def record(txn: Any, room_id: str, written: list[tuple[Any, int]]) -> None:
                    for item, _ in written:
                        stored = await store.store_event_id_txn(
                            txn, requester.user_id, device, path, txn_id, item.pdu.event_id
                        )
                        if stored != item.pdu.event_id:
                            raise _TxnIdTaken(stored)

                try:
                    pdu: Pdu = await create(record)
                except _TxnIdTaken as taken:
                    return taken.event_id
        finally:
            if not lock.locked() and self._txn_locks.get(key) is lock:
                del self._txn_locks[key]
        return pdu.event_id

    # -- creation and membership -----------------------------------------------------------------

    async def create_room(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        body = await read_json_body(request, allow_empty=True)
        version_id = body.get("room_version", self.default_room_version)
        try:
            rv = get_room_version(version_id)
        except UnsupportedRoomVersion as e:
            raise MatrixError(400, "M_UNSUPPORTED_ROOM_VERSION", e.message) from None
        try:
            plan = plan_room(body, requester.user_id, rv, self.server_name, self._encrypt_by_default)
        except CreateRoomError as e:
            raise MatrixError(400, e.errcode, e.message) from None
        for invitee in plan.invites:
            if not is_valid_user_id(invitee):
                raise invalid_param(f"invalid user id in invite: {invitee!r}")
        alias = None
        if plan.alias_localpart is not None:
            alias = f"#{plan.alias_localpart}:{self.server_name}"
            if await self._storage.aliases.get_alias(alias) is not None:
                raise MatrixError(400, "M_ROOM_IN_USE", f"Room alias {alias} already exists")
            # AS "Server admin style permissions": aliases in an exclusive namespace are the appservice's.
            owner = self._auth.appservices.exclusive_owner_of_alias(alias)
            if owner is not None and owner is not requester.appservice:
                raise MatrixError(400, "M_EXCLUSIVE", f"{alias} is in an application service's namespace")
        hint = None if rv.room_id_from_create_event else f"!{secrets.token_urlsafe(18)}:{self.server_name}"
        try:
            room_id = await self._creator.create_room_events(
                hint,
                rv,
                requester.user_id,
                plan.create_content,
                plan.state,
                creator_profile=await self._membership.profile_content(requester.user_id),
            )
        except AuthRejected as e:
            raise bad_json(f"initial state is not allowed: {e.message}") from None
        if alias is not None:
            await self._storage.aliases.create_alias(alias, room_id, requester.user_id)
        if plan.publish:
            await self._storage.directory.set_visibility(room_id, "public")
        for invitee in plan.invites:
            try:
                await self._membership.invite(requester.user_id, room_id, invitee)
            except (MembershipError, AuthRejected) as e:
                raise _room_error(e) from None
            except (FederationError, ProtocolError) as e:
                raise _remote_invite_error(e, invitee) from None
        return web.json_response({"room_id": room_id})

    async def join(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        body = await read_json_body(request, allow_empty=True)
        via = request.query.getall("via", []) + request.query.getall("server_name", [])
        try:
            room_id = await self._membership.join(
                requester.user_id, request.match_info["room"], via, optional_str(body, "reason")
            )
        except (RoomNotFound, MembershipError, AuthRejected) as e:
            raise _room_error(e) from None
        return web.json_response({"room_id": room_id})

    async def leave(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        body = await read_json_body(request, allow_empty=True)
        try:
            await self._membership.leave(
                requester.user_id, request.match_info["room"], optional_str(body, "reason")
            )
        except (RoomNotFound, MembershipError, AuthRejected) as e:
            raise _room_error(e) from None
        return web.json_response({})

    async def forget(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        room_id = request.match_info["room"]
        membership = await self._storage.state.get_membership(room_id, requester.user_id)
        if membership is not None and membership[0] in ("join", "invite", "knock"):
            raise MatrixError(400, "M_UNKNOWN", "You must leave the room before forgetting it")
        if membership is not None:
            # Remembered as the membership event forgotten at; /sync leaves the room out while it lasts.
            await forget_room(self._storage, requester.user_id, room_id, membership[1])
        return web.json_response({})

    async def invite(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        body = await read_json_body(request)
        target = require_str(body, "user_id")
        if not is_valid_user_id(target):
            raise invalid_param(f"invalid user id {target!r}")
        room_id = request.match_info["room"]
        await self._require_joined(room_id, requester.user_id)
        if (
            self.user_query is not None
            and server_of(target) == self.server_name
            and not await self._storage.users.user_exists(target)
        ):
            await self.user_query(target)
        try:
            await self._membership.invite(requester.user_id, room_id, target, optional_str(body, "reason"))
        except (RoomNotFound, MembershipError, AuthRejected) as e:
            raise _room_error(e) from None
        except (FederationError, ProtocolError) as e:
            raise _remote_invite_error(e, target) from None
        return web.json_response({})

    async def _set_membership(self, request: web.Request, membership: str) -> web.Response:
        requester = await self._auth.require_user(request)
        body = await read_json_body(request)
        target = require_str(body, "user_id")
        if not is_valid_user_id(target):
            raise invalid_param(f"invalid user id {target!r}")
        room_id = request.match_info["room"]
        await self._require_joined(room_id, requester.user_id)
        if membership == "unban":
            current = await self._storage.state.get_membership(room_id, target)
            if current is None or current[0] != "ban":
                raise forbidden(f"{target} is not banned")
            membership = "leave"
        elif membership == "kick":
            current = await self._storage.state.get_membership(room_id, target)
            if current is None or current[0] not in ("join", "invite", "knock"):
                raise forbidden(f"{target} is not in the room")
            membership = "leave"
        try:
            await self._membership.set_membership(
                requester.user_id, room_id, target, membership, optional_str(body, "reason")
            )
        except (RoomNotFound, MembershipError, AuthRejected) as e:
            raise _room_error(e) from None
        return web.json_response({})

    async def kick(self, request: web.Request) -> web.Response:
        return await self._set_membership(request, "kick")

    async def ban(self, request: web.Request) -> web.Response:
        return await self._set_membership(request, "ban")

    async def unban(self, request: web.Request) -> web.Response:
        return await self._set_membership(request, "unban")

    async def joined_rooms(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        rooms = await self._storage.state.get_rooms_for_user(requester.user_id)
        return web.json_response({"joined_rooms": sorted(r for r, m in rooms.items() if m == "join")})

    # -- sending -------------------------------------------------------------------------------------

    async def send(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        room_id = request.match_info["room"]
        event_type = request.match_info["type"]
        content = await read_json_body(request, allow_empty=True)
        await self._require_joined(room_id, requester.user_id)
        ts = _massaged_ts(request, requester)

        async def create(txn_hook: Any) -> Pdu:
            await check_new_relation(self._storage, room_id, requester.user_id, event_type, content)
            try:
                return await self._creator.send(
                    room_id, requester.user_id, event_type, content, txn_hook=txn_hook, origin_server_ts=ts
                )
            except (RoomNotFound, AuthRejected) as e:
                raise _room_error(e) from None

        event_id = await self._idempotent(
            requester, f"send/{room_id}/{event_type}/", request.match_info["txn"], create
        )
        return web.json_response({"event_id": event_id})

    async def redact(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        room_id = request.match_info["room"]
        target = request.match_info["event"]
        body = await read_json_body(request, allow_empty=True)
        await self._require_joined(room_id, requester.user_id)
        content: dict[str, Any] = {}
        reason = optional_str(body, "reason")
        if reason is not None:
            content["reason"] = reason

        async def create(txn_hook: Any) -> Pdu:
            try:
                return await self._creator.send(
                    room_id, requester.user_id, "m.room.redaction", content, redacts=target, txn_hook=txn_hook
                )
            except (RoomNotFound, AuthRejected) as e:
                raise _room_error(e) from None

        event_id = await self._idempotent(requester, f"redact/{room_id}/", request.match_info["txn"], create)
        return web.json_response({"event_id": event_id})

    # -- state ---------------------------------------------------------------------------------------

    async def get_state(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        room_id = request.match_info["room"]
        state = await self._readable_state(room_id, requester.user_id)
        # The whole state of a partial-state room waits for its members, as /members does (and Synapse).
        if self.wait_full_state is not None and await self.wait_full_state(room_id):
            state = await self._readable_state(room_id, requester.user_id)
        events = await self._storage.events.get_events(list(state.values()))
        now = now_ms()
        return web.json_response([format_client_event(events[e], now) for e in state.values() if e in events])

    async def get_state_event(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        room_id = request.match_info["room"]
        state = await self._readable_state(room_id, requester.user_id)
        event_type = request.match_info["type"]
        state_key = request.match_info.get("key", "")
        event_id = state.get((event_type, state_key))
        pdu = await self._storage.events.get_event(event_id) if event_id is not None else None
        if pdu is None:
            raise not_found(f"No {event_type} state with key {state_key!r} in the room")
        if request.query.get("format") == "event":
            return web.json_response(format_client_event(pdu, now_ms()))
        return web.json_response(pdu.content)

    async def put_state_event(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        room_id = request.match_info["room"]
        event_type = request.match_info["type"]
        state_key = request.match_info.get("key", "")
        content = await read_json_body(request, allow_empty=True)
        await self._require_joined(room_id, requester.user_id)
        if event_type == "m.room.member":
            # Membership has its own endpoints with their own checks; allow only own profile updates here.
            membership = content.get("membership")
            if state_key != requester.user_id or membership != "join":
                raise forbidden("Use the membership endpoints to change membership")
        current = await self._storage.state.get_current_state_event(room_id, event_type, state_key)
        if current is not None and current.content == content and current.sender == requester.user_id:
            return web.json_response({"event_id": current.event_id})  # CS: identical state is not re-sent
        ts = _massaged_ts(request, requester)
        try:
            pdu = await self._creator.send(
                room_id, requester.user_id, event_type, content, state_key=state_key, origin_server_ts=ts
            )
        except (RoomNotFound, AuthRejected) as e:
            raise _room_error(e) from None
        return web.json_response({"event_id": pdu.event_id})

    # -- reading -------------------------------------------------------------------------------------

    async def get_event(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        room_id = request.match_info["room"]
        pdu = await self._storage.events.get_event(request.match_info["event"])
        if pdu is None or pdu.room_id != room_id:
            raise not_found("Event not found")
        meta = await self._storage.events.get_event_meta(pdu.event_id)
        if meta is None or meta.outlier or meta.soft_failed:
            raise not_found("Event not found")
        # CS "GET /rooms/{roomId}/event/{eventId}": 404 when "you do not have permission to read this
        # event", decided by history visibility (former members and world_readable readers included).
        if not await self._visibility.user_may_see(room_id, requester.user_id, pdu):
            raise not_found("Event not found")
        # With its bundled aggregations (CS "Aggregations of child events").
        served = await self._bundled.serialize(room_id, requester.user_id, [pdu], now_ms())
        return web.json_response(served[0])

    async def members(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        room_id = request.match_info["room"]
        state = await self._readable_state(room_id, requester.user_id)
        if self.wait_full_state is not None and await self.wait_full_state(room_id):
            state = await self._readable_state(room_id, requester.user_id)
        membership_filter = request.query.get("membership")
        not_membership = request.query.get("not_membership")
        ids = [e for (t, _), e in state.items() if t == "m.room.member"]
        events = await self._storage.events.get_events(ids)
        now = now_ms()
        chunk = []
        for pdu in events.values():
            if membership_filter and pdu.membership != membership_filter:
                continue
            if not_membership and pdu.membership == not_membership:
                continue
            chunk.append(format_client_event(pdu, now))
        return web.json_response({"chunk": chunk})

    async def joined_members(self, request: web.Request) -> web.Response:
        requester = await self._auth.require_user(request)
        room_id = request.match_info["room"]
        await self._require_joined(room_id, requester.user_id)
        if self.wait_full_state is not None:
            await self.wait_full_state(room_id)
        joined = await self._storage.state.get_joined_users(room_id)
        state = await self._storage.state.get_current_state_ids(room_id)
        events = await self._storage.events.get_events([state[("m.room.member", u)] for u in joined])
        result = {}
        for pdu in events.values():
            result[pdu.state_key] = {
                "display_name": pdu.content.get("displayname"),
                "avatar_url": pdu.content.get("avatar_url"),
            }
        return web.json_response({"joined": result})


def _massaged_ts(request: web.Request, requester: Requester) -> int | None:
    """AS "Timestamp massaging": an appservice's ``?ts=`` (ms since the epoch) on send and state; others'
    is ignored. A value ``origin_server_ts`` cannot hold is a bad request."""
    raw = request.query.get("ts")
    if raw is None or requester.appservice is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or int(raw) > 2**53 - 1:
        raise invalid_param("'ts' must be a non-negative integer of milliseconds")
    return int(raw)
