"""``python3 -m bench fuzz``: the spec-driven fuzzer (tests/fuzz/) at a size of your choice.

Every operation of the client-server and server-server OpenAPI in the spec, ``--examples`` requests each,
against a real Ranvier on loopback (a registered user in a real room; a fake remote server that joined it
and signs its requests). Prints per-operation counts of 2xx/4xx/5xx/502/no answer, then every failure (a 5xx,
no answer, a 4xx that is not a Matrix error) with a request that reproduces it. Exit status 1 if any.
A 502 Matrix error (a remote server could not be reached: every address but loopback is blocked here) is
counted in its own column and is not a failure.

    python3 -m bench fuzz --examples 200
    python3 -m bench fuzz --api ss --only send_join --examples 1000 --seed 7
    python3 -m bench fuzz --postgres --examples 100     # the server on a fresh PostgreSQL database
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from tests.fuzz.harness import PG_ADMIN_DSN, FuzzHarness, create_database, drop_database
from tests.fuzz.runner import OpStats, fuzz_operations, select
from tests.fuzz.spec import Operation


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python3 -m bench fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100, help="requests per operation (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="the same seed and size send the same requests")
    parser.add_argument("--api", default="cs,ss", help="cs, ss or cs,ss (default)")
    parser.add_argument("--only", default=None, help="a regex over 'METHOD /path' to pick operations")
    parser.add_argument("--errcodes", action="store_true", help="also print the 4xx errcodes per operation")
    parser.add_argument(
        "--postgres",
        nargs="?",
        const=PG_ADMIN_DSN,
        default=None,
        metavar="ADMIN_DSN",
        help=f"run the server on a fresh PostgreSQL database made there (default {PG_ADMIN_DSN}), not SQLite",
    )
    args = parser.parse_args(argv)

    ops = select(args.api.split(","), args.only)
    if not ops:
        print("no operation matches", file=sys.stderr)
        sys.exit(2)
    print(f"fuzzing {len(ops)} operations, {args.examples} examples each, seed {args.seed}", flush=True)

    def progress(op: Operation, stats: OpStats) -> None:
        c = stats.statuses
        line = (
            f"  {op.key:<76} 2xx {c['2xx']:>4} 4xx {c['4xx']:>4} 5xx {c['5xx']:>3}"
            f" 502 {c['502']:>3} none {c['none']:>3} failures {stats.failures:>3}"
        )
        print(line, flush=True)
        if args.errcodes and stats.errcodes:
            print("      " + ", ".join(f"{k}: {v}" for k, v in stats.errcodes.most_common()), flush=True)

    database = asyncio.run(create_database(args.postgres)) if args.postgres else None
    harness = FuzzHarness(database_url=database)
    start = time.monotonic()
    try:
        harness.start()
        report = fuzz_operations(harness, ops, args.examples, base_seed=args.seed, progress=progress)
        room_ok = harness.room_still_works()
    finally:
        harness.stop()
        if args.postgres and database:
            asyncio.run(drop_database(args.postgres, database))
    elapsed = time.monotonic() - start
    print()
    print(report.summary())
    print(f"{report.examples} requests in {elapsed:.0f} s ({report.examples / elapsed:.0f}/s)")
    print(f"the user's room still works afterwards: {'yes' if room_ok else 'NO'}")
    if report.failure_total:
        print("\nFAILURES (each with a reproduction: method, path and query, auth, body)")
        print(report.failure_report())
    sys.exit(1 if report.failure_total or not room_ok else 0)
