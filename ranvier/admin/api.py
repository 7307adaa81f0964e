"""The Synapse-compatible admin API's parts, built from explicit dependencies (constructed in ``app.py``):
the admin store, the access check and audit log, the policy applied to client requests (shadow bans,
blocked rooms, rate-limit overrides) and the endpoint families."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ..client_api.auth import Authenticator
from ..config import HomeserverConfig
from ..rooms.local_events import LocalEventCreator
from ..rooms.membership import MembershipService
from ..rooms.persister import EventPersister
from ..storage.protocols.composite import Storage
from ..storage.sql.admin import AdminStore
from .access import AdminAccess
from .devices import DeviceAdminHandlers
from .policy import AdminPolicy
from .reports import ReportHandlers
from .room_admin import MakeRoomAdminHandlers
from .room_delete import RoomDeleter
from .rooms import RoomAdminHandlers
from .server import GapFillerStatus, ServerAdminHandlers
from .server_notices import ServerNoticeHandlers, ServerNoticeSender
from .users import Deactivator, UserAdminHandlers


class AdminApi:
    def __init__(
        self,
        *,
        config: HomeserverConfig,
        storage: Storage,
        authenticator: Authenticator,
        persister: EventPersister,
        creator: LocalEventCreator,
        membership: MembershipService,
        deactivator: Deactivator | None,
        on_profile_changed: Callable[[str], Awaitable[None]] | None,
        gap_filler: GapFillerStatus | None,
    ) -> None:
        server_name = config.server_name
        self.store = AdminStore(storage.db)
        self.access = AdminAccess(authenticator, server_name)
        self.policy = AdminPolicy(self.store, storage.devices, storage.aliases)
        self.notices = ServerNoticeSender(
            storage,
            self.store,
            creator,
            membership,
            server_name,
            config.server_notices,
            config.rooms.default_room_version,
        )
        self.room_deleter = RoomDeleter(
            storage,
            self.access,
            self.policy,
            creator,
            membership,
            server_name,
            config.rooms.default_room_version,
        )
        self._handlers: list[Any] = [
            UserAdminHandlers(
                storage,
                self.store,
                self.access,
                self.policy,
                deactivator=deactivator,
                on_profile_changed=on_profile_changed,
                allow_login_as_user=config.admin_api.allow_login_as_user,
            ),
            DeviceAdminHandlers(storage, self.access),
            RoomAdminHandlers(storage, self.store, self.access, self.policy, persister, server_name),
            self.room_deleter,
            MakeRoomAdminHandlers(storage, self.access, creator, membership, server_name),
            ReportHandlers(storage, self.store, authenticator, self.access),
            ServerAdminHandlers(storage, self.store, self.access, gap_filler),
            ServerNoticeHandlers(self.notices, self.access),
        ]

    async def start(self) -> None:
        """Load the admins' decisions (shadow bans, overrides, blocks) that requests are checked against."""
        await self.policy.load()

    async def stop(self) -> None:
        """Room deletions still running are cancelled (their status is lost with the process anyway)."""
        await self.room_deleter.stop()

    def handlers(self) -> list[Any]:
        return list(self._handlers)
