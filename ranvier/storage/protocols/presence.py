"""Presence: each user's last known presence (a stream, for /sync and the appservice feed) and the room
co-membership questions presence is routed by."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Protocol

from ...presence.state import UserPresence

__all__ = ["PresenceStorage", "UserPresence"]


class PresenceStorage(Protocol):
    async def put(self, states: Collection[UserPresence]) -> int: ...
    async def touch_federation_update(self, user_ids: Collection[str], ts: int) -> None: ...
    async def max_position(self) -> int: ...
    async def get(self, user_ids: Collection[str]) -> dict[str, UserPresence]: ...
    async def not_offline(self) -> list[UserPresence]: ...
    async def for_user_between(
        self, user_id: str, since: int | None, upto: int
    ) -> list[tuple[int, UserPresence]]: ...
    async def between(self, since: int, upto: int, limit: int) -> list[tuple[int, UserPresence]]: ...
    async def joined_members(self, room_ids: Collection[str]) -> set[str]: ...
    async def shares_a_room(self, user_id: str, other: str) -> bool: ...
    async def servers_sharing_a_room(self, user_id: str) -> set[str]: ...


if TYPE_CHECKING:
    from ..sql.engine import Database
    from ..sql.presence import PresenceStore

    def _sql_class_satisfies_the_protocol(db: Database) -> None:
        # Never called: mypy checks this assignment.
        _: PresenceStorage = PresenceStore(db)
