"""Push housekeeping: a redacted event stops notifying (its push actions are removed in the transaction
that stores the redaction, as Synapse does), a deleted device's pushers go with it (a logout deletes the
device; Synapse removes the pushers of deleted devices too), and read notifications older than the
retention period are pruned every hour (``push.notification_retention``, 30 days by default; counts are
unaffected, see storage/sql/push_housekeeping.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from ..clock import now_ms
from ..storage.interfaces import EventToPersist
from ..storage.sql.engine import Database
from ..storage.sql.push_housekeeping import delete_pushers_of_devices, prune_read, remove_redacted_txn

logger = logging.getLogger(__name__)

PRUNE_INTERVAL_S = 3600.0
PRUNE_BATCH = 1000


class PushHousekeeping:
    def __init__(
        self,
        db: Database,
        retention_ms: int,
        *,
        on_pushers_deleted: Callable[[], None] | None = None,
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        """``on_pushers_deleted``: wakes the delivery loop (PushDelivery.wake) so it drops them."""
        self._db = db
        self.retention_ms = retention_ms
        self._on_pushers_deleted = on_pushers_deleted
        self._clock_ms = clock_ms
        self._task: asyncio.Task[None] | None = None

    async def in_txn(self, txn: Any, room_id: str, written: list[tuple[EventToPersist, int]]) -> None:
        """The persister's in-transaction hook, after the push actions' own: rows of events this batch
        redacted, or of its events that arrived already redacted, are removed."""
        ids = [item.pdu.event_id for item, _ in written]
        ids += [
            item.pdu.redacts
            for item, _ in written
            if item.pdu.redacts is not None and item.rejected_reason is None and not item.soft_failed
        ]
        await remove_redacted_txn(txn, ids)

    async def devices_deleted(self, user_id: str, device_ids: list[str]) -> None:
        """DeviceStore's deleted listener: the pushers set from those devices."""
        if await delete_pushers_of_devices(self._db, user_id, device_ids) and self._on_pushers_deleted:
            self._on_pushers_deleted()

    async def prune(self) -> int:
        """Prune read notifications older than the retention; returns how many rows went."""
        before = self._clock_ms() - self.retention_ms
        total = 0
        while True:
            n = await prune_read(self._db, before, PRUNE_BATCH)
            total += n
            if n < PRUNE_BATCH:
                return total
            await asyncio.sleep(0)  # let requests in between batches

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="push housekeeping")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                pruned = await self.prune()
                if pruned:
                    logger.info("pruned %d read notifications older than the retention", pruned)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("pruning notifications failed; trying again later")
            await asyncio.sleep(PRUNE_INTERVAL_S)
