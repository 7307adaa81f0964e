"""Growth curves (issue 21): how ingest, ``/sync`` and state lookup scale with the size of a room's state
(``--sizes``, default 10 to 100,000 state events) and with the width of its DAG (``--widths``, default 1 to
100 forward extremities), on a real Ranvier process over HTTP.

The rooms of the size curve are built before the server process starts, through storage's real
``persist_events`` (``bench/growth_build.py``: signed member joins of the remote driver's users, 1,000 per
transaction), one room per size; everything measured then goes over HTTP to the server process. The driver
is the remote server of ``bench/ingest.py``: its own key served over TLS, ``/send`` in transactions of 50.

Room size, one room per size; in each (``--repeats`` samples, min / median):

- ingest of state: ms per transaction of 50 member joins of further users of the driver;
- ingest of messages: ms per transaction of 50 messages (a linear chain);
- incremental ``/sync`` (lazy-loaded members) of a local member after each such transaction;
- initial ``/sync`` with lazy-loaded members (what clients do), and without (every member in the answer:
  linear in the room by definition);
- state lookup: one key (``GET /rooms/{id}/state/m.room.member/{user}``) and the whole state's ids at the
  latest event (federation ``/state_ids``: linear in the room by definition);
- the server's RSS.

DAG width, a fresh room of ``--width-members`` members (joined over ``/send``) per width W: the driver forks
W branches from its
join, each branch a join of another of its users, so the room has W forward extremities; then the same
message ingest, syncs and lookups, with the messages extending one branch (the others stay extremities).

Writes ``growth-<time>.json`` and ``growth-<time>.csv`` and one PNG chart per curve (log-log, with a
line of slope 1 through the first point for reference) into ``--out`` (default ``bench/results/growth``).

Usage: python3 -m bench growth [--sizes 10,100,1000,10000,100000] [--widths 1,3,10,30,100] [--repeats 5]
       [--out bench/results/growth]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from bench._loglog_chart import Curve, draw_chart
from bench.growth_build import BuiltRoom, PrebuiltRanvier, build_rooms
from bench.ingest import PER_TXN, DriverRoom, IngestDriver, start_driver
from bench.machine import describe_machine, finish, summary
from bench.servers import RanvierServer
from bench.workloads.client import LAZY_FILTER, MxClient, q
from ranvier.federation.client import path_segment
from ranvier.protocol.auth import auth_types_for_event
from ranvier.protocol.events import Pdu, build_event

FULL_FILTER = json.dumps({"room": {"timeline": {"limit": 1}}})
DEFAULT_SIZES = "10,100,1000,10000,100000"
DEFAULT_WIDTHS = "1,3,10,30,100"


@dataclass
class Point:
    """One measured quantity at one x (room size or width): its samples in milliseconds (or MB)."""

    curve: str
    metric: str
    x: int
    samples: list[float]
    unit: str = "ms"

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Point:
        return cls(
            row["curve"], row["metric"], int(row["x"]), [float(v) for v in row["samples"]], row["unit"]
        )

    def row(self) -> dict[str, Any]:
        return {
            "curve": self.curve, "metric": self.metric, "x": self.x, "unit": self.unit,
            "min": min(self.samples), "median": statistics.median(self.samples), "samples": self.samples,
        }  # fmt: skip


@dataclass
class Grower:
    """Builds and extends the driver's side of one room: member joins of fresh users, message chains."""

    driver: IngestDriver
    room: DriverRoom
    members: list[str] = field(default_factory=list)
    counter: int = 0

    def _event(self, prev: Pdu, sender: str, event_type: str, content: dict[str, Any], **kw: Any) -> Pdu:
        rv = self.room.rv
        keys = auth_types_for_event(rv, event_type, kw.get("state_key"), sender, content)
        pdu = build_event(
            room_version=rv, room_id=self.room.room_id, sender=sender, event_type=event_type,
            content=content, prev_events=[prev.event_id], depth=prev.depth + 1,
            auth_events=sorted(self.room.state[k] for k in keys if k in self.room.state),
            origin_server_ts=int(time.time() * 1000), server_name=self.driver.server_name,
            signing_key=self.driver.fed.keyring.signing_key, **kw,
        )  # fmt: skip
        # Kept so that the driver can serve it back (/event, /get_missing_events) if asked.
        self.driver.events[pdu.event_id] = pdu
        return pdu

    def join(self, prev: Pdu) -> Pdu:
        """A join of a fresh user of the driver, after ``prev``; the room's state learns it."""
        self.counter += 1
        user = f"@g{self.counter}:{self.driver.server_name}"
        pdu = self._event(prev, user, "m.room.member", {"membership": "join"}, state_key=user)
        self.room.state[("m.room.member", user)] = pdu.event_id
        self.members.append(user)
        return pdu

    def message(self, prev: Pdu, sender: str, body: str) -> Pdu:
        return self._event(prev, sender, "m.room.message", {"msgtype": "m.text", "body": body})

    async def send(self, target: str, pdus: list[Pdu]) -> float:
        """One transaction; seconds until the server answered. A refused PDU ends the benchmark: the curve
        would then measure refusals."""
        t0 = time.perf_counter()
        results = await self.driver.send(target, pdus)
        took = time.perf_counter() - t0
        refused = {k: v for k, v in results.items() if isinstance(v, dict) and "error" in v}
        if refused:
            raise RuntimeError(f"the server refused {len(refused)} PDUs, e.g. {next(iter(refused.items()))}")
        return took


