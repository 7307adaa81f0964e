"""The soak: steady load without faults for a while, RSS of every server sampled over time.

``--traced`` runs the servers under tracemalloc (``bench.chaos.traced``) and takes a snapshot at each sample;
the report then lists the source lines whose live allocations grew most between the first sample after
warm-up and the last, which tells a cache filling (growth that stops, in a cache's lines) from a leak.
At the end the invariants are checked as in a trial.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import tracemalloc
from pathlib import Path

import aiohttp

from . import check
from .cluster import Cluster
from .trial import TrialConfig
from .workload import User, setup_room

TOP = 25


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope, per minute."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    den = sum((t - mx) ** 2 for t, _ in points)
    return 60 * sum((t - mx) * (v - my) for t, v in points) / den if den else 0.0


async def run_soak(
    cfg: TrialConfig, seconds: float, interval: float, backend: str, *, memory_probe: str | None
) -> None:
    workdir = (cfg.workdir / f"soak-{int(time.time())}-{backend}").resolve()
    cluster = Cluster.create(workdir, cfg.servers, postgres=backend == "postgres", memory_probe=memory_probe)
    print(
        f"soak: {cfg.servers} servers ({backend}), one message per {cfg.interval}s per server, {seconds:.0f}s"
    )
    samples: list[tuple[float, list[float | None], int]] = []
    try:
        await cluster.start()
        async with aiohttp.ClientSession() as session:
            users = [User(s, session) for s in cluster.servers]
            room_id = await setup_room(users, f"soak{int(time.time()) % 100000}")
            stop = asyncio.Event()
            senders = [asyncio.create_task(u.send_loop(room_id, "soak", cfg.interval, stop)) for u in users]
            t0 = time.monotonic()
            print(f"{'t (s)':>7} " + " ".join(f"{'s' + str(s.index) + ' MB':>8}" for s in cluster.servers)
                  + f" {'acked':>7}")  # fmt: skip
            try:
                while True:
                    t = time.monotonic() - t0
                    rss = [s.rss_mb() for s in cluster.servers]
                    acked = sum(len(u.acks) for u in users)
                    samples.append((t, rss, acked))
                    if memory_probe:
                        for s in cluster.servers:
                            if s.process is not None and s.alive:
                                os.kill(s.process.pid, signal.SIGUSR2)
                    shown = " ".join(f"{v:8.1f}" if v is not None else f"{'-':>8}" for v in rss)
                    print(f"{t:7.0f} {shown} {acked:7d}", flush=True)
                    if t >= seconds:
                        break
                    await asyncio.sleep(min(interval, seconds - t))
            finally:
                stop.set()
                await asyncio.gather(*senders, return_exceptions=True)
            acked_ids = [a.event_id for u in users for a in u.acks]
            await asyncio.sleep(5)
            timelines = await check.read_all(cluster.servers, room_id)
            state = await check.compare_state(users, room_id)
            print(
                f"acknowledged {len(acked_ids)}, missing {check.missing(acked_ids, timelines)}, "
                f"/state divergent {state.divergent or 'none'}, duplicates {check.duplicates(timelines)[0]}, "
                f"order inversions {sum(check.order_inversions(acked_ids, timelines).values())}"
            )
    finally:
        await cluster.close()
    half = [s for s in samples if s[0] >= samples[-1][0] / 2] if samples else []
    for i, server in enumerate(cluster.servers):
        points = [(t, v) for t, rss, _ in samples if (v := rss[i]) is not None]
        late = [(t, v) for t, rss, _ in half if (v := rss[i]) is not None]
        if points:
            print(
                f"s{server.index}: RSS {points[0][1]:.1f} -> {points[-1][1]:.1f} MB, "
                f"slope {_slope(points):.2f} MB/min overall, {_slope(late):.2f} MB/min over the second half"
            )
    if memory_probe:
        for server in cluster.servers:
            report_memstats(server.memory_dir / "memstats.jsonl", f"s{server.index}")
    if memory_probe == "tracemalloc":
        for server in cluster.servers:
            report_growth(server.memory_dir, f"s{server.index}")


def report_memstats(path: Path, label: str) -> None:
    """RSS split into its parts at every sample (MB), and the change from the first warm sample to the
    last."""
    if not path.exists():
        print(f"{label}: no memory figures")
        return
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    cols = ["rss", "malloc_used", "malloc_free_held", "sqlite_used", "python_traced"]
    cols = [c for c in cols if any(c in r for r in rows)]
    print(f"{label}: memory (MB) per sample; gc_objects is a count")
    print("  " + " ".join(f"{c:>16}" for c in [*cols, "gc_objects"]))
    for r in rows:
        cells = [f"{r[c] / 2**20:16.1f}" if c in r else f"{'-':>16}" for c in cols]
        print("  " + " ".join(cells) + f" {int(r.get('gc_objects', 0)):16d}")
    if len(rows) >= 3:
        first, last = rows[1], rows[-1]
        minutes = (last["t"] - first["t"]) / 60 or 1.0
        parts = []
        for c in cols:
            mb = (last.get(c, 0) - first.get(c, 0)) / 2**20
            parts.append(f"{c} {mb:+.1f} MB ({mb / minutes:+.2f}/min)")
        objects = int(last["gc_objects"] - first["gc_objects"])
        print(f"  from sample 1 to the last: {', '.join(parts)}, gc_objects {objects:+d}")


def report_growth(snapdir: Path, label: str, top: int = TOP) -> None:
    snaps = sorted(snapdir.glob("snap-*.pickle"))
    if len(snaps) < 3:
        print(f"{label}: fewer than 3 tracemalloc snapshots, no comparison")
        return
    # The first sample is taken right after start-up; compare from the second (warm) one.
    first, last = tracemalloc.Snapshot.load(str(snaps[1])), tracemalloc.Snapshot.load(str(snaps[-1]))
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen *>")]
    first, last = first.filter_traces(ignore), last.filter_traces(ignore)
    total_first = sum(s.size for s in first.statistics("filename"))
    total_last = sum(s.size for s in last.statistics("filename"))
    print(
        f"{label}: traced Python memory {total_first / 2**20:.1f} -> {total_last / 2**20:.1f} MB "
        f"between {snaps[1].name} and {snaps[-1].name}; top growth by line:"
    )
    for stat in last.compare_to(first, "lineno")[:top]:
        frame = stat.traceback[0]
        print(
            f"  {stat.size_diff / 1024:+9.0f} KiB {stat.count_diff:+8d} blocks  "
            f"{frame.filename}:{frame.lineno}  (now {stat.size / 1024:.0f} KiB)"
        )
