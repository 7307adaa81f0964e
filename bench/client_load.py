"""Client load (issue 5): N concurrent clients of one server send into one room as fast as each one's
previous send is answered, while another client of the same server long-polls ``/sync``. Figures: messages
sent per second over all senders, and median/p95 latency from the start of a send to the ``/sync`` answer
that carried it. Memory and CPU of the server come from the comparison harness.

``python3 -m bench client_load [compare options]`` runs only this workload of ``bench/compare.py``.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from bench.workloads.base import Options, Pair, Recorder, describe
from bench.workloads.client import MxClient, SyncWatcher, percentile
from bench.workloads.latency import Arrivals

ALL_SEEN_TIMEOUT = 120.0


async def one_round(
    senders: list[MxClient], room_id: str, arrivals: Arrivals, per_client: int, tag: str
) -> tuple[float, list[float]]:
    """Returns (messages per second, latencies in seconds)."""
    sent_at: dict[str, float] = {}
    futures: dict[str, asyncio.Future[float]] = {}

    async def sender(n: int, client: MxClient) -> None:
        for i in range(per_client):
            body = f"{tag}-{n}-{i}"
            futures[body] = arrivals.expect(body)
            sent_at[body] = time.perf_counter()
            await client.send_text(room_id, body)

    t0 = time.perf_counter()
    await asyncio.gather(*(sender(n, c) for n, c in enumerate(senders)))
    rate = len(sent_at) / (time.perf_counter() - t0)
    seen = await asyncio.wait_for(asyncio.gather(*futures.values()), ALL_SEEN_TIMEOUT)
    return rate, [s - sent_at[body] for body, s in zip(futures, seen, strict=True)]


class ClientLoad:
    name = "client_load"
    title = "Client load: concurrent senders, one room, one server"
    servers = 1
    proxied = False

    def steps(self, opts: Options) -> int:
        return opts.repeats

    async def run(self, pair: Pair, opts: Options, rec: Recorder) -> None:
        url = pair.servers[0].client_url
        label = f"{opts.load_clients} clients"
        watcher: SyncWatcher | None = None
        try:
            owner = await MxClient.register(pair.session, url, "owner")
            room_id = await owner.create_room(name="load")
            senders = [await MxClient.register(pair.session, url, "sender") for _ in range(opts.load_clients)]
            for s in senders:
                await s.join(room_id, pair.servers[0].server_name)
            arrivals = Arrivals()
            watcher = SyncWatcher(owner, arrivals.on_event)
            await watcher.start()
            await one_round(senders, room_id, arrivals, 2, "warm")
        except Exception as e:
            for _ in range(opts.repeats):
                rec.failure("messages sent", "msg/s", f"setup: {describe(e)}", label, "higher")
                rec.tick()
            if watcher is not None:
                await watcher.stop()
            return
        try:
            for r in range(opts.repeats):
                try:
                    rate, lat = await one_round(senders, room_id, arrivals, opts.load_messages, f"load{r}")
                    rec.value("messages sent", "msg/s", rate, label, "higher")
                    rec.value("send to /sync median", "ms", statistics.median(lat) * 1000, label)
                    rec.value("send to /sync p95", "ms", percentile(lat, 95) * 1000, label)
                except Exception as e:
                    rec.failure("messages sent", "msg/s", describe(e), label, "higher")
                rec.tick()
        finally:
            await watcher.stop()


def main(argv: list[str]) -> None:
    from bench import compare

    compare.main(["--workloads", "client_load", *argv])
