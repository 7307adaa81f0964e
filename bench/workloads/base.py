"""What a workload is and how it records figures: each repeat yields a value or a failure, never both."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from bench.servers import BenchServer


@dataclass
class Options:
    sizes: list[int]
    repeats: int
    ingest_pdus: int
    latency_messages: int
    load_clients: int
    load_messages: int


@dataclass
class Series:
    """One metric of one workload on one server kind, over the repeats."""

    metric: str
    unit: str
    size: str = ""
    better: str = "lower"
    values: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str]:
        return self.metric, self.size

    def as_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric, "unit": self.unit, "size": self.size, "better": self.better,
            "values": self.values, "failures": self.failures, "notes": self.notes,
        }  # fmt: skip


class Recorder:
    def __init__(self, tick: Callable[[], None]) -> None:
        self.series: dict[tuple[str, str], Series] = {}
        self.tick = tick

    def _get(self, metric: str, unit: str, size: str, better: str) -> Series:
        return self.series.setdefault((metric, size), Series(metric, unit, size, better))

    def value(self, metric: str, unit: str, value: float, size: str = "", better: str = "lower") -> None:
        self._get(metric, unit, size, better).values.append(value)

    def failure(self, metric: str, unit: str, reason: str, size: str = "", better: str = "lower") -> None:
        self._get(metric, unit, size, better).failures.append(reason[:300])

    def note(self, metric: str, unit: str, text: str, size: str = "", better: str = "lower") -> None:
        self._get(metric, unit, size, better).notes.append(text)


@dataclass
class Pair:
    """The servers of one kind a workload runs against; server 0 is the resident/target."""

    kind: str
    servers: list[BenchServer]
    session: aiohttp.ClientSession
    workdir: Path
    proxy: Any = None  # a bench.workloads.proxy.DelayProxy in front of server 0, when the workload asks


class Workload(Protocol):
    name: str
    title: str
    servers: int  # how many servers of a kind it needs (1 or 2)
    proxied: bool  # whether server 0's federation port sits behind the delaying proxy

    def steps(self, opts: Options) -> int: ...

    async def run(self, pair: Pair, opts: Options, rec: Recorder) -> None: ...


def describe(e: BaseException) -> str:
    """A failure as a table can show it: the error's own words, its type only when it has none."""
    text = str(e).strip()
    return text if text else type(e).__name__
