"""Faults and the seeded schedule that orders them.

Kinds (``victim`` is a server index; ``peer`` the other end for the link faults):

- ``kill``: SIGKILL of the victim, restarted after ``duration`` seconds (same config, same database).
- ``refuse``: every link into and out of the victim refuses connections (and resets open ones).
- ``blackhole``: every link into and out of the victim swallows what is sent on it.
- ``oneway``: the link victim -> peer is cut (refusing or blackholed, drawn from the seed); peer -> victim
  works (the case that ran back-off away).
- ``staggered``: victim <-> peer cut both ways (refusing or blackholed); victim -> peer heals after
  ``duration``, the other way ``duration`` later.
- ``slow``: every link into and out of the victim holds each chunk ``delay`` seconds.

The schedule is a function of the seed only, so a failing trial can be replayed with the same ``--seed``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from .cluster import Cluster
from .proxy import LinkProxy

log = logging.getLogger(__name__)

KINDS = ("kill", "refuse", "blackhole", "oneway", "staggered", "slow")


@dataclass(frozen=True)
class Fault:
    kind: str
    victim: int
    peer: int
    start: float  # seconds after the load starts
    duration: float
    delay: float = 0.0  # slow links only
    cut: str = "refuse"  # oneway and staggered: how the link is cut (refuse or blackhole)

    def describe(self) -> str:
        where = f"{self.victim}->{self.peer}" if self.kind in ("oneway", "staggered") else f"s{self.victim}"
        extra = f" delay {self.delay * 1000:.0f} ms" if self.kind == "slow" else ""
        if self.kind in ("oneway", "staggered"):
            extra = f" ({self.cut})"
        return f"{self.kind:9} {where:6} at {self.start:5.1f}s for {self.duration:4.1f}s{extra}"

    @property
    def end(self) -> float:
        return self.start + self.duration * (2 if self.kind == "staggered" else 1)


def schedule(
    seed: int, *, servers: int, faults: int, kinds: tuple[str, ...] = KINDS,
    gap: tuple[float, float] = (2.0, 5.0), duration: tuple[float, float] = (3.0, 8.0), first_kind: int = 0,
) -> list[Fault]:  # fmt: skip
    """``faults`` faults one after another (never overlapping), the kinds taken in turn from ``kinds``
    starting at ``first_kind`` (so that consecutive trials together cover every kind); victims, peers,
    durations and gaps are drawn from ``seed``."""
    rng = random.Random(seed)
    order = [kinds[(first_kind + i) % len(kinds)] for i in range(len(kinds))]
    out: list[Fault] = []
    t = rng.uniform(*gap)
    for i in range(faults):
        kind = order[i % len(order)]
        victim = rng.randrange(servers)
        peer = rng.choice([j for j in range(servers) if j != victim])
        d = round(rng.uniform(*duration), 1)
        delay = round(rng.uniform(0.2, 1.0), 2) if kind == "slow" else 0.0
        cut = rng.choice(["refuse", "blackhole"])
        fault = Fault(kind, victim, peer, round(t, 1), d, delay, cut)
        out.append(fault)
        t = fault.end + rng.uniform(*gap)
    return out


async def _set(proxies: list[LinkProxy], mode: str, delay: float = 0.0) -> None:
    for p in proxies:
        await p.set_mode(mode, delay)  # type: ignore[arg-type]


async def inject(cluster: Cluster, fault: Fault) -> None:
    """Apply ``fault``, hold it, heal it; returns once healed (a killed server is up again)."""
    victim = cluster.servers[fault.victim]
    if fault.kind == "kill":
        await asyncio.to_thread(victim.kill)
        await asyncio.sleep(fault.duration)
        victim.spawn()
        await victim.wait_ready()
    elif fault.kind in ("refuse", "blackhole", "slow"):
        links = cluster.links_of(fault.victim)
        await _set(links, "slow" if fault.kind == "slow" else fault.kind, fault.delay)
        await asyncio.sleep(fault.duration)
        await _set(links, "ok")
    elif fault.kind == "oneway":
        link = cluster.links[(fault.victim, fault.peer)]
        await link.set_mode(fault.cut)  # type: ignore[arg-type]
        await asyncio.sleep(fault.duration)
        await link.set_mode("ok")
    elif fault.kind == "staggered":
        out_link, in_link = (
            cluster.links[(fault.victim, fault.peer)],
            cluster.links[(fault.peer, fault.victim)],
        )
        await _set([out_link, in_link], fault.cut)
        await asyncio.sleep(fault.duration)
        await out_link.set_mode("ok")
        await asyncio.sleep(fault.duration)
        await in_link.set_mode("ok")
    else:
        raise ValueError(f"unknown fault kind {fault.kind!r}")


async def run_schedule(
    cluster: Cluster, faults: list[Fault], t0: float, say: Callable[[str], None], done: list[Fault]
) -> float:
    """Inject the faults at their times (relative to ``t0``, a ``time.monotonic()``), appending each to
    ``done`` once injected; returns the monotonic time the last one healed."""
    healed = time.monotonic()
    for fault in faults:
        wait = t0 + fault.start - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        say(f"  fault {fault.describe()}")
        done.append(fault)
        await inject(cluster, fault)
        healed = time.monotonic()
    return healed
