"""Metrics read when Prometheus scrapes rather than counted as things happen: they describe the state of
the database and the federation sender, which is cheaper to read once per scrape than to track.

``ScrapeCollector.refresh`` (async: it queries the database) runs from the /metrics handler before the
registry is rendered; ``collect`` (sync, as prometheus_client calls it) yields the last snapshot.
``LoopLagMonitor`` samples how late the event loop runs a callback, once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from .storage.sql.engine import Database

logger = logging.getLogger(__name__)

EXTREMITY_BUCKETS = (1, 2, 3, 5, 10, 20, 50, 100, 200)


@dataclass
class _Snapshot:
    extremities: list[int] = field(default_factory=list)
    oldest_queued_ts: dict[str, int] = field(default_factory=dict)
    taken_ms: int = 0
    connections: tuple[int, int] | None = None
    destinations: list[str] = field(default_factory=list)


def extremity_histogram(counts: list[int]) -> tuple[list[tuple[str, float]], float]:
    """Cumulative buckets (le, count) over rooms by their number of forward extremities, and the sum."""
    buckets: list[tuple[str, float]] = [
        (str(le), float(sum(1 for c in counts if c <= le))) for le in EXTREMITY_BUCKETS
    ]
    buckets.append(("+Inf", float(len(counts))))
    return buckets, float(sum(counts))


class ScrapeCollector(Collector):
    def __init__(self, db: Database, sender: Any | None = None) -> None:
        self._db = db
        self._sender = sender
        self._snapshot = _Snapshot()

    async def refresh(self) -> None:
        snap = _Snapshot(taken_ms=int(time.time() * 1000))
        rows = await self._db.fetchall("SELECT COUNT(*) FROM forward_extremities GROUP BY room_id")
        snap.extremities = [int(r[0]) for r in rows]
        # The oldest event still queued for each destination, by its origin_server_ts: for our own events
        # (almost all of the outbox) that is when it was created and queued.
        rows = await self._db.fetchall(
            "SELECT o.destination, MIN(e.origin_server_ts) FROM outbox_pdus o "
            "JOIN events e ON e.event_id = o.event_id GROUP BY o.destination"
        )
        snap.oldest_queued_ts = {r[0]: int(r[1]) for r in rows if r[1] is not None}
        rows = await self._db.fetchall(
            "SELECT destination FROM destination_retry UNION SELECT destination FROM outbox_pdus"
        )
        snap.destinations = sorted(r[0] for r in rows)
        snap.connections = self._db.connections_in_use()
        self._snapshot = snap

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot
        buckets, total = extremity_histogram(snap.extremities)
        hist = HistogramMetricFamily(
            "ranvier_room_forward_extremities",
            "Rooms by their number of forward extremities (read at scrape time)",
        )
        hist.add_metric([], buckets, total)
        yield hist
        age = GaugeMetricFamily(
            "ranvier_federation_oldest_queued_pdu_age_seconds",
            "Age of the oldest PDU still queued for a destination (by its origin_server_ts)",
            labels=["destination"],
        )
        for destination, ts in sorted(snap.oldest_queued_ts.items()):
            age.add_metric([destination], max(0.0, (snap.taken_ms - ts) / 1000))
        yield age
        if self._sender is not None:
            state = GaugeMetricFamily(
                "ranvier_federation_destination_state",
                "1 for the state each known destination's sender is in (idle, sending, backing_off)",
                labels=["destination", "state"],
            )
            # Destinations with a back-off or something queued; the others are idle and healthy.
            for destination in snap.destinations:
                state.add_metric([destination, self._sender.worker_state(destination)], 1.0)
            yield state
        if snap.connections is not None:
            in_use, size = snap.connections
            pool = GaugeMetricFamily(
                "ranvier_db_connections", "Database connections by use", labels=["state"]
            )
            pool.add_metric(["in_use"], float(in_use))
            pool.add_metric(["idle"], float(max(0, size - in_use)))
            yield pool


class LoopLagMonitor:
    """Samples event-loop lag: sleeps a second and measures how much later than asked it woke up."""

    def __init__(self, observe: Callable[[float], None], interval: float = 1.0) -> None:
        self._observe = observe
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self._interval)
            self._observe(max(0.0, loop.time() - start - self._interval))
