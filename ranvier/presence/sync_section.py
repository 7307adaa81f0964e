"""The ``presence`` section of /sync (CS "/sync": ``presence``, "The updates to the presence status of
other users"): the states of the user and of the users sharing a joined room with them, changed since the
token's ``presence`` position; on an initial sync every state that is not offline (as Synapse). The
filter's ``presence`` part (an ``EventFilter``, see client_api/presence.py) applies. Sliding sync can use
``collect`` the same way.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

from ..clock import now_ms
from ..storage.protocols.presence import PresenceStorage
from .service import PresenceService
from .state import UserPresence, client_event, matches_filter


class PresenceSync:
    def __init__(self, store: PresenceStorage, service: PresenceService) -> None:
        self._store = store
        self._service = service
        self.enabled = service.enabled

    def syncing(
        self, user_id: str, device_id: str | None, set_presence: str | None
    ) -> AbstractAsyncContextManager[None]:
        """Around a /sync request (``set_presence``): see ``PresenceService.syncing``."""
        return self._service.syncing(user_id, device_id, set_presence)

    async def position(self) -> int:
        return await self._store.max_position()

    async def collect(
        self, user_id: str, since: int | None, upto: int, event_filter: Any = None
    ) -> list[dict[str, Any]]:
        """The section's events for positions in (since, upto] (``since`` None: an initial sync)."""
        if not self.enabled:
            return []
        if since is not None and since >= upto:
            return []
        now = now_ms()
        rows = await self._store.for_user_between(user_id, since, upto)
        events = [client_event(p, now) for _, p in rows]
        events = [e for e in events if matches_filter(e, event_filter)]
        limit = event_filter.get("limit") if isinstance(event_filter, dict) else None
        if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0:
            events = events[-limit:] if limit else []
        return events

    async def with_new_members(
        self, user_id: str, body: dict[str, Any], events: list[dict[str, Any]], event_filter: Any = None
    ) -> list[dict[str, Any]]:
        """An incremental sync's section plus the states of users the user newly shares a room with:
        every member of a room they joined, and whoever joined one of their rooms (as Synapse does, so
        a client knows their presence without waiting for a change). One event per user."""
        if not self.enabled:
            return events
        users: set[str] = set()
        new_rooms: list[str] = []
        for room_id, room in body.get("rooms", {}).get("join", {}).items():
            for event in room.get("timeline", {}).get("events", []):
                if (
                    event.get("type") != "m.room.member"
                    or event.get("content", {}).get("membership") != "join"
                ):
                    continue
                if event.get("state_key") == user_id:
                    new_rooms.append(room_id)
                elif isinstance(event.get("state_key"), str):
                    users.add(event["state_key"])
        users |= await self._store.joined_members(new_rooms)
        users.discard(user_id)
        if not users:
            return events
        now = now_ms()
        known = await self._store.get(users)
        extra = [client_event(known.get(u) or UserPresence(u), now) for u in sorted(users)]
        merged = {e["sender"]: e for e in events}
        merged.update((e["sender"], e) for e in extra if matches_filter(e, event_filter))
        return list(merged.values())
