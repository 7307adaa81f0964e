"""Deleting a room, in the shape of Synapse's admin API (server admins only):

- ``DELETE /_synapse/admin/v2/rooms/{roomId}`` (``block``, ``purge`` (default true), ``force_purge``,
  ``new_room_user_id``, ``room_name``, ``message``): answered at once with a ``delete_id``; the work runs
  in the background, its progress at ``GET /_synapse/admin/v2/rooms/{roomId}/delete_status`` and
  ``GET /_synapse/admin/v2/rooms/delete_status/{delete_id}`` (``shutting_down``, ``purging``,
  ``complete`` or ``failed``). Statuses are kept in memory (lost on restart, as in Synapse);
- ``DELETE /_synapse/admin/v1/rooms/{roomId}``: the same, waited for, answering the shutdown's result.

The shutdown: the room is blocked when asked; with ``new_room_user_id`` a public room is made by that
(local) user, named ``room_name``, with ``message`` posted in it; every local member (joined, invited or
knocking) leaves the old room and the joined ones are moved to the new room; the room's local aliases are
removed and it leaves the public room directory. The purge then removes everything we hold about the room
(``storage.sql.purge``); it is refused while a local user is still joined, unless ``force_purge``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from ..client_api.errors import MatrixError, invalid_param, not_found
from ..client_api.http_util import optional_str, read_json_body
from ..protocol.room_versions import get_room_version
from ..rooms.create_room_plan import plan_room
from ..rooms.local_events import LocalEventCreator
from ..rooms.membership import MembershipService
from ..storage.protocols.composite import (
    HasAliases,
    HasDb,
    HasDirectory,
    HasEvents,
    HasRooms,
    HasState,
    HasUsers,
)
from ..storage.sql.purge import purge_room
from .access import AdminAccess, note
from .policy import AdminPolicy

logger = logging.getLogger(__name__)

V1 = "/_synapse/admin/v1/rooms"
V2 = "/_synapse/admin/v2/rooms"
DEFAULT_ROOM_NAME = "Content Violation Notification"
DEFAULT_MESSAGE = (
    "Sharing illegal content on this server is not permitted and rooms in violation will be blocked."
)
MAX_KEPT_STATUSES = 1000


class RoomDeleteStorage(HasDb, HasRooms, HasEvents, HasState, HasUsers, HasAliases, HasDirectory, Protocol):
    """What admin/room_delete.py asks of storage."""


class PurgeRefused(Exception):
    """Local users are still joined and ``force_purge`` was not given: the caller's to change."""


@dataclass
class Deletion:
    delete_id: str
    room_id: str
    status: str = "shutting_down"
    error: str | None = None
    refused: bool = False
    shutdown_room: dict[str, Any] = field(
        default_factory=lambda: {
            "kicked_users": [],
            "failed_to_kick_users": [],
            "local_aliases": [],
            "new_room_id": None,
        }
    )

    def to_json(self, with_id: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"status": self.status, "shutdown_room": self.shutdown_room}
        if with_id:
            body["delete_id"] = self.delete_id
        if self.error is not None:
            body["error"] = self.error
        return body


@dataclass(frozen=True)
class DeleteRequest:
    block: bool
    purge: bool
    force_purge: bool
    new_room_user_id: str | None
    room_name: str
    message: str


