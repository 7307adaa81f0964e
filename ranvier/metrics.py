"""Prometheus metrics (opt-in listener): requests by endpoint and status, event persistence, and the
federation queue depth per destination. One registry per homeserver, so tests can run several."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "ranvier_http_requests",
            "HTTP requests served, by listener, route and status",
            ["listener", "method", "route", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "ranvier_http_request_seconds", "Time to serve a request", ["listener"], registry=self.registry
        )
        self.events_persisted = Counter(
            "ranvier_events_persisted", "Events persisted, by kind", ["kind"], registry=self.registry
        )
        self.persist_seconds = Histogram(
            "ranvier_persist_batch_seconds", "Time to persist one batch of events", registry=self.registry
        )
        self.federation_queue = Gauge(
            "ranvier_federation_queue_depth",
            "PDUs waiting in the outbox, per destination",
            ["destination"],
            registry=self.registry,
        )
        self.federation_retry_interval = Gauge(
            "ranvier_federation_retry_interval_seconds",
            "Current back-off before the next attempt to a destination (0: healthy)",
            ["destination"],
            registry=self.registry,
        )
        self.federation_failures = Gauge(
            "ranvier_federation_consecutive_failures",
            "Failed transactions to a destination since its last success or reachability proof",
            ["destination"],
            registry=self.registry,
        )
        self.gaps_filled = Counter(
            "ranvier_timeline_gap_events_filled",
            "Events fetched in the background to close gaps in room timelines",
            registry=self.registry,
        )
        self.gaps_given_up = Counter(
            "ranvier_timeline_gaps_given_up",
            "Timeline gaps (backward extremities) left unfilled in the background after every try failed",
            registry=self.registry,
        )

    async def handler(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def metrics_middleware(metrics: Metrics, listener: str) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as e:
            status = e.status
            raise
        finally:
            info = request.match_info.route.resource
            route = info.canonical if info is not None else "unmatched"
            metrics.requests.labels(listener, request.method, route, str(status)).inc()
            metrics.request_seconds.labels(listener).observe(time.perf_counter() - start)

    return middleware
