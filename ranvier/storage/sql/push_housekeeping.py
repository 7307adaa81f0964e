"""Removing push actions (event_push_actions, migration 500) that no longer mean anything: those of
redacted events, read ones past the retention period, and the pushers of deleted devices.

Counts are read from the rows after each user's read receipt (push_counts.py), so pruning only rows at or
before the point a user has read to (or before their current membership event, for a room they left)
leaves every count as it was; only /notifications loses its oldest, read entries.
"""

from __future__ import annotations

from collections.abc import Collection

from .engine import Database, Txn, chunks, in_list
from .push_counts import _READ_UPTO


async def remove_redacted_txn(txn: Txn, event_ids: Collection[str]) -> None:
    """Inside the persist transaction: delete the rows of those ``event_ids`` that are redacted now (the
    targets of the batch's redactions, and the batch's events whose redaction arrived first)."""
    for part in chunks(sorted(set(event_ids))):
        await txn.execute(
            "DELETE FROM event_push_actions WHERE event_id IN (SELECT event_id FROM events"
            f" WHERE event_id IN ({in_list(len(part))}) AND redacted_by IS NOT NULL)",
            tuple(part),
        )


async def prune_read(db: Database, before_ts: int, limit: int) -> int:
    """Delete up to ``limit`` rows of events sent before ``before_ts`` (their ``origin_server_ts``) that
    their user has read; returns how many went."""
    async with db.transaction() as txn:
        rows = await txn.fetchall(
            "DELETE FROM event_push_actions WHERE (user_id, room_id, stream_ordering) IN ("
            " SELECT a.user_id, a.room_id, a.stream_ordering FROM event_push_actions a"
            " JOIN events e ON e.event_id = a.event_id"
            f" WHERE e.origin_server_ts < ? AND a.stream_ordering <= {_READ_UPTO} LIMIT ?)"
            " RETURNING event_id",
            (before_ts, limit),
        )
    return len(rows)


async def delete_pushers_of_devices(db: Database, user_id: str, device_ids: Collection[str]) -> int:
    """Delete the pushers set through any of these devices; returns how many went."""
    deleted = 0
    for part in chunks(sorted(set(device_ids))):
        async with db.transaction() as txn:
            rows = await txn.fetchall(
                "DELETE FROM pushers WHERE user_id = ?"
                f" AND device_id IN ({in_list(len(part))}) RETURNING pushkey",
                (user_id, *part),
            )
        deleted += len(rows)
    return deleted