async def _timed(repeats: int, call: Callable[[], Awaitable[Any]]) -> list[float]:
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


class Measure:
    def __init__(self, server: RanvierServer, owner: MxClient, grower: Grower, room_id: str, repeats: int):
        self.server, self.owner, self.grower, self.room_id = server, owner, grower, room_id
        self.repeats = repeats
        self.tip: Pdu = grower.room.last
        self.sender = grower.room.user
        self.messages = 0
        # How many state events the latest message's state holds (at least): what /state_ids must answer.
        self.state_size = len(grower.room.state)

    async def all_of(self, curve: str, x: int) -> list[Point]:
        target = self.server.server_name
        since = (await self.owner.ok("GET", "/sync", filter=LAZY_FILTER, timeout="0"))["next_batch"]
        ingest, incremental = [], []
        for _ in range(self.repeats):
            chain = []
            for _ in range(PER_TXN):
                self.messages += 1
                self.tip = self.grower.message(self.tip, self.sender, f"growth {self.messages}")
                chain.append(self.tip)
            ingest.append(await self.grower.send(target, chain) * 1000)
            t0 = time.perf_counter()
            answer = await self.owner.ok("GET", "/sync", filter=LAZY_FILTER, timeout="0", since=since)
            incremental.append((time.perf_counter() - t0) * 1000)
            since = answer["next_batch"]
            events = answer.get("rooms", {}).get("join", {}).get(self.room_id, {}).get("timeline", {})
            if not any(e.get("event_id") == self.tip.event_id for e in events.get("events", [])):
                raise RuntimeError("the incremental /sync did not carry the transaction's last message")
        points = [
            Point(curve, "ingest: 50 messages (one /send)", x, ingest),
            Point(curve, "/sync incremental (lazy members)", x, incremental),
        ]

        async def initial(filter_json: str) -> None:
            await self.owner.ok("GET", "/sync", filter=filter_json, timeout="0", http_timeout=600)

        points.append(
            Point(
                curve,
                "/sync initial (lazy members)",
                x,
                await _timed(self.repeats, lambda: initial(LAZY_FILTER)),
            )
        )
        points.append(
            Point(
                curve,
                "/sync initial (all members)",
                x,
                await _timed(self.repeats, lambda: initial(FULL_FILTER)),
            )
        )
        one = self.grower.members[0] if self.grower.members else self.grower.room.user
        path = f"/rooms/{q(self.room_id)}/state/m.room.member/{q(one)}"
        points.append(
            Point(
                curve,
                "state lookup: one key",
                x,
                await _timed(self.repeats, lambda: self.owner.ok("GET", path)),
            )
        )
        client = self.grower.driver.fed.client
        ids_path = f"/_matrix/federation/v1/state_ids/{path_segment(self.room_id)}"

        async def state_ids() -> None:
            answer = await client.request(
                "GET", target, ids_path, {"event_id": self.tip.event_id}, timeout=600
            )
            if len(answer.get("pdu_ids", [])) < self.state_size:
                raise RuntimeError("/state_ids answered fewer state events than the room holds")

        points.append(
            Point(curve, "state lookup: /state_ids (whole state)", x, await _timed(self.repeats, state_ids))
        )
        rss = psutil.Process(self.server.pid).memory_info().rss / 2**20
        points.append(Point(curve, "server RSS", x, [rss], unit="MB"))
        return points


