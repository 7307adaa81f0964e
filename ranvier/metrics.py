"""Prometheus metrics (opt-in listener). One registry per homeserver, so tests can run several.

The families an operator watches (contrib/grafana/ranvier-dashboard.json is built on these names):
- HTTP: requests by listener, method, route and status, latency histograms by route, requests in flight;
- federation out: requests by destination, endpoint and outcome (transactions are endpoint
  ``federation/v1/send``, key fetches ``key/v2/server`` and ``key/v2/query``), per-destination queue depth,
  back-off and failures (set by the sender), the oldest queued PDU's age and each destination's state
  (read at scrape time, metrics_collectors.py);
- federation in: PDUs of ``/send`` transactions by outcome and reason;
- rooms: events persisted by kind, persist batch time, state resolution time, remote join time by phase,
  gaps found, filled and given up in the background, join-gap events found and dummy events sent
  (healing), and the distribution of forward extremities per room (scrape time);
- database: statement latency, time and statements per request (from the access log's query timer),
  connections in use (scrape time);
- process: CPU, RSS, open file descriptors (prometheus_client's process collector) and event-loop lag.
"""

from __future__ import annotations

import asyncio
import collections
import logging
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
    ProcessCollector,
    generate_latest,
)

from .storage.sql.engine import query_timer

