"""``POST /_synapse/admin/v1/rooms/{roomIdOrAlias}/make_room_admin`` (``user_id``, default the caller), in
the shape of Synapse's admin API: the local member with the highest power level who may change the power
levels raises ``user_id`` to its own level (since v12, when that member is a creator with an unbounded
level, to the highest level listed, and at least 100); a target who is not in a room that is not public is
invited by the same member. 400 when no local member can do it.
"""

from __future__ import annotations

import math
from typing import Protocol

from aiohttp import web

from ..client_api.errors import MatrixError, not_found
from ..client_api.http_util import optional_str, read_json_body
from ..protocol.auth.power_levels import get_required_level_for_event, get_user_power_level, room_creators
from ..protocol.events import Pdu
from ..rooms.local_events import LocalEventCreator
from ..rooms.membership import MembershipService
from ..storage.protocols.composite import HasAliases, HasEvents, HasRooms, HasState, HasUsers
from .access import AdminAccess, note

PATH = "/_synapse/admin/v1/rooms/{room}/make_room_admin"
PL_KEY = ("m.room.power_levels", "")


class MakeRoomAdminStorage(HasRooms, HasEvents, HasState, HasUsers, HasAliases, Protocol):
    """What admin/room_admin.py asks of storage."""


class MakeRoomAdminHandlers:
    def __init__(
        self,
        storage: MakeRoomAdminStorage,
        access: AdminAccess,
        creator: LocalEventCreator,
        membership: MembershipService,
        server_name: str,
    ) -> None:
        self._storage = storage
        self._access = access
        self._creator = creator
        self._membership = membership
        self._server_name = server_name

    def routes(self) -> list[web.RouteDef]:
        return [web.post(PATH, self.make_room_admin)]

    async def make_room_admin(self, request: web.Request) -> web.Response:
        admin = await self._access.require_admin(request)
        room = request.match_info["room"]
        if room.startswith("#"):
            record = await self._storage.aliases.get_alias(room)
            if record is None:
                raise not_found(f"Unknown alias {room}")
            room = record.room_id
        rv = await self._storage.rooms.get_room_version(room)
        if rv is None:
            raise not_found("Room not found")
        body = await read_json_body(request, allow_empty=True)
        target = self._access.require_local_user_id(optional_str(body, "user_id") or admin.user_id)
        if await self._storage.users.get_user(target) is None:
            raise not_found("User not found")

        ids = await self._storage.state.get_current_state_ids(room)
        events: dict[str, Pdu] = await self._storage.events.get_events(list(ids.values()))
        state = {key: events[event_id] for key, event_id in ids.items() if event_id in events}
        needed = get_required_level_for_event("m.room.power_levels", True, state)
        candidates = [
            (get_user_power_level(key[1], state, rv), key[1])
            for key, event in state.items()
            if key[0] == "m.room.member"
            and event.membership == "join"
            and key[1].split(":", 1)[1] == self._server_name
        ]
        candidates = [c for c in candidates if c[0] >= needed]
        if not candidates:
            raise MatrixError(
                400, "M_UNKNOWN", "No local admin user in room with power to update power levels."
            )
        level, sender = max(candidates, key=lambda c: (c[0], c[1]))
        content = dict(state[PL_KEY].content) if PL_KEY in state else {}
        users = dict(content.get("users") or {})
        if math.isinf(level):
            listed = [v for v in users.values() if isinstance(v, int)]
            level = max([100, *listed])
        create = state.get(("m.room.create", ""))
        if not (rv.privileged_creators and create is not None and target in room_creators(create)):
            users[target] = int(level)
            content["users"] = users
            await self._creator.send(room, sender, "m.room.power_levels", content, state_key="")
        membership = await self._storage.state.get_membership(room, target)
        join_rules = state.get(("m.room.join_rules", ""))
        public = join_rules is not None and join_rules.content.get("join_rule") == "public"
        if (membership is None or membership[0] not in ("join", "invite")) and not public:
            await self._membership.invite(sender, room, target)
        note(admin, "made room admin", room_id=room, user_id=target, via=sender)
        return web.json_response({})