async def _room(owner: MxClient, driver: IngestDriver, target: str) -> tuple[str, Grower]:
    room_id = await owner.create_room(name="growth")
    room = await driver.join(target, room_id)
    return room_id, Grower(driver, room)


async def _grow(grower: Grower, target: str, count: int) -> list[float]:
    """Add ``count`` member joins as a linear chain; ms per full transaction of 50."""
    per_txn = []
    for start in range(0, count, PER_TXN):
        batch, prev = [], grower.room.last
        for _ in range(min(PER_TXN, count - start)):
            prev = grower.join(prev)
            batch.append(prev)
        took = await grower.send(target, batch)
        grower.room.last = prev
        if len(batch) == PER_TXN:
            per_txn.append(took * 1000)
    return per_txn


def _log(points: list[Point]) -> None:
    for p in points:
        print(
            f"    {p.metric:<42} x={p.x:<7} min {min(p.samples):9.1f} {p.unit}   "
            f"median {statistics.median(p.samples):9.1f} {p.unit}",
            flush=True,
        )


StepDone = Callable[[list[Point]], None]


async def _by_size(
    server: RanvierServer, driver: IngestDriver, rooms: list[BuiltRoom], repeats: int, on_step: StepDone
) -> list[Point]:
    async with aiohttp.ClientSession() as session:
        points: list[Point] = []
        for built in rooms:
            grower = Grower(driver, built.room, members=list(built.members))
            client = built.owner.client(session, server.client_url)
            measure = Measure(server, client, grower, built.room_id, repeats)
            # State ingest at this size: transactions of 50 joins of further users, extending the chain.
            joins = await _grow(grower, server.server_name, PER_TXN * repeats)
            measure.tip, measure.state_size = grower.room.last, len(grower.room.state)
            print(f"  room of {built.size} state events (built in {built.build_s:.1f} s)", flush=True)
            step = [Point("size", "ingest: 50 member joins (one /send)", built.size, joins)]
            step += await measure.all_of("size", built.size)
            _log(step)
            on_step(step)
            points += step
        return points


async def _by_width(
    server: RanvierServer,
    driver: IngestDriver,
    widths: list[int],
    members: int,
    repeats: int,
    on_step: StepDone,
) -> list[Point]:
    async with aiohttp.ClientSession() as session:
        points: list[Point] = []
        for width in widths:
            # A user of its own per room: Ranvier's /sync does not apply a filter's "rooms".
            owner = await MxClient.register(session, server.client_url, "wide")
            room_id, grower = await _room(owner, driver, server.server_name)
            await _grow(grower, server.server_name, members)
            fork_point = grower.room.last
            tips = [grower.join(fork_point) for _ in range(width)]
            t0 = time.perf_counter()
            for i in range(0, width, PER_TXN):
                await grower.send(server.server_name, tips[i : i + PER_TXN])
            took = time.perf_counter() - t0
            grower.room.last = tips[0]
            measure = Measure(server, owner, grower, room_id, repeats)
            measure.sender = grower.members[-width]  # the first branch's user: its messages extend branch 0
            measure.state_size -= width - 1  # the other branches' joins are not in branch 0's state
            print(f"  room of {members} members forked {width} ways (forks sent in {took:.2f} s)", flush=True)
            step = await measure.all_of("width", width)
            _log(step)
            on_step(step)
            points += step
        return points


def _exponent(points: list[Point]) -> float | None:
    """The slope of log(median) over log(x) between the two largest x: 1 is linear, above it worse."""
    ordered = sorted(points, key=lambda p: p.x)
    if len(ordered) < 2:
        return None
    (a, b) = ordered[-2:]
    ya, yb = statistics.median(a.samples), statistics.median(b.samples)
    if a.x <= 0 or b.x <= a.x or ya <= 0 or yb <= 0:
        return None
    return math.log(yb / ya) / math.log(b.x / a.x)


