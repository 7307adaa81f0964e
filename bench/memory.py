"""Idle memory (issue 21: "an idle server under 60 MB"): the RSS and USS of a freshly started server on
SQLite, right after it answers (first start, then a restart) and again after ``--idle`` seconds (default 60)
of doing nothing, and, for
Ranvier, what importing the application alone costs (a bare interpreter, then ``import ranvier.app``),
which is most of an idle server's memory.

USS (memory only this process holds) is printed beside RSS: shared libraries count fully in RSS.

Usage: python3 -m bench memory [--idle 60] [--servers ranvier[,synapse]] [--out bench/results]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench.machine import describe_machine, finish, summary
from bench.servers import make_server
from tests.interop.synapse import DEFAULT_VERSION

IMPORT_PROBE = """
import json, psutil
p = psutil.Process()
bare = p.memory_full_info()
import ranvier.app
done = p.memory_full_info()
print(json.dumps({"bare_rss": bare.rss, "bare_uss": bare.uss, "app_rss": done.rss, "app_uss": done.uss}))
"""


def _mb(value: float) -> float:
    return round(value / 2**20, 1)


def _sample(pid: int) -> dict[str, float]:
    """RSS and USS of the process and its children (Synapse has none by default; the sum is what it costs)."""
    root = psutil.Process(pid)
    rss = uss = 0
    for proc in [root, *root.children(recursive=True)]:
        info = proc.memory_full_info()
        rss += info.rss
        uss += info.uss
    return {"rss_mb": _mb(rss), "uss_mb": _mb(uss)}


def import_cost() -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE], capture_output=True, text=True, timeout=120, check=True
    )
    raw = json.loads(done.stdout.strip().splitlines()[-1])
    return {k.replace("_rss", "_rss_mb").replace("_uss", "_uss_mb"): _mb(v) for k, v in raw.items()}


def idle(kind: str, seconds: float, synapse_version: str) -> dict[str, Any]:
    """Start, sample, stop; start again on the same directory (a restart: keys and certificates exist, as
    on every start but the first), sample, idle ``seconds``, sample."""
    with tempfile.TemporaryDirectory(prefix=f"bench-memory-{kind}-") as tmp:
        # Presence off: an idle server with presence on still has timers; neither kind has users here.
        server = make_server(kind, Path(tmp), postgres=False, synapse_version=synapse_version, presence=False)
        t0 = time.monotonic()
        server.start()
        try:
            ready = time.monotonic() - t0
            first = _sample(server.pid)
        finally:
            server.stop()
        server.start()
        try:
            restarted = _sample(server.pid)
            time.sleep(seconds)
            later = _sample(server.pid)
        finally:
            server.stop()
    return {
        "ready_s": round(ready, 2),
        "first_start": first,
        "restart": restarted,
        f"restart_after_{seconds:g}s_idle": later,
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python3 -m bench memory", description=__doc__.split("\n")[0])
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument("--servers", default="ranvier", help="comma-separated: ranvier, synapse")
    parser.add_argument("--synapse-version", default=DEFAULT_VERSION)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    machine = describe_machine(args.synapse_version if "synapse" in args.servers else None)
    results: dict[str, Any] = {}
    if "ranvier" in args.servers:
        results["ranvier import"] = import_cost()
        print(f"ranvier: {results['ranvier import']}", flush=True)
    for kind in args.servers.split(","):
        results[kind] = idle(kind, args.idle, args.synapse_version)
        print(f"{kind}: {results[kind]}", flush=True)
    document = {"args": {k: str(v) for k, v in vars(args).items()}, "results": results}
    document["machine"] = finish(machine)
    print(summary(document["machine"]))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"memory-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(document, indent=2))
    print(f"written to {path}")
