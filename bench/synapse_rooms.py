"""Big rooms hosted by a Synapse resident, built through federation instead of its client API.

Building a Synapse room member by member through the client API costs Synapse tens of milliseconds of CPU per
registration and per join on this machine (10,000 members: 269 s to register, 722 s to join), so rooms above
a few thousand members cannot be built for every repeat. Here the room is built on a Ranvier server (fast: see
``bench/partial_join.py``'s ``build_ranvier_rooms``) and one local user of the Synapse joins it; once Synapse
has the room's full state (its own partial-state join, then its resync) the Synapse is a resident like any
other: it answers ``make_join``/``send_join`` (with ``omit_members``), ``/state_ids``, ``/state`` and
``/event`` from its own database. What differs from a room built on Synapse: its members' users live on the
Ranvier server, so the room has two servers instead of one; the benchmark reports which way rooms were built.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

from bench.servers import SynapseBenchServer
from bench.workloads.client import MxClient, q

POLL = 0.5  # seconds between /members polls while Synapse completes its own resync of the room


async def _joined(client: MxClient, room_id: str, timeout: float) -> int:
    answer = await client.ok("GET", f"/rooms/{q(room_id)}/members", http_timeout=timeout, membership="join")
    return sum(1 for e in answer.get("chunk", []) if e.get("content", {}).get("membership") == "join")


async def host_on_synapse(
    session: aiohttp.ClientSession,
    synapse: SynapseBenchServer,
    room_ids: list[str],
    via: str,
    members_before: list[int],
    host: str = "host",
    timeout: float = 3600.0,
) -> list[float]:
    """One user of ``synapse`` (localpart ``host``, registered here) joins each room through ``via`` (the
    server that built it); returns once Synapse's ``/members`` lists ``members_before[i] + 1`` joined members
    for room ``i`` (its full state has arrived), with the seconds each room took."""
    user_id, token = await asyncio.to_thread(synapse.register, host)
    client = MxClient(session, synapse.client_url, user_id, token)
    took: list[float] = []
    for room_id, before in zip(room_ids, members_before, strict=True):
        started = time.perf_counter()
        await client.ok("POST", f"/join/{q(room_id)}", {}, http_timeout=timeout, server_name=via)
        while (count := await _joined(client, room_id, timeout)) < before + 1:
            if time.perf_counter() - started > timeout:
                raise TimeoutError(f"Synapse lists {count} of {before + 1} members after {timeout:.0f} s")
            await asyncio.sleep(POLL)
        took.append(time.perf_counter() - started)
        print(f"  Synapse has the full state of {room_id} ({before + 1} members) after {took[-1]:.1f} s")
    return took