REFRESH_TIMEOUT = 5.0
logger = logging.getLogger(__name__)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # CPU seconds, RSS, virtual memory, open and max file descriptors, start time (process_* names).
        ProcessCollector(registry=self.registry)
        # Async work run before each scrape (metrics_collectors.ScrapeCollector.refresh).
        self.refreshers: list[Callable[[], Awaitable[None]]] = []
        self.requests = Counter(
            "ranvier_http_requests",
            "HTTP requests served, by listener, route and status",
            ["listener", "method", "route", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "ranvier_http_request_seconds",
            "Time to serve a request, by listener, method and route",
            ["listener", "method", "route"],
            registry=self.registry,
        )
        self.requests_in_flight = Gauge(
            "ranvier_http_requests_in_flight", "Requests being served", ["listener"], registry=self.registry
        )
        self.federation_requests = Counter(
            "ranvier_federation_client_requests",
            "Outgoing federation requests by destination, endpoint and outcome (HTTP status or unreachable)",
            ["destination", "endpoint", "outcome"],
            registry=self.registry,
        )
        self.federation_request_seconds = Histogram(
            "ranvier_federation_client_request_seconds",
            "Time of outgoing federation requests by endpoint",
            ["endpoint"],
            registry=self.registry,
        )
        self.inbound_pdus = Counter(
            "ranvier_federation_inbound_pdus",
            "PDUs received in /send transactions, by outcome (accepted, refused) and reason",
            ["outcome", "reason"],
            registry=self.registry,
        )
        self.state_res_seconds = Histogram(
            "ranvier_state_resolution_seconds",
            "Time to resolve the state of a room from several state sets",
            registry=self.registry,
        )
        self.join_phase_seconds = Histogram(
            "ranvier_remote_join_phase_seconds",
            "Time of each phase of joining a room over federation (make_join, send_join, persist)",
            ["phase"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        self.join_gap_events = Counter(
            "ranvier_join_gap_events_found",
            "Events created during our join (between make_join and send_join) found and pulled in",
            registry=self.registry,
        )
        self.dummy_events = Counter(
            "ranvier_dummy_events_sent",
            "Dummy events sent to tie forward extremities together (join gap and extremity healing)",
            registry=self.registry,
        )
        self.request_db_seconds = Histogram(
            "ranvier_http_request_db_seconds",
            "Time a request spent in database statements (the access log's db time), by listener",
            ["listener"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
            registry=self.registry,
        )
        self.request_db_queries = Histogram(
            "ranvier_http_request_db_queries",
            "Database statements run for one request, by listener",
            ["listener"],
            buckets=(0, 1, 2, 5, 10, 20, 50, 100, 500),
            registry=self.registry,
        )
        self.db_statement_seconds = Histogram(
            "ranvier_db_statement_seconds",
            "Database statement latency, from submission to result (waits for a connection not included)",
            buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
            registry=self.registry,
        )
        self.gaps_found = Counter(
            "ranvier_timeline_gaps_found",
            "Holes left in a room's timeline by received events (backward extremities for the gap filler)",
            registry=self.registry,
        )
        self.event_loop_lag = Histogram(
            "ranvier_event_loop_lag_seconds",
            "How late the event loop ran a callback scheduled for now (sampled every second)",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
            registry=self.registry,
        )
        self.events_persisted = Counter(
            "ranvier_events_persisted",
            "Events persisted, by kind (timeline, outlier, rejected, soft_failed, backfilled)",
            ["kind"],
            registry=self.registry,
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
        self.partial_state_rooms = Gauge(
            "ranvier_partial_state_rooms",
            "Rooms joined with partial state (MSC3706) whose full state is still being fetched",
            registry=self.registry,
        )
        self.partial_state_resync_failures = Counter(
            "ranvier_partial_state_resync_failures",
            "Failed attempts to fetch the full state of a room joined with partial state (each is retried)",
            registry=self.registry,
        )
        self.gaps_given_up = Counter(
            "ranvier_timeline_gaps_given_up",
            "Timeline gaps (backward extremities) left unfilled in the background after every try failed",
            registry=self.registry,
        )

    # Both below count a whole batch with one labels().inc(n) per distinct label set: labels() and inc()
    # each take a lock and look the child up, a few microseconds that were paid once per PDU (50 times a
    # /send transaction) on the event loop.

    def count_persisted(self, kinds: list[str]) -> None:
        for kind, n in collections.Counter(kinds).items():
            self.events_persisted.labels(kind).inc(n)

    def observe_inbound_results(self, results: dict[str, dict[str, str]]) -> None:
        """Counts the per-PDU results of one /send transaction (an empty result is an accepted PDU)."""
        counts: collections.Counter[tuple[str, str]] = collections.Counter()
        for result in results.values():
            error = result.get("error")
            if error is None:
                counts["accepted", ""] += 1
            else:
                counts["refused", refusal_reason(error)] += 1
        for labels, n in counts.items():
            self.inbound_pdus.labels(*labels).inc(n)

    def observe_federation_request(
        self, destination: str, path: str, status: int | None, seconds: float
    ) -> None:
        endpoint = federation_endpoint(path)
        outcome = "unreachable" if status is None else str(status)
        self.federation_requests.labels(destination, endpoint, outcome).inc()
        self.federation_request_seconds.labels(endpoint).observe(seconds)

    async def handler(self, request: web.Request) -> web.Response:
        for refresh in self.refreshers:
            try:
                await asyncio.wait_for(refresh(), timeout=REFRESH_TIMEOUT)
            except Exception:
                # The families keep their previous snapshot; the rest of the scrape is still worth having.
                logger.warning("a metrics refresh failed; serving its previous values", exc_info=True)
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})


def federation_endpoint(path: str) -> str:
    """``/_matrix/federation/v1/send/123`` -> ``federation/v1/send``: the endpoint without its arguments,
    so a label stays low in cardinality."""
    parts = path.split("?", 1)[0].split("/")
    return "/".join(parts[2:5]) if len(parts) >= 5 else "other"


def refusal_reason(error: str) -> str:
    """A PDU's error text reduced to a label: the auth rule ("rule 4.2") where it names one, else the
    first words (the texts come from our own code, so their prefixes are few)."""
    text = error.strip()
    if "rule " in text:
        rule = text.split("rule ", 1)[1].split(":", 1)[0].split()[0]
        return f"auth rule {rule}"[:40]
    return " ".join(text.split()[:3])[:40]


def metrics_middleware(metrics: Metrics, listener: str) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.perf_counter()
        status = 500
        in_flight = metrics.requests_in_flight.labels(listener)
        in_flight.inc()
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
            in_flight.dec()
            # Any token is a valid method to aiohttp: unknown ones share a label, so a client cannot grow
            # the label set without bound.
            method = request.method if request.method in KNOWN_METHODS else "other"
            metrics.requests.labels(listener, method, route, str(status)).inc()
            elapsed = time.perf_counter() - start
            metrics.request_seconds.labels(listener, method, route).observe(elapsed)
            # Set by the access log middleware around this one (ranvier/logs/access.py).
            timer = query_timer.get()
            if timer is not None:
                metrics.request_db_seconds.labels(listener).observe(timer.seconds)
                metrics.request_db_queries.labels(listener).observe(timer.queries)

    return middleware
