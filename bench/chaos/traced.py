"""``python3 -m bench.chaos.traced CONFIG OUTDIR``: ``ranvier run -c CONFIG`` under tracemalloc.

Each SIGUSR2 writes a snapshot to OUTDIR/snap-NNNN.pickle (``tracemalloc.Snapshot.load`` reads it back);
the soak sends one per RSS sample and compares the first with the last. Frames per trace come from
``CHAOS_TRACEMALLOC_FRAMES`` (default 1: the allocating line; more to see who called it).
"""

from __future__ import annotations

import os
import signal
import sys
import tracemalloc
from pathlib import Path
from types import FrameType


def main(argv: list[str]) -> int:
    config, outdir = argv[0], Path(argv[1])
    outdir.mkdir(parents=True, exist_ok=True)
    tracemalloc.start(int(os.environ.get("CHAOS_TRACEMALLOC_FRAMES", "1")))
    taken = len(list(outdir.glob("snap-*.pickle")))

    def dump(signum: int, frame: FrameType | None) -> None:
        nonlocal taken
        # Runs in the main thread between two bytecodes of the event loop: nothing else allocates meanwhile.
        tracemalloc.take_snapshot().dump(str(outdir / f"snap-{taken:04d}.pickle"))
        taken += 1

    signal.signal(signal.SIGUSR2, dump)
    from ranvier.cli import main as ranvier_main

    return ranvier_main(["run", "-c", config])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
