"""Simplified sliding sync: the room-list reads (memberships, counts, the state and positions a list sorts
and filters by) and the connections' saved positions."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, Protocol

from ..sql.sliding_sync import MembershipRow

__all__ = ["MembershipRow", "SlidingPositionStorage", "SlidingSyncStorage"]


class SlidingSyncStorage(Protocol):
    async def memberships(self, user_id: str) -> list[MembershipRow]: ...
    async def member_counts(self, room_ids: Collection[str]) -> dict[str, tuple[int, int]]: ...
    async def current_state_of_types(
        self, room_ids: Collection[str], event_types: Collection[str]
    ) -> dict[str, dict[tuple[str, str], str]]: ...
    async def latest_positions(
        self, room_ids: Collection[str], event_types: Iterable[str], upto: int
    ) -> dict[str, int]: ...
    async def rooms_with_events(self, room_ids: Collection[str], since: int, upto: int) -> set[str]: ...
    async def state_keys_changed(self, room_id: str, since: int, upto: int) -> set[tuple[str, str]]: ...
    async def event_positions(self, event_ids: Collection[str]) -> dict[str, int]: ...


class SlidingPositionStorage(Protocol):
    """Each connection's positions (token and rooms sent, as stored text), kept across restarts."""

    async def load(
        self, user_id: str, device_id: str, conn_id: str, position_id: int, now_ms: int
    ) -> tuple[str, str] | None: ...
    async def save(
        self,
        user_id: str,
        device_id: str,
        conn_id: str,
        keep: int | None,
        position_id: int,
        token: str,
        rooms: str,
        now_ms: int,
    ) -> None: ...
    async def expire(self, cutoff_ms: int) -> None: ...


if TYPE_CHECKING:
    from ..sql.engine import Database
    from ..sql.sliding_positions import SlidingPositionStore
    from ..sql.sliding_sync import SlidingSyncStore

    def _sql_classes_satisfy_the_protocols(db: Database) -> None:
        # Never called: mypy checks these assignments.
        _a: SlidingSyncStorage = SlidingSyncStore(db)
        _b: SlidingPositionStorage = SlidingPositionStore(db)
