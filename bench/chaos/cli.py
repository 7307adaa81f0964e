"""``python3 -m bench chaos``: trials (default) or a soak (``--soak SECONDS``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

import asyncpg

from tests.interop.synapse import DEFAULT_VERSION

from .faults import KINDS
from .trial import TrialConfig, TrialResult, as_json, run_trial, summary

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


async def postgres_problem() -> str | None:
    """Why PostgreSQL trials cannot run, or None."""
    try:
        conn = await asyncpg.connect(PG_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as e:
        return f"PostgreSQL at {PG_DSN} unreachable: {e}"
    await conn.close()
    return None


async def run_trials(cfg: TrialConfig, trials: int, backends: list[str], first: int = 0) -> list[TrialResult]:
    """``trials`` trials (indexes from ``first``: the seed is ``--seed`` x 1000 + index), cycling through
    ``backends``; prints each report as it ends, then the summary."""
    results = []
    for i in range(first, first + trials):
        result = await run_trial(cfg, i, backends[i % len(backends)])
        print(result.report(), flush=True)
        results.append(result)
    print(summary(results), flush=True)
    cfg.workdir.mkdir(parents=True, exist_ok=True)
    out = cfg.workdir / f"chaos-{int(time.time())}.json"
    out.write_text(json.dumps(as_json(results), indent=1))
    print(f"results written to {out}")
    return results


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python3 -m bench chaos", description=__doc__)
    p.add_argument("--servers", type=int, default=3)
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--faults", type=int, default=8, help="faults per trial")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--first-trial", type=int, default=0, help="index of the first trial (reruns one)")
    p.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    p.add_argument("--interval", type=float, default=0.25, help="seconds between one user's messages")
    p.add_argument("--converge-timeout", type=float, default=120.0)
    p.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated subset of {','.join(KINDS)}")
    p.add_argument("--min-duration", type=float, default=3.0)
    p.add_argument("--max-duration", type=float, default=12.0)
    p.add_argument("--workdir", type=Path, default=Path("bench/results/chaos"))
    p.add_argument("--keep-all-logs", action="store_true", help="keep logs of passing trials too")
    p.add_argument("--synapse", action="store_true", help="add a Synapse as one more server")
    p.add_argument("--synapse-version", default=DEFAULT_VERSION)
    p.add_argument("--soak", type=float, default=0.0, metavar="SECONDS", help="steady load, no faults, RSS")
    p.add_argument("--soak-interval", type=float, default=60.0, help="seconds between RSS samples")
    p.add_argument("--memstats", action="store_true", help="soak: RSS split into malloc, SQLite, Python")
    p.add_argument("--traced", action="store_true", help="soak: --memstats and tracemalloc's top growth")
    p.add_argument("--cached-events", type=int, help="the servers' caches.events")
    p.add_argument("--sqlite-cache-kib", type=int, help="the servers' caches.sqlite_page_cache_kib")
    return p.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse(argv)
    kinds = tuple(k for k in args.kinds.split(",") if k)
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise SystemExit(f"unknown fault kinds: {sorted(unknown)}")
    cfg = TrialConfig(
        servers=args.servers, faults=args.faults, seed=args.seed, interval=args.interval,
        converge_timeout=args.converge_timeout, kinds=kinds, duration=(args.min_duration, args.max_duration),
        workdir=args.workdir, keep_all_logs=args.keep_all_logs,
        synapse_version=args.synapse_version if args.synapse else None,
    )  # fmt: skip
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    if "postgres" in backends:
        problem = asyncio.run(postgres_problem())
        if problem is not None:
            print(f"skipping PostgreSQL trials: {problem}")
            backends.remove("postgres")
            if not backends:
                return
    if args.soak:
        from .soak import run_soak

        probe = "tracemalloc" if args.traced else "stats" if args.memstats else None
        # The servers' `caches` config (bench.chaos.cluster writes it), instead of the defaults.
        if args.cached_events:
            os.environ["CHAOS_CACHED_EVENTS"] = str(args.cached_events)
        if args.sqlite_cache_kib:
            os.environ["CHAOS_SQLITE_CACHE_KIB"] = str(args.sqlite_cache_kib)
        asyncio.run(run_soak(cfg, args.soak, args.soak_interval, backends[0], memory_probe=probe))
        return
    results = asyncio.run(run_trials(cfg, args.trials, backends, args.first_trial))
    if any(r.failed for r in results):
        raise SystemExit(1)
