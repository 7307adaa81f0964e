"""Closing holes in room timelines in the background (S2S "Backfilling and retrieving missing events").

A hole appears when the intake (``incoming.py``) meets a PDU whose prev events it cannot all fetch with one
``/get_missing_events``: it takes the state at the rest from ``/state_ids`` and persists the PDU, and the
unfetched prev events stay behind as *backward extremities* in the middle of the timeline (a peer that was
unreachable for long, or a sender that thinned a huge backlog). Such a hole must not wait for a client to
page to it: this task asks the room's servers for the events before it (``/backfill`` from the gap, through
``Backfiller.fill_from``, which runs every event through the receipt checks and persists each chunk in DAG
order) and repeats until no backward extremity is left in the middle of the timeline, or a bound is met:

- ``max_events`` events per room and episode (a hostile or broken peer cannot make us fetch without end;
  what is left is still filled when a client pages there, see ``client_api/messages.py``);
- ``max_failures`` fruitless rounds in a row, with a doubling pause between them: nobody could give the
  events (or they never existed: a server may cite prev events it never sends), so those holes are left
  alone in the background for ``GIVEN_UP_SECONDS`` (a client paging there still tries).

Durable across restarts by construction: the holes *are* the stored backward extremities, so ``start()``
looks at every room that has some and resumes where the last run stopped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from ..storage.interfaces import TopoToken
from ..storage.protocols.composite import HasEvents
from .backfill import MAX_BACKFILL, MAX_EXTREMITIES, Backfiller

logger = logging.getLogger(__name__)

MAX_FAILURES = 5
FIRST_RETRY_DELAY = 2.0
MAX_RETRY_DELAY = 60.0
STOP_GRACE_SECONDS = 5.0
# Rooms filled at once (a start looks at every room with backward extremities; most have no hole).
MAX_CONCURRENT_ROOMS = 4
# A hole nobody could fill is left alone this long (seconds) before it is tried again in the background (a
# server can cite events that do not exist; each try asks the room's servers), and at most this many such
# holes are remembered.
GIVEN_UP_SECONDS = 600.0
MAX_GIVEN_UP = 10_000


class GapFiller:
    def __init__(
        self,
        storage: HasEvents,
        backfiller: Backfiller,
        *,
        max_events: int,
        metrics: Any = None,
        max_failures: int = MAX_FAILURES,
        first_retry_delay: float = FIRST_RETRY_DELAY,
    ) -> None:
        self._storage = storage
        self._backfiller = backfiller
        self._max_events = max_events
        self._metrics = metrics
        self._max_failures = max_failures
        self._first_retry_delay = first_retry_delay
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # Rooms noticed again while their task runs: the task looks once more before it ends.
        self._again: set[str] = set()
        self._concurrency = asyncio.Semaphore(MAX_CONCURRENT_ROOMS)
        # Backward extremities given up on -> when (monotonic), oldest first.
        self._given_up: dict[str, float] = {}
        self._pausing: set[asyncio.Task[Any]] = set()
        self._running = False

    @property
    def enabled(self) -> bool:
        return self._max_events > 0

    async def start(self, owned: Callable[[str], bool] | None = None) -> None:
        """Resume: every room with backward extremities is looked at (most have none in the middle); with
        workers, only the rooms this process persists (``owned``): each persister fills its own rooms'
        holes, noticed by its own intake."""
        self._running = True
        if not self.enabled:
            return
        for room_id in await self._storage.events.get_rooms_with_backward_extremities():
            if owned is None or owned(room_id):
                self.notice(room_id)

    async def stop(self) -> None:
        """Let each task finish its round (a round persists its chunk in one transaction; cancelling one in
        the middle of a database call is best avoided), then cancel what is still waiting."""
        self._running = False
        tasks = list(self._tasks.values())
        for task in self._pausing:
            task.cancel()  # waiting between rounds: nothing to finish
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=STOP_GRACE_SECONDS)
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    def notice(self, room_id: str) -> None:
        """A hole may have appeared in ``room_id`` (it is persisted already): fill it soon."""
        if not self._running or not self.enabled:
            return
        task = self._tasks.get(room_id)
        if task is not None and not task.done():
            self._again.add(room_id)
            return
        self._tasks[room_id] = asyncio.create_task(self._run(room_id), name=f"gap filler {room_id}")

    def is_idle(self, room_id: str) -> bool:
        task = self._tasks.get(room_id)
        return task is None or task.done()

    async def _run(self, room_id: str) -> None:
        try:
            while self._running:
                self._again.discard(room_id)
                async with self._concurrency:
                    await self._fill(room_id)
                if room_id not in self._again:
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("filling the gaps of %s failed", room_id)
        finally:
            if self._tasks.get(room_id) is asyncio.current_task():
                del self._tasks[room_id]

    async def _fill(self, room_id: str) -> None:
        fetched = 0
        failures = 0
        delay = self._first_retry_delay
        while self._running:
            gaps = self._worth_trying(await self._storage.events.get_timeline_gaps(room_id))
            if not gaps:
                if fetched:
                    logger.info("timeline of %s connected again: %d events filled in", room_id, fetched)
                return
            if fetched >= self._max_events:
                logger.warning(
                    "leaving %d gaps in %s after filling %d events (gap_fill_max_events); clients paging"
                    " there fill the rest",
                    len(gaps),
                    room_id,
                    fetched,
                )
                return
            # The newest holes first: they are what clients are about to read.
            newest = sorted(gaps, key=lambda e: gaps[e], reverse=True)[:MAX_EXTREMITIES]
            limit = min(MAX_BACKFILL, self._max_events - fetched)
            added = await self._backfiller.fill_from(room_id, newest, limit)
            if added:
                fetched += added
                failures = 0
                delay = self._first_retry_delay
                if self._metrics is not None:
                    self._metrics.gaps_filled.inc(added)
                continue
            failures += 1
            if failures >= self._max_failures:
                logger.warning(
                    "could not fill %d gaps in %s (%d rounds brought nothing); left for later",
                    len(newest),
                    room_id,
                    failures,
                )
                self._give_up(newest)
                if self._metrics is not None:
                    self._metrics.gaps_given_up.inc(len(newest))
                failures, delay = 0, self._first_retry_delay
                continue
            await self._pause(delay)
            delay = min(delay * 2, MAX_RETRY_DELAY)

    def _worth_trying(self, gaps: dict[str, TopoToken]) -> dict[str, TopoToken]:
        now = time.monotonic()
        while self._given_up and now - next(iter(self._given_up.values())) > GIVEN_UP_SECONDS:
            del self._given_up[next(iter(self._given_up))]
        return {e: p for e, p in gaps.items() if e not in self._given_up}

    def _give_up(self, extremities: list[str]) -> None:
        now = time.monotonic()
        for event_id in extremities:
            self._given_up.pop(event_id, None)
            self._given_up[event_id] = now
        while len(self._given_up) > MAX_GIVEN_UP:
            del self._given_up[next(iter(self._given_up))]

    async def _pause(self, seconds: float) -> None:
        """Sleep between fruitless rounds; ``stop()`` cancels a task waiting here at once."""
        task = asyncio.current_task()
        assert task is not None
        self._pausing.add(task)
        try:
            await asyncio.sleep(seconds)
        finally:
            self._pausing.discard(task)
