"""Push: the actions push rules chose for each event and user (unread counts and notifications), and the
pushers that deliver them to push gateways."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

from ..sql.engine import Txn
from ..sql.push_counts import Notification, PushActionRow, RoomCounts
from ..sql.pushers import Pusher

__all__ = ["Notification", "PushActionRow", "PushActionStorage", "Pusher", "PusherStorage", "RoomCounts"]


class PushActionStorage(Protocol):
    # The ``*_txn`` reads and writes run inside the persist transaction (the push rules' hook).
    async def insert_txn(self, txn: Txn, rows: Iterable[PushActionRow]) -> None: ...
    async def member_counts_txn(
        self, txn: Txn, room_id: str, server_name: str, data_types: Sequence[str]
    ) -> tuple[int, int, int]: ...
    async def local_members_txn(
        self, txn: Txn, room_id: str, server_name: str, data_types: Sequence[str]
    ) -> tuple[list[str], dict[tuple[str, str], str]]: ...
    async def members_account_data_txn(
        self,
        txn: Txn,
        room_id: str,
        server_name: str,
        data_types: Sequence[str],
        local_members: int,
        users_with_data: int,
    ) -> dict[tuple[str, str], str]:
        """The global account data of ``data_types`` of the room's joined members of ``server_name``."""

    async def joined_among_txn(self, txn: Txn, room_id: str, user_ids: Collection[str]) -> set[str]: ...
    async def global_account_data_txn(
        self, txn: Txn, user_ids: Collection[str], data_types: Sequence[str]
    ) -> dict[tuple[str, str], str]: ...
    async def state_events_txn(
        self, txn: Txn, room_id: str, keys: Collection[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[str, str]]: ...
    async def unread_counts(self, user_id: str, room_ids: Collection[str]) -> dict[str, RoomCounts]: ...
    async def notifications(
        self, user_id: str, before: int | None, limit: int, only_highlight: bool
    ) -> list[Notification]: ...
    async def pending_for_pusher(self, user_id: str, after: int, limit: int) -> list[Notification]: ...


class PusherStorage(Protocol):
    async def set_pusher(self, pusher: Pusher, append: bool) -> None: ...
    async def delete_pusher(self, user_id: str, app_id: str, pushkey: str) -> bool: ...
    async def pushers_for_user(self, user_id: str) -> list[Pusher]: ...
    async def pushers_for_users(self, user_ids: Collection[str]) -> list[Pusher]: ...
    async def all_pushers(self) -> list[Pusher]: ...
    async def advance(self, user_id: str, app_id: str, pushkey: str, position: int) -> None: ...


if TYPE_CHECKING:
    from ..sql.engine import Database
    from ..sql.push_counts import PushActionStore
    from ..sql.pushers import PusherStore

    def _sql_classes_satisfy_the_protocols(db: Database) -> None:
        # Never called: mypy checks these assignments.
        _a: PushActionStorage = PushActionStore(db)
        _b: PusherStorage = PusherStore(db)
