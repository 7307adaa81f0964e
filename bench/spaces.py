"""Spaces, room summaries and timestamp_to_event latency on a real server process (Ranvier, and Synapse
with ``--servers ranvier,synapse``).

The world: a space with ``--subspaces`` sub-spaces of ``--children`` rooms each (default 10 x 20: 211
rooms), and a room with ``--messages`` messages (default 1,000). Measured over ``--runs`` repetitions,
min / median in milliseconds, as a user who is in none of the rooms (every room's visibility is judged):

- ``/hierarchy`` first page: ``GET /v1/rooms/{space}/hierarchy?limit=50``;
- ``/hierarchy`` whole: every page at ``limit=50`` (the whole tree, 211 rooms by default);
- ``/room_summary``: ``GET /v1/room_summary/{roomId}`` of one child;
- ``/timestamp_to_event``: ``dir=f`` at the middle message's time, as a member of the message room.

Usage: python3 -m bench spaces [--subspaces 10] [--children 20] [--messages 1000] [--runs 20]
       [--servers ranvier] [--postgres]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import aiohttp

from bench.servers import BenchServer
from bench.timing import Figures, get_v1, run_on_servers, setup_call, timed
from bench.workloads.client import MxClient, q
from tests.interop.synapse import DEFAULT_VERSION

# Rooms each user creates while building the world: within Synapse's room-creation burst (10).
ROOMS_PER_OWNER = 8


async def _room(client: MxClient, **body: Any) -> str:
    return str(
        (await setup_call(client, "POST", "/createRoom", {"preset": "public_chat", **body}))["room_id"]
    )


async def _build(owners: list[MxClient], server_name: str, subspaces: int, children: int) -> tuple[str, str]:
    """The space (and one of its leaf rooms), every room public. Rooms are created by the ``owners`` in
    turn (Synapse limits room creation per user: ``rc_room_creation``, a burst of 10 then about one a
    minute), and each parent's child events are sent by the parent's creator."""
    turn = iter(range(1 << 30))

    async def room(**body: Any) -> tuple[MxClient, str]:
        owner = owners[next(turn) % len(owners)]
        return owner, await _room(owner, **body)

    space_owner, space = await room(name="bench space", creation_content={"type": "m.space"})
    leaf = ""
    for i in range(subspaces):
        sub_owner, sub = await room(name=f"sub {i}", creation_content={"type": "m.space"})
        child = {"via": [server_name], "order": f"{i:04d}"}
        await setup_call(space_owner, "PUT", f"/rooms/{q(space)}/state/m.space.child/{q(sub)}", child)
        for j in range(children):
            _, leaf_room = await room(name=f"room {i}.{j}", topic="bench")
            path = f"/rooms/{q(sub)}/state/m.space.child/{q(leaf_room)}"
            await setup_call(sub_owner, "PUT", path, {"via": [server_name]})
            leaf = leaf or leaf_room
    return space, leaf


async def _measure(
    base_url: str, server_name: str, subspaces: int, children: int, messages: int, runs: int
) -> Figures:
    async with aiohttp.ClientSession() as session:
        total = 1 + subspaces * (children + 1)
        owners = [
            await MxClient.register(session, base_url, "spaces") for _ in range(total // ROOMS_PER_OWNER + 1)
        ]
        owner = owners[0]
        viewer = await MxClient.register(session, base_url, "viewer")
        t0 = time.perf_counter()
        space, leaf = await _build(owners, server_name, subspaces, children)
        room = await _room(owner, name="timeline")
        stamps = []
        for i in range(messages):
            content = {"msgtype": "m.text", "body": f"message {i}"}
            sent = await setup_call(owner, "PUT", f"/rooms/{q(room)}/send/m.room.message/bench{i}", content)
            event_id = sent["event_id"]
            if i == messages // 2:
                stamps.append(
                    (await owner.ok("GET", f"/rooms/{q(room)}/event/{q(event_id)}"))["origin_server_ts"]
                )
        print(
            f"  built {total} rooms and {messages} messages in {time.perf_counter() - t0:.1f} s", flush=True
        )

        async def first_page() -> None:
            body = await get_v1(viewer, f"/rooms/{q(space)}/hierarchy", limit="50")
            assert len(body["rooms"]) == min(50, total), len(body["rooms"])

        async def whole_tree() -> None:
            seen, params = 0, {"limit": "50"}
            while True:
                body = await get_v1(viewer, f"/rooms/{q(space)}/hierarchy", **params)
                seen += len(body["rooms"])
                if "next_batch" not in body:
                    break
                params["from"] = body["next_batch"]
            assert seen == total, seen

        async def summary() -> None:
            body = await get_v1(viewer, f"/room_summary/{q(leaf)}")
            assert body["room_id"] == leaf

        async def by_time() -> None:
            body = await get_v1(owner, f"/rooms/{q(room)}/timestamp_to_event", ts=str(stamps[0]), dir="f")
            assert body["origin_server_ts"] >= stamps[0]

        return {
            "/hierarchy first page (50)": await timed(runs, first_page),
            f"/hierarchy whole tree ({total} rooms, pages of 50)": await timed(runs, whole_tree),
            "/room_summary": await timed(runs, summary),
            f"/timestamp_to_event (middle of {messages})": await timed(runs, by_time),
        }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python3 -m bench spaces", description=__doc__.split("\n")[0])
    parser.add_argument("--subspaces", type=int, default=10)
    parser.add_argument("--children", type=int, default=20)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--servers", default="ranvier", help="comma-separated: ranvier, synapse")
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--synapse-version", default=DEFAULT_VERSION)
    args = parser.parse_args(argv)
    print(
        f"spaces bench: {args.subspaces} sub-spaces x {args.children} rooms, {args.messages} messages, "
        f"{args.runs} runs"
    )

    async def measure(server: BenchServer) -> Figures:
        return await _measure(
            server.client_url, server.server_name, args.subspaces, args.children, args.messages, args.runs
        )

    run_on_servers(
        args.servers, postgres=args.postgres, synapse_version=args.synapse_version, prefix="bench-spaces",
        measure=measure,
    )  # fmt: skip
