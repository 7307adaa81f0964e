"""Message latency across federation: a client of server 0 sends, one at a time, and a client of server 1
long-polls ``/sync``; each latency is from the start of the ``PUT /send`` to the ``/sync`` answer that
carried the message. Median and p95 per repeat."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from .base import Options, Pair, Recorder, describe
from .client import MxClient, SyncWatcher, percentile

WAIT = 30.0


class Arrivals:
    """Futures keyed by message body, resolved by a ``SyncWatcher`` with the time the body was seen."""

    def __init__(self) -> None:
        self.pending: dict[str, asyncio.Future[float]] = {}

    def expect(self, body: str) -> asyncio.Future[float]:
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.pending[body] = fut
        return fut

    def on_event(self, _room_id: str, event: dict[str, Any], seen_at: float) -> None:
        body = event.get("content", {}).get("body")
        fut = self.pending.pop(body, None) if isinstance(body, str) else None
        if fut is not None and not fut.done():
            fut.set_result(seen_at)


async def joined_pair(pair: Pair) -> tuple[MxClient, MxClient, str, Arrivals, SyncWatcher]:
    """Alice on server 0 with a room that Bob of server 1 has joined; Bob's watcher is running."""
    a, b = pair.servers
    alice = await MxClient.register(pair.session, a.client_url, "alice")
    bob = await MxClient.register(pair.session, b.client_url, "bob")
    room_id = await alice.create_room(name="latency")
    arrivals = Arrivals()
    watcher = SyncWatcher(bob, arrivals.on_event)
    await watcher.start()
    await bob.join(room_id, a.server_name)
    await watcher.wait_joined(room_id, 120)
    return alice, bob, room_id, arrivals, watcher


class MessageLatency:
    name = "latency"
    title = "Message latency, server 0 send -> server 1 /sync"
    servers = 2
    proxied = False

    def steps(self, opts: Options) -> int:
        return opts.repeats

    async def run(self, pair: Pair, opts: Options, rec: Recorder) -> None:
        try:
            alice, _bob, room_id, arrivals, watcher = await joined_pair(pair)
        except Exception as e:
            for _ in range(opts.repeats):
                rec.failure("median", "ms", f"setup: {describe(e)}")
                rec.tick()
            return
        try:
            for warm in range(5):  # connections and caches warm on both sides before timing
                fut = arrivals.expect(f"warm-{warm}")
                await alice.send_text(room_id, f"warm-{warm}")
                await asyncio.wait_for(fut, WAIT)
            for r in range(opts.repeats):
                try:
                    latencies = []
                    for i in range(opts.latency_messages):
                        body = f"lat-{r}-{i}"
                        fut = arrivals.expect(body)
                        t0 = time.perf_counter()
                        await alice.send_text(room_id, body)
                        latencies.append(await asyncio.wait_for(fut, WAIT) - t0)
                    rec.value("median", "ms", statistics.median(latencies) * 1000)
                    rec.value("p95", "ms", percentile(latencies, 95) * 1000)
                except Exception as e:
                    rec.failure("median", "ms", describe(e))
                rec.tick()
        finally:
            await watcher.stop()