def _write(points: list[Point], out: Path, machine: dict[str, Any], args: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    curves: dict[tuple[str, str], list[Point]] = {}
    for p in points:
        curves.setdefault((p.curve, p.metric), []).append(p)
    exponents = {f"{c}: {m}": _exponent(ps) for (c, m), ps in curves.items()}
    document = {"args": args, "machine": machine, "points": [p.row() for p in points], "exponents": exponents}
    (out / f"growth-{stamp}.json").write_text(json.dumps(document, indent=2))
    with (out / f"growth-{stamp}.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["curve", "metric", "x", "unit", "min", "median", "samples"])
        for p in points:
            row = p.row()
            writer.writerow([p.curve, p.metric, p.x, p.unit, f"{row['min']:.3f}", f"{row['median']:.3f}",
                             " ".join(f"{s:.3f}" for s in p.samples)])  # fmt: skip
    xlabel = {"size": "state events in the room", "width": "forward extremities"}
    for curve in ("size", "width"):
        mine = {m: ps for (c, m), ps in curves.items() if c == curve and ps[0].unit == "ms"}
        groups = {
            "ingest": [m for m in mine if m.startswith("ingest")],
            "sync": [m for m in mine if m.startswith("/sync")],
            "state": [m for m in mine if m.startswith("state lookup")],
        }
        for name, metrics in groups.items():
            if not metrics:
                continue
            series = [
                Curve(m, [(p.x, statistics.median(p.samples)) for p in sorted(mine[m], key=lambda p: p.x)])
                for m in metrics
            ]
            title = f"{name} vs {xlabel[curve]} (median ms, log-log)"
            draw_chart(out / f"growth-{curve}-{name}.png", title, xlabel[curve], "ms", series)
    print(f"written to {out}/growth-{stamp}.json, .csv and growth-*.png")
    for name, slope in exponents.items():
        if slope is not None:
            print(f"  growth exponent at the top of {name}: {slope:.2f}")


def _load(paths: list[Path]) -> list[Point]:
    """Points of earlier runs: their JSON documents or the partial lines a run writes step by step."""
    points = []
    for path in paths:
        if path.suffix == ".jsonl":
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        else:
            rows = json.loads(path.read_text())["points"]
        points += [Point.from_row(r) for r in rows]
    return points


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python3 -m bench growth", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated; empty: no size curve")
    parser.add_argument("--widths", default=DEFAULT_WIDTHS, help="comma-separated; empty: no width curve")
    parser.add_argument("--width-members", type=int, default=100, help="members of each width's room")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench/results/growth"))
    parser.add_argument(
        "--render", type=Path, nargs="+", help="no run: write CSV, JSON and charts from earlier runs' files"
    )
    args = parser.parse_args(argv)
    if args.render:
        _write(_load(args.render), args.out, {"rendered_from": [str(p) for p in args.render]}, {})
        return
    sizes = sorted(int(s) for s in args.sizes.split(",") if s)
    widths = sorted(int(w) for w in args.widths.split(",") if w)
    machine = describe_machine()
    print(f"growth bench: sizes {sizes}, widths {widths}, {args.repeats} repeats")
    args.out.mkdir(parents=True, exist_ok=True)
    # Each step's points as soon as they are measured: a long run cut short keeps what it measured
    # (``--render`` draws from it).
    partial = args.out / f"growth-{time.strftime('%Y%m%d-%H%M%S')}.partial.jsonl"

    def on_step(step: list[Point]) -> None:
        with partial.open("a") as f:
            f.writelines(json.dumps(p.row()) + "\n" for p in step)

    with tempfile.TemporaryDirectory(prefix="bench-growth-") as tmp:
        server = PrebuiltRanvier(Path(tmp) / "server", presence=False)

        async def run() -> list[Point]:
            driver = await start_driver(Path(tmp) / "driver")
            try:
                points: list[Point] = []
                if sizes:
                    rooms = await build_rooms(server, driver, sizes)
                    await asyncio.to_thread(server.start)
                    points += await _by_size(server, driver, rooms, args.repeats, on_step)
                else:
                    await asyncio.to_thread(server.start)
                if widths:
                    points += await _by_width(
                        server, driver, widths, args.width_members, args.repeats, on_step
                    )
                return points
            finally:
                await driver.close()

        try:
            points = asyncio.run(run())
        finally:
            server.stop()
    machine = finish(machine)
    print(summary(machine))
    _write(points, args.out, machine, {k: str(v) for k, v in vars(args).items()})
