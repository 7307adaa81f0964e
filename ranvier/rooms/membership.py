"""Membership changes requested by local users: join, invite, leave, kick, ban, unban.

A change in a room this server is in is an ordinary local event. A join of a room we are not in, an
invite of a remote user and the rejection of a remote invite go over federation: those are delegated to
``remote`` (the RemoteMembership of rooms.remote_join), which may be absent on a federation-less server.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ..protocol.errors import AuthRejected
from ..protocol.events import Pdu
from ..protocol.identifiers import server_of
from ..storage.protocols.composite import HasAliases, HasEvents, HasRooms, HasState, HasUsers
from .local_events import LocalEventCreator, RoomNotFound

logger = logging.getLogger(__name__)


class MembershipStorage(HasRooms, HasEvents, HasState, HasUsers, HasAliases, Protocol):
    """What rooms/membership.py asks of storage."""


class MembershipError(Exception):
    def __init__(self, errcode: str, message: str, status: int = 400, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.errcode = errcode
        self.message = message
        self.status = status
        # The other server could not be reached at all (as opposed to one that answered with a refusal).
        self.unreachable = unreachable


class RemoteMembership(Protocol):
    async def join(self, user_id: str, room_id: str, servers: list[str], content: dict[str, Any]) -> str: ...

    async def invite(self, sender: str, room_id: str, target: str, content: dict[str, Any]) -> Pdu: ...

    async def reject_invite(self, user_id: str, room_id: str, content: dict[str, Any]) -> None: ...

    async def resolve_alias(self, alias: str) -> tuple[str, list[str]]: ...


class MembershipService:
    def __init__(
        self,
        storage: MembershipStorage,
        creator: LocalEventCreator,
        server_name: str,
        remote: RemoteMembership | None = None,
    ) -> None:
        self._storage = storage
        self._creator = creator
        self.server_name = server_name
        self.remote = remote
        # user id -> displayname/avatar_url of another server's user, or None (set by app.py).
        self.remote_profile: Callable[[str], Awaitable[dict[str, Any] | None]] | None = None

    async def profile_content(self, user_id: str) -> dict[str, Any]:
        content: dict[str, Any] = {}
        profile = await self._storage.users.get_profile(user_id)
        if profile is not None:
            if profile.displayname is not None:
                content["displayname"] = profile.displayname
            if profile.avatar_url is not None:
                content["avatar_url"] = profile.avatar_url
        return content

    async def resolve_room(self, room_id_or_alias: str) -> tuple[str, list[str]]:
        """A room id and servers to try for joining it; aliases are looked up locally or remotely."""
        if room_id_or_alias.startswith("!"):
            return room_id_or_alias, []
        if not room_id_or_alias.startswith("#") or ":" not in room_id_or_alias:
            raise MembershipError("M_INVALID_PARAM", f"{room_id_or_alias!r} is not a room id or alias")
        if server_of(room_id_or_alias) == self.server_name:
            record = await self._storage.aliases.get_alias(room_id_or_alias)
            if record is None:
                raise MembershipError("M_NOT_FOUND", f"room alias {room_id_or_alias} not found", 404)
            return record.room_id, []
        if self.remote is None:
            raise MembershipError("M_NOT_FOUND", f"room alias {room_id_or_alias} not found", 404)
        return await self.remote.resolve_alias(room_id_or_alias)

    async def we_are_in_room(self, room_id: str) -> bool:
        if await self._storage.rooms.get_room_version(room_id) is None:
            return False
        joined = await self._storage.state.get_joined_users(room_id)
        return any(server_of(u) == self.server_name for u in joined)

    async def join(
        self, user_id: str, room_id_or_alias: str, via: list[str] | None = None, reason: str | None = None
    ) -> str:
        room_id, alias_servers = await self.resolve_room(room_id_or_alias)
        content: dict[str, Any] = {"membership": "join", **await self.profile_content(user_id)}
        if reason:
            content["reason"] = reason
        if await self.we_are_in_room(room_id):
            await self._local_join(room_id, user_id, content)
            return room_id
        servers = [s for s in [*(via or []), *alias_servers] if s != self.server_name]
        if ":" in room_id[1:]:
            servers.append(server_of(room_id))  # pre-v12 room ids name the room's creating server
        invite = await self._storage.state.get_membership(room_id, user_id)
        if invite is not None and invite[0] == "invite":
            inviter_event = await self._storage.events.get_event(invite[1], allow_rejected=True)
            if inviter_event is not None:
                servers.insert(0, server_of(inviter_event.sender))
        servers = list(dict.fromkeys(s for s in servers if s != self.server_name))
        if self.remote is None or not servers:
            raise MembershipError("M_NOT_FOUND", f"no known server to join {room_id} through", 404)
        return await self.remote.join(user_id, room_id, servers, content)

    async def _local_join(self, room_id: str, user_id: str, content: dict[str, Any]) -> None:
        try:
            await self._creator.send(room_id, user_id, "m.room.member", content, state_key=user_id)
        except AuthRejected as first_error:
            authoriser = await self._restricted_join_authoriser(room_id)
            if authoriser is None:
                raise first_error from None
            # Restricted rooms (v8+): a local user who may invite vouches for the join.
            content = {**content, "join_authorised_via_users_server": authoriser}
            await self._creator.send(room_id, user_id, "m.room.member", content, state_key=user_id)

    async def _restricted_join_authoriser(self, room_id: str) -> str | None:
        from ..protocol.auth.power_levels import get_named_level, get_user_power_level

        state = await self._creator._state.current_state_events(room_id)
        join_rules = state.get(("m.room.join_rules", ""))
        if join_rules is None or join_rules.content.get("join_rule") not in (
            "restricted",
            "knock_restricted",
        ):
            return None
        rv = join_rules.room_version
        needed = get_named_level(state, "invite")
        for (etype, key), ev in sorted(state.items()):
            if (
                etype == "m.room.member"
                and ev.membership == "join"
                and server_of(key) == self.server_name
                and get_user_power_level(key, state, rv) >= needed
            ):
                return key
        return None

    async def invite(self, sender: str, room_id: str, target: str, reason: str | None = None) -> None:
        content: dict[str, Any] = {"membership": "invite"}
        if reason:
            content["reason"] = reason
        current = await self._storage.state.get_membership(room_id, target)
        if current is not None and current[0] in ("join", "ban"):
            raise MembershipError("M_FORBIDDEN", f"{target} is already {current[0]} in the room", 403)
        if server_of(target) == self.server_name:
            # The invitee's profile, so clients show who was invited by name (as Synapse does).
            content.update(await self.profile_content(target))
            await self._creator.send(room_id, sender, "m.room.member", content, state_key=target)
            return
        if self.remote is None:
            raise MembershipError("M_FORBIDDEN", "federation is disabled on this server", 403)
        if self.remote_profile is not None:
            # The invitee's profile from their server, when it answers (accounts.remote_profile).
            content.update(await self.remote_profile(target) or {})
        await self.remote.invite(sender, room_id, target, content)

    async def leave(self, user_id: str, room_id: str, reason: str | None = None) -> None:
        content: dict[str, Any] = {"membership": "leave"}
        if reason:
            content["reason"] = reason
        current = await self._storage.state.get_membership(room_id, user_id)
        if current is None:
            raise MembershipError("M_NOT_FOUND", f"{user_id} is not in room {room_id}", 404)
        if current[0] in ("invite", "knock") and not await self.we_are_in_room(room_id):
            # Rejecting an invite, or rescinding a knock (CS "Knocking on rooms"), of a room we are not in.
            if self.remote is None:
                raise MembershipError("M_FORBIDDEN", "federation is disabled on this server", 403)
            await self.remote.reject_invite(user_id, room_id, content)
            return
        if current[0] in ("leave", "ban"):
            return  # leaving twice is a no-op for clients
        await self._creator.send(room_id, user_id, "m.room.member", content, state_key=user_id)

    async def set_membership(
        self, sender: str, room_id: str, target: str, membership: str, reason: str | None = None
    ) -> None:
        """kick (leave of another user), ban and unban (leave of a banned user)."""
        if await self._storage.rooms.get_room_version(room_id) is None:
            raise RoomNotFound(room_id)
        content: dict[str, Any] = {"membership": membership}
        if reason:
            content["reason"] = reason
        await self._creator.send(room_id, sender, "m.room.member", content, state_key=target)
