"""What annotates room events without being room state: read receipts, and relations (threads, edits,
references, reactions)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ..interfaces import TopoToken
from ..sql.receipts import Receipt
from ..sql.relations import ChildRow, ThreadRoot, ThreadSummary

__all__ = ["ChildRow", "Receipt", "ReceiptStorage", "RelationStorage", "ThreadRoot", "ThreadSummary"]


class ReceiptStorage(Protocol):
    async def put_receipt(
        self,
        room_id: str,
        receipt_type: str,
        user_id: str,
        event_id: str,
        data: dict[str, Any],
        thread_id: str | None = None,
    ) -> int: ...
    async def get_receipt(
        self, room_id: str, receipt_type: str, user_id: str, thread_id: str | None = None
    ) -> Receipt | None: ...
    async def receipts_for_room(self, room_id: str) -> list[Receipt]: ...
    async def receipts_since(self, room_ids: Collection[str], since: int, upto: int) -> list[Receipt]: ...
    async def max_position(self) -> int: ...


class RelationStorage(Protocol):
    async def children(
        self,
        room_id: str,
        parent_id: str,
        *,
        rel_type: str | None,
        event_type: str | None,
        from_token: TopoToken | None,
        to_token: TopoToken | None,
        direction: str,
        limit: int,
        depth: int,
        ignored: Collection[str] = (),
    ) -> tuple[list[str], TopoToken | None]: ...
    async def thread_summaries(
        self, room_id: str, root_ids: Sequence[str], user_id: str, ignored: Collection[str] = ()
    ) -> dict[str, ThreadSummary]: ...
    async def edits_and_references(
        self, room_id: str, parent_ids: Sequence[str], ignored: Collection[str] = ()
    ) -> list[ChildRow]: ...
    async def has_aggregated_children(self, room_id: str, parent_ids: Sequence[str]) -> set[str]: ...
    async def thread_roots(
        self,
        room_id: str,
        *,
        participant: str | None,
        from_token: TopoToken | None,
        limit: int,
        ignored: Collection[str] = (),
    ) -> tuple[list[ThreadRoot], TopoToken | None]: ...
    async def thread_of(self, event_id: str) -> str | None: ...
    async def is_thread_root(self, event_id: str) -> bool: ...
    async def rel_type_of(self, event_id: str) -> str | None: ...
    async def annotation_exists(
        self, room_id: str, parent_id: str, sender: str, event_type: str, key: str
    ) -> bool: ...


if TYPE_CHECKING:
    from ..sql.engine import Database
    from ..sql.receipts import ReceiptStore
    from ..sql.relations import RelationStore

    def _sql_classes_satisfy_the_protocols(db: Database) -> None:
        # Never called: mypy checks these assignments.
        _a: ReceiptStorage = ReceiptStore(db)
        _b: RelationStorage = RelationStore(db)
