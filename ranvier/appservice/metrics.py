"""Prometheus view of the appservice pushers: per appservice, queued events, age of the oldest queued
item, transactions sent and failed attempts (values as of each worker's last step)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..clock import now_ms
from .pusher import AppServicePusher


class AppServiceCollector(Collector):
    def __init__(self, pusher: AppServicePusher, clock_ms: Callable[[], int] = now_ms) -> None:
        self._pusher = pusher
        self._clock_ms = clock_ms

    def collect(self) -> Iterator[Metric]:
        labels = ["appservice"]
        queued = GaugeMetricFamily(
            "ranvier_appservice_queued_events", "Events queued or in unsent transactions", labels=labels
        )
        ephemeral = GaugeMetricFamily(
            "ranvier_appservice_queued_ephemeral", "Ephemeral EDUs queued (typing, receipts)", labels=labels
        )
        oldest = GaugeMetricFamily(
            "ranvier_appservice_oldest_queued_seconds",
            "Age of the oldest undelivered item (0: none)",
            labels=labels,
        )
        backoff = GaugeMetricFamily(
            "ranvier_appservice_backoff_seconds",
            "Current back-off before the next attempt (0: healthy)",
            labels=labels,
        )
        sent = CounterMetricFamily(
            "ranvier_appservice_sent_transactions", "Transactions accepted", labels=labels
        )
        sent_events = CounterMetricFamily("ranvier_appservice_sent_events", "Events delivered", labels=labels)
        failures = CounterMetricFamily(
            "ranvier_appservice_failed_attempts", "Transaction attempts that failed", labels=labels
        )
        now = self._clock_ms()
        for as_id, worker in sorted(self._pusher.workers.items()):
            st = worker.stats
            queued.add_metric([as_id], st.queued_events)
            ephemeral.add_metric([as_id], st.queued_ephemeral)
            oldest.add_metric([as_id], 0 if st.oldest_ts is None else max(0, now - st.oldest_ts) / 1000)
            backoff.add_metric([as_id], worker.backoff)
            sent.add_metric([as_id], worker.sent_txns)
            sent_events.add_metric([as_id], worker.sent_events)
            failures.add_metric([as_id], worker.failures)
        yield from (queued, ephemeral, oldest, backoff, sent, sent_events, failures)
