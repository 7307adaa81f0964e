"""Server notices (Synapse's ``POST /_synapse/admin/v1/send_server_notice`` and its server notices room).

A notice is sent by the configured system account (``server_notices.system_mxid_localpart``, created on
first use) into the user's server notices room: a private room made by that account, named from the
configuration, tagged ``m.server_notice`` in the user's room account data (CS "Server Notices") and to
which the user is invited. Only the system account may send there (``events_default`` 100). When the user
has left or rejected the room, the next notice goes to a new one, as in Synapse.

Without a ``server_notices`` section the endpoint answers 400, as Synapse does when notices are disabled.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any, Protocol

from aiohttp import web

from ..client_api.errors import MatrixError, invalid_param, not_found
from ..client_api.http_util import optional_str, read_json_body, require_str
from ..config import ServerNotices
from ..protocol.room_versions import get_room_version
from ..rooms.create_room_plan import plan_room
from ..rooms.local_events import LocalEventCreator
from ..rooms.membership import MembershipService
from ..storage.protocols.admin import AdminStorage
from ..storage.protocols.composite import HasAccountData, HasState, HasUsers
from .access import AdminAccess, note

logger = logging.getLogger(__name__)

PATH = "/_synapse/admin/v1/send_server_notice"
SERVER_NOTICE_TAG = "m.server_notice"
MAX_TXNS = 10_000


class ServerNoticesStorage(HasState, HasUsers, HasAccountData, Protocol):
    """What admin/server_notices.py asks of storage."""


class ServerNoticeSender:
    def __init__(
        self,
        storage: ServerNoticesStorage,
        admin_store: AdminStorage,
        creator: LocalEventCreator,
        membership: MembershipService,
        server_name: str,
        config: ServerNotices | None,
        room_version: str,
    ) -> None:
        self._storage = storage
        self._store = admin_store
        self._creator = creator
        self._membership = membership
        self._server_name = server_name
        self._config = config
        self._room_version = room_version

    @property
    def system_user(self) -> str | None:
        if self._config is None:
            return None
        return f"@{self._config.system_mxid_localpart}:{self._server_name}"

    async def _ensure_system_user(self, config: ServerNotices, user_id: str) -> None:
        if await self._storage.users.get_user(user_id) is None:
            await self._storage.users.create_user(
                user_id, None, displayname=config.system_mxid_display_name or config.system_mxid_localpart
            )
            if config.system_mxid_avatar_url:
                await self._storage.users.set_avatar_url(user_id, config.system_mxid_avatar_url)

    async def _room_for(self, config: ServerNotices, system: str, user_id: str) -> str:
        room_id = await self._store.server_notice_room(user_id)
        if room_id is not None:
            membership = await self._storage.state.get_membership(room_id, user_id)
            if membership is not None and membership[0] in ("join", "invite"):
                return room_id
        rv = get_room_version(self._room_version)
        hint = None if rv.room_id_from_create_event else f"!{secrets.token_urlsafe(18)}:{self._server_name}"
        # A private room in which only the system account may send (events_default 100).
        plan = plan_room(
            {
                "preset": "private_chat",
                "name": config.room_name,
                "power_level_content_override": {"events_default": 100, "invite": 100},
            },
            system,
            rv,
            self._server_name,
            "off",
        )
        room_id = await self._creator.create_room_events(hint, rv, system, plan.create_content, plan.state)
        await self._membership.invite(system, room_id, user_id)
        tags = await self._storage.account_data.get_room(user_id, room_id, "m.tag") or {}
        tag_map = dict(tags.get("tags") or {})
        tag_map[SERVER_NOTICE_TAG] = {}
        await self._storage.account_data.put_room(user_id, room_id, "m.tag", {"tags": tag_map})
        await self._store.set_server_notice_room(user_id, room_id)
        logger.info("created server notices room %s for %s", room_id, user_id)
        return room_id

    async def send_notice(
        self, user_id: str, event_type: str, content: dict[str, Any], state_key: str | None
    ) -> str:
        config, system = self._config, self.system_user
        if config is None or system is None:
            raise invalid_param("Server notices are not enabled on this server")
        await self._ensure_system_user(config, system)
        room_id = await self._room_for(config, system, user_id)
        pdu = await self._creator.send(room_id, system, event_type, content, state_key=state_key)
        return pdu.event_id


class ServerNoticeHandlers:
    def __init__(self, sender: ServerNoticeSender, access: AdminAccess) -> None:
        self._sender = sender
        self._access = access
        # PUT .../send_server_notice/{txnId}: a repeated transaction answers the first one's event id
        # (in memory, the most recent MAX_TXNS; as the client API's transaction ids, per admin).
        self._txns: dict[tuple[str, str], str] = {}

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post(PATH, self.send),
            web.put(PATH + "/{txn_id}", self.send),
        ]

    async def send(self, request: web.Request) -> web.Response:
        admin = await self._access.require_admin(request)
        txn_id = request.match_info.get("txn_id")
        if txn_id is not None and (admin.user_id, txn_id) in self._txns:
            return web.json_response({"event_id": self._txns[(admin.user_id, txn_id)]})
        body = await read_json_body(request)
        user_id = self._access.require_local_user_id(require_str(body, "user_id"))
        content = body.get("content")
        if not isinstance(content, dict):
            raise invalid_param("'content' must be an object")
        event_type = optional_str(body, "type") or "m.room.message"
        state_key = optional_str(body, "state_key")
        user = await self._sender._storage.users.get_user(user_id)
        if user is None:
            raise not_found("User not found")
        if user.deactivated:
            raise MatrixError(400, "M_UNKNOWN", "Cannot send a server notice to a deactivated user")
        event_id = await self._sender.send_notice(user_id, event_type, content, state_key)
        if txn_id is not None:
            if len(self._txns) >= MAX_TXNS:
                del self._txns[next(iter(self._txns))]
            self._txns[(admin.user_id, txn_id)] = event_id
        note(admin, "sent server notice", user_id=user_id, event_id=event_id)
        return web.json_response({"event_id": event_id})
