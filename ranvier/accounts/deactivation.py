"""Deactivating an account (CS "/account/deactivate"; also Synapse's admin ``/_synapse/admin/v1/deactivate``).

One domain function, ``AccountDeactivator.deactivate(user_id, erase=...)``, used by the client endpoint
and the admin API. In order:

1. the account is marked deactivated and its password dropped, so no new login or token can appear while
   the rest runs (registration of the same name stays refused: the row is kept);
2. every device goes, with its access and refresh tokens, E2EE device keys and to-device inbox (the
   device-list change reaches other servers through the devices' deletion listeners), and the OpenID
   tokens handed to integrations stop working;
3. pushers, server-side key backups and account data are deleted;
4. the profile is cleared (displayname and avatar), without sending member events: the leaves below
   carry none;
5. with ``erase``, the account is marked erased: its events are then served redacted to users and
   servers who could not see them before (``rooms.visibility``; CS "/account/deactivate": "users which
   join the room after the erasure request are only able to see redacted events");
6. every pending invite is rejected and every room (joined, knocked) is left, local and federated rooms
   alike: a leave is an ordinary event that the federation sender delivers; the rejection of an invite to
   a room we are not in goes over make_leave/send_leave (``rooms.membership``). One room failing (an
   unreachable inviting server) does not stop the others; it is reported in the result.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

from ..protocol.errors import AuthRejected
from ..rooms.local_events import RoomNotFound
from ..rooms.membership import MembershipError
from ..storage.protocols.composite import (
    HasAccountTokens,
    HasDevices,
    HasKeyBackup,
    HasPushers,
    HasState,
    HasUsers,
)

logger = logging.getLogger(__name__)


class DeactivationStorage(
    HasState, HasUsers, HasDevices, HasAccountTokens, HasKeyBackup, HasPushers, Protocol
):
    """What accounts/deactivation.py asks of storage."""


class Leaver(Protocol):
    """What deactivation needs of ``rooms.membership.MembershipService``."""

    async def leave(self, user_id: str, room_id: str, reason: str | None = None) -> None: ...


@dataclass
class DeactivationResult:
    devices_deleted: list[str] = field(default_factory=list)
    rooms_left: list[str] = field(default_factory=list)
    invites_rejected: list[str] = field(default_factory=list)
    # room id -> why it could not be left (the membership stays as it was there).
    failures: dict[str, str] = field(default_factory=dict)


class UnknownUser(Exception):
    pass


class AccountDeactivator:
    def __init__(self, storage: DeactivationStorage, membership: Leaver) -> None:
        """``storage``: the server's storage (users, devices, pushers, key_backup, account_tokens,
        state); ``membership``: the room layer's MembershipService."""
        self._storage = storage
        self._membership = membership

    async def deactivate(self, user_id: str, *, erase: bool = False) -> DeactivationResult:
        """Deactivate the local account ``user_id`` (see the module docstring); raises UnknownUser when
        there is no such account. Deactivating an account twice runs the steps again (leaving what is
        left), which is harmless."""
        user = await self._storage.users.get_user(user_id)
        if user is None:
            raise UnknownUser(user_id)
        result = DeactivationResult()
        # 1. No more logins: deactivated, password gone.
        await self._storage.users.deactivate(user_id)
        # 2. Devices, their tokens (access and refresh) and E2EE keys.
        result.devices_deleted = await self._storage.devices.delete_all_devices(user_id)
        await self._storage.account_tokens.delete_openid_tokens(user_id)
        # 3. Pushers, key backups, account data.
        for pusher in await self._storage.pushers.pushers_for_user(user_id):
            await self._storage.pushers.delete_pusher(user_id, pusher.app_id, pusher.pushkey)
        await self._delete_key_backups(user_id)
        await self._storage.account_tokens.purge_account_data(user_id)
        # 4. The profile.
        await self._storage.users.set_displayname(user_id, None)
        await self._storage.users.set_avatar_url(user_id, None)
        # 5. Erasure.
        if erase:
            await self._storage.account_tokens.mark_erased(user_id)
        # 6. Invites rejected, rooms left.
        rooms: dict[str, str] = await self._storage.state.get_rooms_for_user(user_id)
        for room_id, membership in sorted(rooms.items()):
            if membership not in ("join", "invite", "knock"):
                continue
            try:
                await self._membership.leave(user_id, room_id)
            except (MembershipError, AuthRejected, RoomNotFound) as e:
                logger.warning("deactivating %s: could not leave %s: %s", user_id, room_id, e)
                result.failures[room_id] = str(e)
                continue
            (result.invites_rejected if membership == "invite" else result.rooms_left).append(room_id)
        logger.info(
            "deactivated %s (erase=%s): %d devices, left %d rooms, rejected %d invites, %d failures",
            user_id,
            erase,
            len(result.devices_deleted),
            len(result.rooms_left),
            len(result.invites_rejected),
            len(result.failures),
        )
        return result

    async def _delete_key_backups(self, user_id: str) -> None:
        backups = self._storage.key_backup
        # get_version without a version is the newest; deleting it makes the next one the newest.
        for _ in range(10_000):
            version = await backups.get_version(user_id)
            if version is None:
                return
            await backups.delete_version(user_id, version.version)
