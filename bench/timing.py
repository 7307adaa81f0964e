"""Helpers the latency benchmarks (admin, relations, spaces, ...) share: timing a call min/median over runs,
set-up requests that wait out rate limits, GETs outside ``/_matrix/client/v3``, and running one measurement
against each server kind in turn.

A 429 is never a sample: Synapse rate-limits some endpoints per user (``/hierarchy``, room creation), and a
figure that includes the wait would measure the limiter, not the endpoint.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from bench.servers import BenchServer, make_server
from bench.workloads.client import MxClient

Figures = dict[str, tuple[float, float]]  # metric -> (min, median) in milliseconds
RATE_LIMIT_TRIES = 100


class RateLimited(Exception):
    """A 429 answer: the request is made again once the server's ``retry_after_ms`` has passed."""

    def __init__(self, retry_after_ms: int) -> None:
        super().__init__(retry_after_ms)
        self.retry_after_ms = retry_after_ms


def _retry_after_ms(answer: Any) -> int:
    return int(answer.get("retry_after_ms", 1000)) if isinstance(answer, dict) else 1000


async def timed(runs: int, call: Callable[[], Awaitable[None]]) -> tuple[float, float]:
    """min and median in ms of ``runs`` calls after one warm-up call; a call that raised ``RateLimited``
    is made again after the wait it was told, and does not count."""
    samples: list[float] = []
    while len(samples) < runs + 1:
        t0 = time.perf_counter()
        try:
            await call()
        except RateLimited as e:
            await asyncio.sleep(e.retry_after_ms / 1000 + 0.05)
            continue
        samples.append((time.perf_counter() - t0) * 1000)
    samples = samples[1:]  # the first was the warm-up
    return min(samples), statistics.median(samples)


async def setup_call(client: MxClient, method: str, path: str, body: Any = None) -> Any:
    """A request that builds the world before the measurement, waiting out rate limits (Synapse limits
    room creation and joins); any other failure ends the benchmark."""
    for _ in range(RATE_LIMIT_TRIES):
        status, answer = await client.call(method, path, body)
        if status == 200:
            return answer
        if status != 429:
            raise RuntimeError(f"{method} {path} -> {status} {answer}")
        await asyncio.sleep(_retry_after_ms(answer) / 1000)
    raise RuntimeError(f"{method} {path}: still rate limited")


async def get_json(client: MxClient, path: str, **params: str) -> Any:
    """``GET path`` (from the server root, e.g. ``/_matrix/client/v1/...`` or ``/_synapse/admin/...``) as
    ``client``; a 429 raises ``RateLimited`` (see ``timed``), any other non-200 fails."""
    root = client.base.split("/_matrix/")[0]
    async with client.session.get(
        root + path, params=params or None, headers={"Authorization": f"Bearer {client.token}"}
    ) as resp:
        body = await resp.json(content_type=None)
        if resp.status == 429:
            raise RateLimited(_retry_after_ms(body))
        if resp.status != 200:
            raise RuntimeError(f"GET {path} -> {resp.status} {body}")
        return body


async def get_v1(client: MxClient, path: str, **params: str) -> Any:
    """``get_json`` under ``/_matrix/client/v1`` (relations, threads, hierarchy, summaries)."""
    return await get_json(client, "/_matrix/client/v1" + path, **params)


def run_on_servers(
    kinds: str,
    *,
    postgres: bool,
    synapse_version: str,
    prefix: str,
    measure: Callable[[BenchServer], Coroutine[Any, Any, Figures]],
    width: int = 50,
) -> None:
    """For each of the comma-separated ``kinds``: start a fresh server in a temporary directory, run
    ``measure`` against it, print its figures (min / median ms), stop it."""
    for kind in kinds.split(","):
        with tempfile.TemporaryDirectory(prefix=f"{prefix}-{kind}-") as tmp:
            server = make_server(kind, Path(tmp), postgres=postgres, synapse_version=synapse_version)
            server.start()
            try:
                print(f"{kind} ({'PostgreSQL' if postgres else 'SQLite'}):", flush=True)
                figures = asyncio.run(measure(server))
                for name, (low, median) in figures.items():
                    print(f"  {name:<{width}} min {low:8.1f} ms   median {median:8.1f} ms")
            finally:
                server.stop()
