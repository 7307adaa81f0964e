"""The read-side indexes a persisted batch updates in its own transaction: the full-text search index
(``search``) and the user directory (``user_directory``). Called by the persister once the batch's rows,
redactions and current state are written, so both commit (or roll back) with the events."""

from __future__ import annotations

from collections.abc import Sequence

from ranvier.protocol.events import Pdu

from .engine import Dialect, Txn
from .search import index_persisted
from .user_directory import update_from_persisted


async def update_indexes(
    txn: Txn, dialect: Dialect, room_id: str, live: Sequence[tuple[Pdu, int]], redacted: Sequence[str]
) -> None:
    """``live``: the batch's live events (not outliers, rejected or soft-failed) with their stream
    orderings; ``redacted``: the events the batch redacted."""
    await index_persisted(txn, dialect, live, redacted)
    await update_from_persisted(txn, room_id, live)
