"""Presence between two in-process Ranvier servers on loopback (federation over TLS, SQLite).

Alice on A and Bob on B share a room. Each round Alice changes her presence (online / unavailable, with
a new status message) and the time is taken until Bob's long-polling /sync on B returns it: the PUT, the
m.presence EDU through A's federation sender and B's /send, B's store and the wake-up of /sync. Also the
time of Bob's incremental /sync when nothing changed (the presence section's query included), and of
PUT /presence/{userId}/status alone.

Prints min / median / max in milliseconds.

Usage: python3 -m bench presence [--rounds 100]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from tests.scenarios.servers import Client, start_server


def _report(name: str, seconds: list[float]) -> None:
    ms = sorted(s * 1000 for s in seconds)
    median = statistics.median(ms)
    print(f"{name:<44} min {ms[0]:8.2f}  median {median:8.2f}  max {ms[-1]:8.2f}  ms (n={len(ms)})")


async def _run(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        a = await start_server(Path(tmp) / "a")
        b = await start_server(Path(tmp) / "b")
        try:
            async with aiohttp.ClientSession() as session:
                alice = await Client.register(session, a, "alice")
                bob = await Client.register(session, b, "bob")
                room = await alice.create_room()
                await bob.ok("POST", f"/join/{room}", {}, server_name=a.server_name)
                await bob.sync()
                status = f"/presence/{alice.user_id}/status"

                propagation: list[float] = []
                for i in range(rounds):
                    state = "online" if i % 2 else "unavailable"
                    want = f"round {i}"
                    waiting = asyncio.create_task(_wait_for(bob, alice.user_id, want))
                    await asyncio.sleep(0.01)  # Bob's long-poll is waiting
                    start = time.perf_counter()
                    await alice.ok("PUT", status, {"presence": state, "status_msg": want})
                    await waiting
                    propagation.append(time.perf_counter() - start)

                idle_sync: list[float] = []
                for _ in range(rounds):
                    start = time.perf_counter()
                    await bob.ok("GET", "/sync", since=bob.since, timeout="0", set_presence="offline")
                    idle_sync.append(time.perf_counter() - start)

                puts: list[float] = []
                for i in range(rounds):
                    start = time.perf_counter()
                    await alice.ok("PUT", status, {"presence": "online", "status_msg": f"put {i}"})
                    puts.append(time.perf_counter() - start)
        finally:
            await a.stop()
            await b.stop()
    _report("PUT on A -> Bob's /sync on B returns it", propagation)
    _report("incremental /sync on B, nothing new", idle_sync)
    _report("PUT /presence/{userId}/status on A", puts)


async def _wait_for(bob: Client, user_id: str, status_msg: str) -> None:
    while True:
        body = await bob.ok("GET", "/sync", since=bob.since, timeout="30000", set_presence="offline")
        bob.since = body["next_batch"]
        for event in body["presence"]["events"]:
            if event["sender"] == user_id and event["content"].get("status_msg") == status_msg:
                return


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python3 -m bench presence")
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args(argv)
    asyncio.run(_run(args.rounds))