class RoomDeleter:
    def __init__(
        self,
        storage: RoomDeleteStorage,
        access: AdminAccess,
        policy: AdminPolicy,
        creator: LocalEventCreator,
        membership: MembershipService,
        server_name: str,
        room_version: str,
    ) -> None:
        self._storage = storage
        self._access = access
        self._policy = policy
        self._creator = creator
        self._membership = membership
        self._server_name = server_name
        self._room_version = room_version
        self._deletions: dict[str, Deletion] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Deletes the room's rows, returns how many events it held. Replaced with workers by one that
        # hands the purge to the room's persister (ranvier.workers.purge_forwarding).
        self.purge: Callable[[str], Awaitable[int]] = self._purge_here

    async def _purge_here(self, room_id: str) -> int:
        return len(await purge_room(self._storage.db, self._storage, room_id))

    def routes(self) -> list[web.RouteDef]:
        return [
            web.delete(V2 + "/{room_id}", self.delete_v2),
            web.get(V2 + "/{room_id}/delete_status", self.status_for_room),
            web.get(V2 + "/delete_status/{delete_id}", self.status_by_id),
            web.delete(V1 + "/{room_id}", self.delete_v1),
        ]

    async def _request(self, request: web.Request) -> tuple[str, DeleteRequest]:
        room_id = request.match_info["room_id"]
        if not room_id.startswith("!"):
            raise invalid_param(f"{room_id!r} is not a room id")
        body = await read_json_body(request, allow_empty=True)
        flags = {}
        for key, default in (("block", False), ("purge", True), ("force_purge", False)):
            value = body.get(key, default)
            if not isinstance(value, bool):
                raise invalid_param(f"'{key}' must be a boolean")
            flags[key] = value
        new_user = optional_str(body, "new_room_user_id")
        if new_user is not None:
            self._access.require_local_user_id(new_user)
        parsed = DeleteRequest(
            block=flags["block"],
            purge=flags["purge"],
            force_purge=flags["force_purge"],
            new_room_user_id=new_user,
            room_name=optional_str(body, "room_name") or DEFAULT_ROOM_NAME,
            message=optional_str(body, "message") or DEFAULT_MESSAGE,
        )
        if await self._storage.rooms.get_room(room_id) is None and not parsed.block:
            raise not_found(f"Unknown room id {room_id}")
        if any(
            d.room_id == room_id and d.status in ("shutting_down", "purging")
            for d in self._deletions.values()
        ):
            raise MatrixError(400, "M_UNKNOWN", "History purge already in progress for this room")
        return room_id, parsed

    def _new_deletion(self, room_id: str) -> Deletion:
        if len(self._deletions) >= MAX_KEPT_STATUSES:
            for old in [d for d in self._deletions.values() if d.status in ("complete", "failed")][:100]:
                del self._deletions[old.delete_id]
        deletion = Deletion(secrets.token_urlsafe(12), room_id)
        self._deletions[deletion.delete_id] = deletion
        return deletion

    async def delete_v2(self, request: web.Request) -> web.Response:
        admin = await self._access.require_admin(request)
        room_id, parsed = await self._request(request)
        deletion = self._new_deletion(room_id)
        note(admin, "deleting room", room_id=room_id, delete_id=deletion.delete_id, purge=parsed.purge)
        task = asyncio.create_task(self._run(deletion, admin.user_id, parsed), name=f"delete {room_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return web.json_response({"delete_id": deletion.delete_id})

    async def delete_v1(self, request: web.Request) -> web.Response:
        admin = await self._access.require_admin(request)
        room_id, parsed = await self._request(request)
        deletion = self._new_deletion(room_id)
        note(admin, "deleting room", room_id=room_id, delete_id=deletion.delete_id, purge=parsed.purge)
        await self._run(deletion, admin.user_id, parsed)
        if deletion.status == "failed":
            status = 400 if deletion.refused else 500
            raise MatrixError(status, "M_UNKNOWN", deletion.error or "Room deletion failed")
        return web.json_response(deletion.shutdown_room)

    async def status_for_room(self, request: web.Request) -> web.Response:
        await self._access.require_admin(request)
        room_id = request.match_info["room_id"]
        found = [d.to_json(with_id=True) for d in self._deletions.values() if d.room_id == room_id]
        if not found:
            raise not_found("No delete task for room_id")
        return web.json_response({"results": found})

    async def status_by_id(self, request: web.Request) -> web.Response:
        await self._access.require_admin(request)
        deletion = self._deletions.get(request.match_info["delete_id"])
        if deletion is None:
            raise not_found("delete id not found")
        return web.json_response(deletion.to_json(with_id=False))

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- the work ---------------------------------------------------------------------------------

    async def _run(self, deletion: Deletion, admin_id: str, parsed: DeleteRequest) -> None:
        room_id = deletion.room_id
        try:
            await self._shutdown(deletion, admin_id, parsed)
            if parsed.purge and await self._storage.rooms.get_room(room_id) is not None:
                joined: dict[str, str] = await self._storage.state.get_members(room_id)
                local = [u for u, m in joined.items() if m == "join" and self._is_local(u)]
                if local and not parsed.force_purge:
                    raise PurgeRefused(f"Users are still joined to this room: {', '.join(sorted(local))}")
                deletion.status = "purging"
                purged = await self.purge(room_id)
                logger.info("purged room %s (%d events)", room_id, purged)
            deletion.status = "complete"
        except PurgeRefused as e:
            deletion.status, deletion.error, deletion.refused = "failed", str(e), True
        except Exception as e:
            logger.exception("deleting room %s failed", room_id)
            deletion.status = "failed"
            deletion.error = str(e)

    def _is_local(self, user_id: str) -> bool:
        return user_id.split(":", 1)[1] == self._server_name

    async def _shutdown(self, deletion: Deletion, admin_id: str, parsed: DeleteRequest) -> None:
        room_id, result = deletion.room_id, deletion.shutdown_room
        if parsed.block:
            await self._policy.set_room_blocked(room_id, admin_id, True)
        if await self._storage.rooms.get_room(room_id) is None:
            return  # blocked before we ever held it: nothing else to do
        new_room_id = None
        if parsed.new_room_user_id is not None:
            new_room_id = await self._make_new_room(parsed)
            result["new_room_id"] = new_room_id
        members: dict[str, str] = await self._storage.state.get_members(room_id)
        for user_id, membership in sorted(members.items()):
            if not self._is_local(user_id) or membership not in ("join", "invite", "knock"):
                continue
            try:
                await self._membership.leave(user_id, room_id)
                if new_room_id is not None and membership == "join":
                    await self._membership.join(user_id, new_room_id)
                result["kicked_users"].append(user_id)
            except Exception as e:
                logger.warning("could not remove %s from %s: %s", user_id, room_id, e)
                result["failed_to_kick_users"].append(user_id)
        for alias in await self._storage.aliases.aliases_for_room(room_id):
            if alias.split(":", 1)[1] == self._server_name and await self._storage.aliases.delete_alias(
                alias
            ):
                result["local_aliases"].append(alias)
        await self._storage.directory.set_visibility(room_id, "private")

    async def _make_new_room(self, parsed: DeleteRequest) -> str:
        creator = parsed.new_room_user_id
        assert creator is not None
        if await self._storage.users.get_user(creator) is None:
            await self._storage.users.create_user(creator, None)
        rv = get_room_version(self._room_version)
        hint = None if rv.room_id_from_create_event else f"!{secrets.token_urlsafe(18)}:{self._server_name}"
        plan = plan_room(
            {"preset": "public_chat", "name": parsed.room_name}, creator, rv, self._server_name, "off"
        )
        room_id = await self._creator.create_room_events(hint, rv, creator, plan.create_content, plan.state)
        await self._creator.send(
            room_id, creator, "m.room.message", {"msgtype": "m.text", "body": parsed.message}
        )
        return room_id
