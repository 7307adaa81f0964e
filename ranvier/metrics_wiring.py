"""Connects the metrics (ranvier/metrics.py) to the parts of a running homeserver, and ``/health``.

Each part exposes a small ``on_*`` hook (a callable attribute, None by default) so that it does not depend
on prometheus_client; this module sets them. Kept out of app.py so that the list of what is measured reads
in one place.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from aiohttp import web

from .metrics_collectors import LoopLagMonitor, ScrapeCollector
from .storage.interfaces import EventToPersist
from .storage.sql.engine import Database

if TYPE_CHECKING:
    from .app import Homeserver

logger = logging.getLogger(__name__)

HEALTH_DB_TIMEOUT = 5.0


def persisted_kind(item: EventToPersist) -> str:
    if item.rejected_reason is not None:
        return "rejected"
    if item.outlier:
        return "outlier"
    if item.soft_failed:
        return "soft_failed"
    if item.backfilled:
        return "backfilled"
    return "timeline"


def wire_metrics(hs: Homeserver) -> LoopLagMonitor:
    """Sets every part's metrics hook; returns the started event-loop lag monitor (stop it at shutdown)."""
    metrics = hs.metrics

    async def count_persisted(room_id: str, batch: Sequence[EventToPersist]) -> None:
        metrics.count_persisted([persisted_kind(item) for item in batch])

    hs.persister.add_listener(count_persisted)
    hs.persister.on_batch_seconds = metrics.persist_seconds.observe
    hs.state.on_resolved = metrics.state_res_seconds.observe
    hs.federation_client.on_request = metrics.observe_federation_request
    hs.storage.db.on_statement = metrics.db_statement_seconds.observe
    sender = None
    if hs.config.federation.enabled:
        hs.inbound_transactions.on_results = metrics.observe_inbound_results
        fill_gap = hs.incoming_pdus.on_gap

        def gap_found(room_id: str) -> None:
            metrics.gaps_found.inc()
            if fill_gap is not None:
                fill_gap(room_id)

        hs.incoming_pdus.on_gap = gap_found
        hs.resident.on_dummy_sent = metrics.dummy_events.inc
        hs.remote_membership.on_join_phase = lambda phase, s: metrics.join_phase_seconds.labels(
            phase
        ).observe(s)
        hs.remote_membership.on_gap_events = metrics.join_gap_events.inc
        hs.partial_resync.on_failure = metrics.partial_state_resync_failures.inc
        hs.partial_resync.on_partial_rooms = metrics.partial_state_rooms.set
        sender = hs.federation_sender
    collector = ScrapeCollector(hs.storage.db, sender)
    metrics.registry.register(collector)
    metrics.refreshers.append(collector.refresh)
    monitor = LoopLagMonitor(metrics.event_loop_lag.observe)
    monitor.start()
    return monitor


def health_handler(db: Database) -> web.RouteDef:
    """``GET /health``: 200 ``OK`` while the database answers (as Synapse's, on every listener), else 503."""

    async def health(request: web.Request) -> web.Response:
        try:
            await asyncio.wait_for(db.fetchval("SELECT 1"), timeout=HEALTH_DB_TIMEOUT)
        except Exception as e:
            logger.warning("health check: the database did not answer: %s", e)
            return web.Response(status=503, text="database unavailable")
        return web.Response(text="OK")

    return web.get("/health", health)
