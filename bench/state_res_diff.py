"""The long differential run of state resolution: Ranvier against Synapse's own resolver.

    python3 -m bench state_res_diff [--rooms 100000] [--seed 0] [--versions 1,2,10,11,12] [--show 20]

Random forked rooms (``tests/protocol/state_res/synapse_diff.py`` describes the generator), each resolved
by Ranvier and by Synapse (in a subprocess of its venv, installed into ``.venvs/`` if missing) on identical
events and state sets, including the state before each merge. Prints the rooms and divergences by room
version, then a minimal reproduction of up to ``--show`` divergences (operations deleted while the
divergence persists), each a readable DAG to turn into a fixture in ``tests/protocol/state_res/``.
"""

from __future__ import annotations

import argparse
import time

from tests.interop.synapse import ensure_synapse
from tests.protocol.state_res.synapse_diff import VERSIONS, SynapseResolver, describe, run, shrink


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python3 -m bench state_res_diff")
    parser.add_argument("--rooms", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0, help="first seed; room i has seed + i")
    parser.add_argument("--versions", default=",".join(VERSIONS))
    parser.add_argument("--show", type=int, default=20, help="divergences to shrink and print")
    parser.add_argument("--chunk", type=int, default=5000, help="print progress every this many rooms")
    args = parser.parse_args(argv)
    versions = args.versions.split(",")
    resolver = SynapseResolver(ensure_synapse())
    start = time.perf_counter()
    rooms: dict[str, int] = {}
    resolutions = 0
    divergences = []
    errors: list[str] = []
    try:
        for lo in range(args.seed, args.seed + args.rooms, args.chunk):
            hi = min(lo + args.chunk, args.seed + args.rooms)
            result = run(resolver, range(lo, hi), versions)
            for v, n in result.rooms.items():
                rooms[v] = rooms.get(v, 0) + n
            resolutions += result.resolutions
            divergences.extend(result.divergences)
            errors.extend(result.errors)
            print(
                f"{hi - args.seed:>7} rooms, {resolutions} resolutions, {len(divergences)} divergences, "
                f"{len(errors)} errors ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
        print("\nroom version   rooms   divergences")
        for v in versions:
            n_div = sum(1 for d in divergences if d.prog.version == v)
            print(f"  v{v:<12} {rooms.get(v, 0):>6}   {n_div}")
        for e in errors[:10]:
            print(f"error: {e}")
        for d in divergences[: args.show]:
            print("\n" + describe(shrink(resolver, d)))
    finally:
        resolver.close()
