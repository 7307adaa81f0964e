"""PDUs that could not be judged yet, tried again through the intake, durably (table ``deferred_pdus``).

A PDU of a ``/send`` transaction whose prev events are missing needs the state at the gap from its sender
(``incoming.py``, ``/state_ids``); when that cannot be had (a partition, a sender restarting) the PDU is
answered with a per-PDU error, which the sender takes as final: it never sends that PDU again, and nothing
later has to cite it. So it is kept here and tried again after ``RETRY_DELAYS``, through the whole intake,
until it is stored (accepted, rejected or soft-failed: judged) or the delays run out. Kept in the database
before the transaction is answered, so a restart (or a crash) resumes the tries where they were. Bounded:
at most ``MAX_WAITING`` PDUs wait; beyond that a refused PDU is left to the gap filler and later events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..clock import now_ms
from ..storage.protocols.federation import DeferredPduStorage
from ..storage.sql.deferred_pdus import DeferredPdu

logger = logging.getLogger(__name__)

# Seconds before each try (2 s doubling to a minute: two minutes in all).
RETRY_DELAYS = (2.0, 4.0, 8.0, 16.0, 30.0, 60.0)
MAX_WAITING = 1000
# Rows taken per pass of the loop.
BATCH = 50

# (origin, PDU as received) -> whether the PDU is judged now (False: still cannot be).
Retry = Callable[[str, dict[str, Any]], Awaitable[bool]]


class DeferredPdus:
    def __init__(
        self,
        store: DeferredPduStorage,
        retry: Retry,
        *,
        delays: Sequence[float] = RETRY_DELAYS,
        max_waiting: int = MAX_WAITING,
    ) -> None:
        self._store = store
        self._retry = retry
        self._delays = tuple(delays)
        self._max_waiting = max_waiting
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wrap_retry(self, wrap: Callable[[Retry], Retry]) -> None:
        """Several processes (ranvier.workers): each room's retries go to the process that persists it."""
        self._retry = wrap(self._retry)

    async def add(self, origin: str, room_id: str, event_id: str, pdu: dict[str, Any]) -> None:
        """Keep ``pdu`` to be tried again (committed when this returns)."""
        first = now_ms() + int(self._delays[0] * 1000)
        if await self._store.add(event_id, room_id, origin, pdu, first, self._max_waiting):
            logger.info("deferred %s from %s: tried again in %.0f s", event_id, origin, self._delays[0])
            self.start()  # normally running since the server started; a no-op then
            self._wake.set()
        elif await self._store.count() >= self._max_waiting:
            logger.warning(
                "not deferring %s from %s: %d PDUs wait already", event_id, origin, self._max_waiting
            )

    def start(self) -> None:
        """Resume the tries kept in the database (after a restart they are due at once if overdue)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="deferred PDUs")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                due = await self._store.due(now_ms(), BATCH)
                for item in due:
                    await self._try(item)
                if len(due) == BATCH:
                    continue
                self._wake.clear()
                upcoming = await self._store.next_try_ts()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("trying deferred PDUs again failed")
                upcoming = now_ms() + int(self._delays[0] * 1000)
            timeout = None if upcoming is None else max(0.0, (upcoming - now_ms()) / 1000)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _try(self, item: DeferredPdu) -> None:
        try:
            judged = await self._retry(item.origin, item.pdu)
        except Exception:
            logger.exception("retrying deferred %s from %s failed", item.event_id, item.origin)
            judged = False
        tries = item.tries + 1
        if judged:
            logger.info("deferred %s from %s handled on try %d", item.event_id, item.origin, tries)
            await self._store.delete(item.event_id)
        elif tries >= len(self._delays):
            logger.warning("gave up on deferred %s from %s after %d tries", item.event_id, item.origin, tries)
            await self._store.delete(item.event_id)
        else:
            await self._store.reschedule(item.event_id, tries, now_ms() + int(self._delays[tries] * 1000))
