"""Remote join time: a room with N custom state events is built through the client API on server 0, then a
fresh user of server 1 joins it; timed from the client's ``POST /join`` to the room showing up as joined in
that user's long-polling ``/sync``. Every repeat builds a fresh room (issue 21: re-joining one room measured
a warm re-join, with the room's events already held by the joiner), and its building time is reported on
its own. The joining server's CPU time (user + system, all threads) over the join is reported too, read
from the process itself, so that other load on the machine does not inflate it the way it inflates wall
time."""

from __future__ import annotations

import asyncio
import time

import psutil

from .base import Options, Pair, Recorder, describe
from .client import MxClient, SyncWatcher

BUILD_CONCURRENCY = 4  # requests in flight while building; the server orders them in the room anyway
JOIN_TIMEOUT = 900.0


async def build_room(owner: MxClient, size: int) -> str:
    room_id = await owner.create_room(name=f"state {size}")
    keys = iter(range(size))

    async def worker() -> None:
        for k in keys:  # the shared iterator bounds the total number of requests to ``size``
            await owner.put_state(room_id, "m.room.custom", f"key{k}", {"value": k, "pad": "x" * 32})

    await asyncio.gather(*(worker() for _ in range(BUILD_CONCURRENCY)))
    return room_id


class RemoteJoin:
    name = "join"
    title = "Remote join time (POST /join to joined in /sync)"
    servers = 2
    proxied = False

    def steps(self, opts: Options) -> int:
        return len(opts.sizes) * opts.repeats * 2

    async def run(self, pair: Pair, opts: Options, rec: Recorder) -> None:
        resident, joiner_hs = pair.servers
        owner = await MxClient.register(pair.session, resident.client_url, "owner")
        joiner_process = psutil.Process(joiner_hs.pid)
        for size in opts.sizes:
            label = f"{size} state"
            for _ in range(opts.repeats):
                started = time.perf_counter()
                try:
                    room_id = await build_room(owner, size)
                except Exception as e:
                    rec.failure("build room via client API", "events/s", describe(e), label, "higher")
                    rec.failure("join to /sync", "s", f"room not built: {describe(e)}", label)
                    rec.tick()
                    rec.tick()
                    continue
                rec.value("build room via client API", "events/s", size / (time.perf_counter() - started),
                          label, "higher")  # fmt: skip
                rec.tick()
                watcher: SyncWatcher | None = None
                try:
                    joiner = await MxClient.register(pair.session, joiner_hs.client_url, "joiner")
                    watcher = SyncWatcher(joiner)
                    await watcher.start()
                    cpu0 = _cpu(joiner_process)
                    t0 = time.perf_counter()
                    await joiner.join(room_id, resident.server_name)
                    answered = time.perf_counter() - t0
                    seen = await watcher.wait_joined(room_id, JOIN_TIMEOUT)
                    rec.value("join to /sync", "s", seen - t0, label)
                    rec.value("POST /join answered", "s", answered, label)
                    rec.value("joining server CPU", "s", _cpu(joiner_process) - cpu0, label)
                except Exception as e:
                    rec.failure("join to /sync", "s", describe(e), label)
                finally:
                    if watcher is not None:
                        await watcher.stop()
                rec.tick()


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)
