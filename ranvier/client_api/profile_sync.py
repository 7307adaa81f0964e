"""Profile changes reach the rooms: a new ``m.room.member`` join event with the new displayname and
avatar in every room the user is joined to (CS "Events on Change of Profile Information": "the server
[...] SHOULD send an updated m.room.member event for every room the user is a member of").
"""

from __future__ import annotations

import logging
from typing import Protocol

from ..protocol.errors import AuthRejected
from ..rooms.local_events import LocalEventCreator, RoomNotFound
from ..storage.protocols.composite import HasState, HasUsers

logger = logging.getLogger(__name__)


class ProfileSyncStorage(HasState, HasUsers, Protocol):
    """What client_api/profile_sync.py asks of storage."""


class ProfilePropagator:
    def __init__(self, storage: ProfileSyncStorage, creator: LocalEventCreator) -> None:
        self._storage = storage
        self._creator = creator

    async def on_profile_changed(self, user_id: str) -> None:
        profile = await self._storage.users.get_profile(user_id)
        if profile is None:
            return
        rooms = await self._storage.state.get_rooms_for_user(user_id)
        for room_id in sorted(r for r, m in rooms.items() if m == "join"):
            try:
                await self._update_room(room_id, user_id, profile.displayname, profile.avatar_url)
            except (AuthRejected, RoomNotFound) as e:
                # One room refusing (for example a power level that forbids it) must not stop the others.
                logger.warning("not updating %s's membership in %s: %s", user_id, room_id, e)

    async def _update_room(
        self, room_id: str, user_id: str, displayname: str | None, avatar_url: str | None
    ) -> None:
        current = await self._storage.state.get_current_state_event(room_id, "m.room.member", user_id)
        if current is None or current.membership != "join":
            return
        content = dict(current.content)
        for key, value in (("displayname", displayname), ("avatar_url", avatar_url)):
            if value is None:
                content.pop(key, None)
            else:
                content[key] = value
        # The join's reason belonged to the join. join_authorised_via_users_server must be signed by the
        # authorising server (auth rules since v8), which a profile update is not: drop both.
        content.pop("reason", None)
        content.pop("join_authorised_via_users_server", None)
        if content == current.content:
            return  # nothing to say: do not send an empty change
        await self._creator.send(room_id, user_id, "m.room.member", content, state_key=user_id)
