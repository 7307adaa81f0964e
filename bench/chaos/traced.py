"""``python3 -m bench.chaos.traced CONFIG OUTDIR``: ``ranvier run -c CONFIG`` with memory accounting.

Each SIGUSR2 appends one line to OUTDIR/memstats.jsonl: RSS, what glibc malloc has handed out and holds free
(``mallinfo2``, all arenas), what SQLite has allocated (``sqlite3_status64``: page caches, statements), the
Python allocations tracemalloc sees, and the number of objects the GC tracks. That splits an RSS growth into
Python objects, SQLite, and memory malloc keeps but does not use (fragmentation). With
``CHAOS_TRACEMALLOC_FRAMES`` > 0 (the default is 1) tracemalloc runs and each SIGUSR2 also writes a snapshot
to OUTDIR/snap-NNNN.pickle (``tracemalloc.Snapshot.load`` reads it back); 0 leaves tracemalloc off, for
figures without its overhead.

Two diagnostic knobs shrink the server's caches, to see whether RSS levels off once they are full (a cache
filling) or keeps growing (a leak): ``CHAOS_CACHED_EVENTS`` (the event cache's size in events, 50,000 in
ranvier.storage.sql.RoomStorage.open) and ``CHAOS_SQLITE_CACHE_KIB`` (SQLite's page cache per connection,
64 MiB in ranvier.storage.sql.engine).
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import resource
import signal
import sys
import time
import tracemalloc
from pathlib import Path
from types import FrameType


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                     "fordblks", "keepcost")
    ]  # fmt: skip


def memstats() -> dict[str, float]:
    page = resource.getpagesize()
    with open("/proc/self/statm") as f:
        rss = int(f.read().split()[1]) * page
    out: dict[str, float] = {"t": time.time(), "rss": rss, "gc_objects": len(gc.get_objects())}
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        m = libc.mallinfo2()
        out["malloc_used"] = m.uordblks + m.hblkhd  # handed out: small/medium chunks and mmapped large ones
        out["malloc_free_held"] = m.fordblks  # freed but kept by malloc (in RSS unless trimmed)
    except (OSError, AttributeError):
        pass
    try:
        lib = ctypes.CDLL("libsqlite3.so.0")  # the library _sqlite3 links to, so the same global counters
        cur, high = ctypes.c_int64(), ctypes.c_int64()
        if (
            lib.sqlite3_status64(0, ctypes.byref(cur), ctypes.byref(high), 0) == 0
        ):  # SQLITE_STATUS_MEMORY_USED
            out["sqlite_used"] = cur.value
    except (OSError, AttributeError):
        pass
    if tracemalloc.is_tracing():
        out["python_traced"] = tracemalloc.get_traced_memory()[0]
    return out


def main(argv: list[str]) -> int:
    config, outdir = argv[0], Path(argv[1])
    outdir.mkdir(parents=True, exist_ok=True)
    frames = int(os.environ.get("CHAOS_TRACEMALLOC_FRAMES", "1"))
    if frames > 0:
        tracemalloc.start(frames)
    taken = len(list(outdir.glob("snap-*.pickle")))

    def dump(signum: int, frame: FrameType | None) -> None:
        nonlocal taken
        # Runs in the main thread between two bytecodes of the event loop: nothing else allocates meanwhile
        # (worker threads aside). The figures are read before the snapshot, which allocates a lot.
        with open(outdir / "memstats.jsonl", "a") as f:
            f.write(json.dumps(memstats()) + "\n")
        if tracemalloc.is_tracing():
            tracemalloc.take_snapshot().dump(str(outdir / f"snap-{taken:04d}.pickle"))
            taken += 1

    signal.signal(signal.SIGUSR2, dump)
    from ranvier.cli import main as ranvier_main

    return ranvier_main(["run", "-c", config])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
