"""The replication bus over a real Redis: delivery between processes' buses, order, a process not hearing
itself, malformed messages ignored, and the resync after a lost subscription."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from ranvier.workers.bus import Bus


async def _until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


@pytest.fixture
async def buses(redis_url: str, channel_prefix: str) -> AsyncIterator[tuple[Bus, Bus]]:
    a, b = Bus(redis_url, "a", channel_prefix), Bus(redis_url, "b", channel_prefix)
    await a.start()
    await b.start()
    try:
        yield a, b
    finally:
        await a.stop()
        await b.stop()


async def test_messages_reach_the_others_in_order_and_not_the_sender(buses: tuple[Bus, Bus]) -> None:
    a, b = buses
    got_a: list[int] = []
    got_b: list[int] = []
    a.on("events", lambda body: got_a.append(body["n"]))
    b.on("events", lambda body: got_b.append(body["n"]))
    for n in range(50):
        a.publish("events", {"n": n})
    await _until(lambda: len(got_b) == 50)
    assert got_b == list(range(50))
    b.publish("events", {"n": 99})
    await _until(lambda: got_a == [99])
    assert got_b == list(range(50))  # b did not hear itself


async def test_other_deployments_and_malformed_messages_are_ignored(
    buses: tuple[Bus, Bus], redis_url: str
) -> None:
    a, b = buses
    got: list[Any] = []
    b.on("notify", got.append)
    raw = aioredis.Redis.from_url(redis_url)
    try:
        await raw.publish(b.channel, b"not json")
        await raw.publish(b.channel, b'{"i": "x", "k": "notify"}')  # no body
        await raw.publish("another:replication", b'{"i": "x", "k": "notify", "b": {"n": 1}}')
        a.publish("notify", {"n": 2})
        await _until(lambda: got == [{"n": 2}])
    finally:
        await raw.aclose()


async def test_a_lost_subscription_resubscribes_and_resyncs(buses: tuple[Bus, Bus], redis_url: str) -> None:
    a, b = buses
    resynced = asyncio.Event()

    async def resync() -> None:
        resynced.set()

    b.on_resync(resync)
    got: list[Any] = []
    b.on("notify", got.append)
    raw = aioredis.Redis.from_url(redis_url)
    try:
        # Kill only b's own connections (found by their name), never anyone else's.
        for client in await raw.client_list():
            if client.get("name") == f"{b.channel}:b":
                await raw.client_kill_filter(_id=client["id"])
        await asyncio.wait_for(resynced.wait(), 15)
        a.publish("notify", {"after": True})
        await _until(lambda: {"after": True} in got)
    finally:
        await raw.aclose()
