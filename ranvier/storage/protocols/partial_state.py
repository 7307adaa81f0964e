"""Partial-state joins, joining side: which rooms are partial, the resync's durable progress, and the
servers that were in each room at the join (``sql/partial_state.py``)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

from ...protocol.events import Pdu
from ..sql.engine import Txn
from ..sql.partial_state import PartialStateRoom

__all__ = ["PartialStateRoom", "PartialStateStorage"]


class PartialStateStorage(Protocol):
    # ``start_txn``/``complete_txn`` run in the join's and the completion's transactions; the
    # ``published_*`` calls follow their commits.
    async def start_txn(
        self, txn: Txn, room_id: str, join_event_id: str, joined_via: str, servers: Iterable[str]
    ) -> None: ...
    def published_start(self, room_id: str) -> None: ...
    async def is_partial(self, room_id: str) -> bool: ...
    async def partial_among(self, room_ids: Iterable[str]) -> set[str]: ...
    async def get(self, room_id: str) -> PartialStateRoom | None: ...
    async def list_rooms(self, include_completed: bool = False) -> list[PartialStateRoom]: ...
    async def servers(self, room_id: str) -> list[str]: ...
    async def servers_txn(self, txn: Txn, room_id: str) -> set[str]: ...
    async def save_state_ids(
        self, room_id: str, pdu_ids: Sequence[str], auth_chain_ids: Sequence[str]
    ) -> None: ...
    async def get_state_ids(self, room_id: str) -> tuple[list[str], list[str]] | None: ...
    async def record_failure(self, room_id: str, error: str, next_attempt_ts: int) -> None: ...
    async def complete_txn(
        self,
        txn: Txn,
        room_id: str,
        stream: int,
        joined_members: Sequence[Pdu] = (),
        note: str | None = None,
    ) -> None: ...
    def published_complete(self, room_id: str) -> None: ...
    async def completed_between(self, room_ids: Collection[str], after: int, upto: int) -> set[str]: ...
    async def left_at_completion(self, user_id: str, after: int, upto: int) -> set[str]: ...
    async def events_since_join(self, room_id: str, join_event_id: str) -> list[tuple[str, bool, bool]]: ...


if TYPE_CHECKING:
    from ..sql.engine import Database
    from ..sql.partial_state import PartialStateStore

    def _sql_class_satisfies_the_protocol(db: Database) -> None:
        # Never called: mypy checks this assignment.
        _: PartialStateStorage = PartialStateStore(db)
