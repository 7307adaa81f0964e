"""Relations and threads latency: a room with one thread of N replies (default 1,000) plus a few dozen
shorter threads, on a real server process (Ranvier, and Synapse with ``--servers ranvier,synapse``).

Measured per request, over ``--runs`` repetitions, min / median in milliseconds:

- ``/relations`` first page: ``GET /v1/rooms/{room}/relations/{root}?limit=50`` (newest 50 children, each
  with its own bundled aggregations);
- ``/relations/m.thread`` all: the whole thread paged through at ``limit=100`` (N/100 requests, total);
- ``/threads``: ``GET /v1/rooms/{room}/threads?limit=20`` (roots ordered by their latest reply, with
  their ``m.thread`` summaries);
- ``/event`` root: the thread root with its bundled ``m.thread`` summary (count N).

Usage: python3 -m bench relations [--replies 1000] [--threads 30] [--runs 20] [--servers ranvier]
       [--postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time
from typing import Any

import aiohttp

from bench.servers import BenchServer
from bench.timing import Figures, get_v1, run_on_servers, timed
from bench.workloads.client import MxClient, q
from tests.interop.synapse import DEFAULT_VERSION

SEND_CONCURRENCY = 4


async def _send(client: MxClient, room: str, content: dict[str, Any]) -> str:
    path = f"/rooms/{q(room)}/send/m.room.message/r{secrets.token_hex(6)}"
    return str((await client.ok("PUT", path, content))["event_id"])


def _reply(root: str, i: int) -> dict[str, Any]:
    return {
        "msgtype": "m.text",
        "body": f"reply {i}",
        "m.relates_to": {"rel_type": "m.thread", "event_id": root},
    }


async def _fill(client: MxClient, room: str, replies: int, threads: int) -> str:
    """The big thread's root (sent first, then the short threads, then the replies, interleaved)."""
    root = await _send(client, room, {"msgtype": "m.text", "body": "the big thread"})
    others = [await _send(client, room, {"msgtype": "m.text", "body": f"thread {i}"}) for i in range(threads)]
    jobs: list[dict[str, Any]] = [_reply(root, i) for i in range(replies)]
    jobs += [_reply(other, j) for other in others for j in range(3)]
    # Spread the short threads' replies through the big one's, so /threads has to order by latest reply.
    jobs.sort(key=lambda c: (int(c["body"].split()[-1]) * 997) % max(1, len(jobs)))
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)

    async def worker() -> None:
        while not queue.empty():
            await _send(client, room, queue.get_nowait())

    await asyncio.gather(*(worker() for _ in range(SEND_CONCURRENCY)))
    return root


async def _measure(base_url: str, replies: int, threads: int, runs: int) -> Figures:
    async with aiohttp.ClientSession() as session:
        client = await MxClient.register(session, base_url, "rel")
        room = await client.create_room(name="relations bench")
        t0 = time.perf_counter()
        root = await _fill(client, room, replies, threads)
        print(
            f"  filled {replies} replies + {threads} threads in {time.perf_counter() - t0:.1f} s", flush=True
        )
        prefix = f"/rooms/{q(room)}"

        async def first_page() -> None:
            body = await get_v1(client, f"{prefix}/relations/{q(root)}", limit="50")
            assert len(body["chunk"]) == min(50, replies)

        async def whole_thread() -> None:
            seen, params = 0, {"limit": "100"}
            while True:
                body = await get_v1(client, f"{prefix}/relations/{q(root)}/m.thread", **params)
                seen += len(body["chunk"])
                if "next_batch" not in body:
                    break
                params["from"] = body["next_batch"]
            assert seen == replies, seen

        async def thread_list() -> None:
            body = await get_v1(client, f"{prefix}/threads", limit="20")
            assert len(body["chunk"]) == min(20, threads + 1)

        async def root_event() -> None:
            body = await client.ok("GET", f"{prefix}/event/{q(root)}")
            assert body["unsigned"]["m.relations"]["m.thread"]["count"] == replies

        return {
            "/relations first page (50)": await timed(runs, first_page),
            f"/relations/m.thread all ({replies}, pages of 100)": await timed(runs, whole_thread),
            "/threads (20)": await timed(runs, thread_list),
            "/event root (bundled m.thread)": await timed(runs, root_event),
        }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python3 -m bench relations", description=__doc__.split("\n")[0])
    parser.add_argument("--replies", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=30)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--servers", default="ranvier", help="comma-separated: ranvier, synapse")
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--synapse-version", default=DEFAULT_VERSION)
    args = parser.parse_args(argv)
    print(f"relations bench: {args.replies} replies, {args.threads} other threads, {args.runs} runs")

    async def measure(server: BenchServer) -> Figures:
        return await _measure(server.client_url, args.replies, args.threads, args.runs)

    run_on_servers(
        args.servers, postgres=args.postgres, synapse_version=args.synapse_version, prefix="bench-rel",
        measure=measure, width=45,
    )  # fmt: skip
