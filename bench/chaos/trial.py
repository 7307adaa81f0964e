"""One trial: start the cluster, set up the room, send under faults, heal, then measure without paging."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import statistics
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp

from . import check
from .cluster import Cluster
from .faults import KINDS, Fault, run_schedule, schedule
from .workload import User, setup_room

POLL = 0.5


@dataclass
class TrialConfig:
    servers: int = 3
    faults: int = 5
    seed: int = 1
    interval: float = 0.25  # seconds between one user's messages
    converge_timeout: float = 60.0  # after the last heal, how long to wait for every event everywhere
    kinds: tuple[str, ...] = KINDS
    gap: tuple[float, float] = (2.0, 5.0)
    duration: tuple[float, float] = (3.0, 8.0)
    workdir: Path = Path("bench/results/chaos")
    keep_dir: Path | None = None  # where failing trials' logs go; default <workdir>/kept
    keep_all_logs: bool = False
    synapse_version: str | None = None  # add a Synapse as one more server


@dataclass
class TrialResult:
    name: str
    backend: str
    seed: int
    faults: list[str] = field(default_factory=list)
    fault_kinds: list[str] = field(default_factory=list)
    acknowledged: int = 0
    retries: int = 0
    send_errors: list[str] = field(default_factory=list)
    missing_at_heal: int | None = None  # (server, event) pairs, read right after the load stopped
    missing_after_10s: int | None = None
    missing_at_end: int | None = None
    missing_at_end_by_server: dict[int, int] = field(default_factory=dict)
    missing_at_heal_by_server: dict[int, int] = field(default_factory=dict)
    converge_by_server_s: dict[int, float] = field(default_factory=dict)  # when each server had them all
    converge_s: float | None = None  # from the last heal until every acknowledged event was everywhere
    state_divergent_servers: list[int] = field(default_factory=list)
    state_differing_keys: int = 0
    order_inversions: int = 0
    order_inversions_by_server: dict[int, int] = field(default_factory=dict)
    duplicates: int = 0
    duplicate_txns: list[str] = field(default_factory=list)
    rss_mb: dict[str, float | None] = field(default_factory=dict)
    error: str | None = None
    logs: str | None = None
    elapsed_s: float = 0.0

    @property
    def failed(self) -> bool:
        return bool(
            self.error
            or self.missing_at_end
            or self.state_divergent_servers
            or self.order_inversions
            or self.duplicates
        )

    def failures(self) -> list[str]:
        out = []
        if self.error:
            out.append(f"error: {self.error.splitlines()[0] if self.error else ''}")
        if self.missing_at_end:
            where = ", ".join(f"s{i} {n}" for i, n in self.missing_at_end_by_server.items())
            out.append(
                f"{self.missing_at_end} (server, acknowledged event) pairs missing after the wait ({where})"
            )
        if self.state_divergent_servers:
            out.append(f"/state differs from server 0 on servers {self.state_divergent_servers}")
        if self.order_inversions:
            where = ", ".join(f"s{i} {n}" for i, n in self.order_inversions_by_server.items())
            out.append(
                f"{self.order_inversions} pairs of different depths ordered differently from s0 ({where})"
            )
        if self.duplicates:
            out.append(f"{self.duplicates} duplicate events for txnIds {self.duplicate_txns[:5]}")
        return out

    def report(self) -> str:
        conv = f"{self.converge_s:.1f}s" if self.converge_s is not None else "not converged"
        rss = ", ".join(f"{k} {v:.0f}" if v is not None else f"{k} -" for k, v in self.rss_mb.items())
        lines = [
            f"trial {self.name} ({self.backend}, seed {self.seed}): {'FAIL' if self.failed else 'ok'} "
            f"in {self.elapsed_s:.0f}s",
            f"  faults {len(self.faults)}, acknowledged {self.acknowledged} (client retries {self.retries})",
            f"  missing without paging: at heal {self.missing_at_heal}, after 10 s {self.missing_after_10s}, "
            f"at end {self.missing_at_end}; converged {conv}",
            f"  missing at heal by server {_by(self.missing_at_heal_by_server)}; each server complete after "
            + (", ".join(f"s{i} {t:.1f}s" for i, t in sorted(self.converge_by_server_s.items())) or "-"),
            f"  /state divergent servers {self.state_divergent_servers or 'none'}, order inversions "
            f"{self.order_inversions}, duplicates {self.duplicates}",
            f"  RSS MB: {rss}",
        ]
        if self.send_errors:
            lines.append(f"  refused sends: {len(self.send_errors)}, first: {self.send_errors[0]}")
        for failure in self.failures():
            lines.append(f"  FAILED: {failure}")
        if self.logs:
            lines.append(f"  logs kept in {self.logs}")
        return "\n".join(lines)


def _by(counts: dict[int, int]) -> str:
    return ", ".join(f"s{i} {n}" for i, n in sorted(counts.items())) or "none"


async def run_trial(
    cfg: TrialConfig, index: int, backend: str, say: Callable[[str], None] = print
) -> TrialResult:
    name = f"{index}-{backend}"
    seed = cfg.seed * 1000 + index
    nodes = cfg.servers + (1 if cfg.synapse_version else 0)
    faults: list[Fault] = schedule(
        seed, servers=nodes, faults=cfg.faults, kinds=cfg.kinds, gap=cfg.gap, duration=cfg.duration,
        first_kind=index * cfg.faults,
    )  # fmt: skip
    result = TrialResult(name, backend, seed)
    workdir = (cfg.workdir / f"run-{int(time.time())}-{name}").resolve()
    cluster = Cluster.create(
        workdir, cfg.servers, postgres=backend == "postgres", synapse_version=cfg.synapse_version
    )
    started = time.monotonic()
    with_synapse = f" (s{cfg.servers} is Synapse {cfg.synapse_version})" if cfg.synapse_version else ""
    say(f"trial {name}: {nodes} servers{with_synapse}, {len(faults)} faults, work directory {workdir}")
    try:
        await cluster.start()
        async with aiohttp.ClientSession() as session:
            users = [User(s, session) for s in cluster.servers]
            room_id = await setup_room(users, f"{int(time.time()) % 100000}{index}")
            await _measure(cfg, cluster, users, room_id, faults, result, say)
    except Exception as e:  # a trial that breaks is reported, and the next one runs
        result.error = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
    finally:
        result.rss_mb = {f"s{s.index}": s.rss_mb() for s in cluster.servers}
        await cluster.close()
        if result.failed or cfg.keep_all_logs:
            dest = (cfg.keep_dir or cfg.workdir / "kept").resolve() / workdir.name
            cluster.keep_logs(dest)
            result.logs = str(dest)
        shutil.rmtree(workdir, ignore_errors=True)  # what is worth keeping was copied
        result.elapsed_s = time.monotonic() - started
    return result


async def _measure(
    cfg: TrialConfig, cluster: Cluster, users: list[User], room_id: str, faults: list[Fault],
    result: TrialResult, say: Callable[[str], None],
) -> None:  # fmt: skip
    stop = asyncio.Event()
    prefix = f"{result.name}.{int(time.time())}"
    senders = [asyncio.create_task(u.send_loop(room_id, prefix, cfg.interval, stop)) for u in users]
    done: list[Fault] = []
    try:
        healed = await run_schedule(cluster, faults, time.monotonic(), say, done)
    finally:
        # Only what was injected counts (a trial can break half-way).
        result.faults, result.fault_kinds = [f.describe() for f in done], [f.kind for f in done]
        stop.set()
        await asyncio.gather(*senders, return_exceptions=True)
        result.acknowledged = sum(len(u.acks) for u in users)  # reported even if a fault broke the trial
        result.retries = sum(u.retries for u in users)
        result.send_errors = [e for u in users for e in u.errors]
    acked = [a.event_id for u in users for a in u.acks]

    timelines = await check.read_all(cluster.servers, room_id)
    result.missing_at_heal_by_server = check.missing_by_server(acked, timelines)
    result.missing_at_heal = sum(result.missing_at_heal_by_server.values())
    while True:
        now = time.monotonic() - healed
        by_server = check.missing_by_server(acked, timelines)
        for s in cluster.servers:
            if s.index not in by_server:
                result.converge_by_server_s.setdefault(s.index, now)
        current = sum(by_server.values())
        if current == 0 and result.converge_s is None:
            result.converge_s = now
        if result.missing_after_10s is None and (now >= 10.0 or current == 0):
            result.missing_after_10s = current
        if current == 0 or now > cfg.converge_timeout:
            result.missing_at_end = current
            result.missing_at_end_by_server = by_server
            break
        await asyncio.sleep(POLL)
        timelines = await check.read_all(cluster.servers, room_id)
    state = await check.compare_state(users, room_id)
    result.state_divergent_servers, result.state_differing_keys = state.divergent, state.differing_keys
    result.order_inversions_by_server = check.order_inversions(acked, timelines)
    result.order_inversions = sum(result.order_inversions_by_server.values())
    result.duplicates, result.duplicate_txns = check.duplicates(timelines)


def summary(results: list[TrialResult]) -> str:
    conv = [r.converge_s for r in results if r.converge_s is not None]
    not_conv = sum(1 for r in results if r.converge_s is None)
    kinds = Counter(k for r in results for k in r.fault_kinds)

    def total(attr: str) -> str:
        values = [getattr(r, attr) for r in results]
        known = [v for v in values if v is not None]
        return str(sum(known)) + ("" if len(known) == len(values) else f" ({len(values) - len(known)} n/a)")

    rss: dict[str, list[float]] = {}
    for r in results:
        for k, v in r.rss_mb.items():
            if v is not None:
                rss.setdefault(k, []).append(v)
    lines = [
        "summary",
        f"  trials {len(results)} ({sum(r.failed for r in results)} failed, "
        f"{sum(1 for r in results if r.error)} with errors)",
        f"  faults injected {sum(kinds.values())}: "
        + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())),
        f"  acknowledged events {total('acknowledged')}",
        f"  missing without paging ((server, event) pairs): at heal {total('missing_at_heal')}, "
        f"after 10 s {total('missing_after_10s')}, at end {total('missing_at_end')}",
        f"  divergences: /state {sum(len(r.state_divergent_servers) for r in results)} servers, "
        f"order inversions {total('order_inversions')}",
        f"  duplicates {total('duplicates')}",
        "  time to converge after the last fault: "
        + (f"median {statistics.median(conv):.1f}s, max {max(conv):.1f}s" if conv else "n/a")
        + (f" ({not_conv} trials did not converge)" if not_conv else ""),
        "  RSS MB at trial end (max over trials): "
        + ", ".join(f"{k} {max(v):.0f}" for k, v in sorted(rss.items())),
    ]
    return "\n".join(lines)


def as_json(results: list[TrialResult]) -> list[dict[str, object]]:
    out = []
    for r in results:
        d = asdict(r)
        d["failed"] = r.failed
        with contextlib.suppress(KeyError):
            d["error"] = (d["error"] or "")[:4000] or None
        out.append(d)
    return out
