"""Inbound ``/send`` ingest on one in-process Ranvier: how fast PDUs are accepted, persisted and readable.

Each run starts a fresh homeserver (SQLite, or a fresh PostgreSQL database with ``--postgres``) on loopback
and one or more *drivers* (tiny remote servers with their own signing keys, from
``tests/scenarios/inbound_driver.py``) that join a public room through ``/send``. The message PDUs are built
and signed before timing starts; then each driver sends its chain, ``--per-txn`` PDUs per transaction, the
next transaction the moment the previous one is acknowledged. Signature checks are real (the server fetches
the drivers' keys over TLS before timing starts, through the join).

Variants (``--senders``):

- ``1``: one driver sends a linear chain of ``--pdus`` messages (the issue's figure);
- ``2``: two drivers, concurrently, each a chain of ``--pdus / 2`` messages in the same room, both starting
  from the room's head after both joined (so the DAG has two branches: the soft-failure check resolves the
  current state of two forward extremities).

More shapes, each added by its option:

- ``--rooms N``: N drivers at once, each in a room of its own (N rooms created by the local user), each a
  chain of ``--pdus / N`` messages;
- ``--forks``: one driver, one room, a DAG with forks: every ``FORK_EVERY``-th step two messages cite the
  same parent and the next one cites both (a merge), so every few events the room has two forward
  extremities and the merge's state is resolved. Readable means the last merge is served.

``--threads`` adds, per variant, the CPU time of each thread kind while sending (from /proc: the event
loop, the database connection threads, the executor threads that verify signatures), per PDU.

Figures per variant (min / median / max of ``--runs`` runs):

- accepted: PDUs / time from the first transaction sent to the last one acknowledged (acknowledged means
  committed);
- readable: PDUs / time until ``/messages`` (newest first) serves the last PDU of every chain; after that,
  untimed, the whole history is paged through and every PDU must be there;
- CPU: process CPU time (every thread, the drivers' sending included) per PDU while sending: less
  sensitive than wall time to other load on a shared machine;
- RSS: the process's resident set after the run and its peak (the driver and client share the process, so
  this is an upper bound for the server).

Usage: python3 -m bench send_ingest [--pdus 5000] [--per-txn 50] [--runs 3] [--senders 1,2] [--rooms 10]
       [--forks] [--threads] [--postgres] [--pg-url postgresql://postgres@127.0.0.1:5432/postgres]
       [--profile FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import resource
import secrets
import statistics
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg

from ranvier.app import Homeserver
from ranvier.config import parse_config
from ranvier.protocol.events import Pdu, StateKey
from ranvier.protocol.room_versions import RoomVersion
from tests.scenarios.inbound_driver import (
    ClientUser,
    Driver,
    auth_events_for,
    current_state_events,
    free_port,
    register,
    start_driver,
)

PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
FORK_EVERY = 5  # --forks: a fork (two siblings) and its merge every this many steps


@dataclass
class Chain:
    """One driver's user in the room and the chain of messages it will send."""

    driver: Driver
    user: str
    last: Pdu
    pdus: list[Pdu]
    room_id: str = ""


@dataclass(frozen=True)
class Shape:
    """What one variant sends: ``senders`` drivers, in one room or each in its own, chains or forks."""

    senders: int
    rooms: int = 1  # 1: every driver in the same room; else one room per driver (rooms == senders)
    forks: bool = False

    @property
    def label(self) -> str:
        if self.forks:
            return "forks (one room)"
        if self.rooms > 1:
            return f"{self.rooms} rooms at once"
        return f"{self.senders} sender{'s' if self.senders > 1 else ''}" + (
            " (one room)" if self.senders > 1 else ""
        )


@dataclass
class RunResult:
    accepted: float  # PDUs/s
    readable: float  # PDUs/s
    cpu_us: float  # process CPU time (all threads, driver included) per PDU while sending
    rss_mb: float
    peak_rss_mb: float
    thread_cpu_us: dict[str, float] = field(default_factory=dict)  # thread kind -> CPU us per PDU


_CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def _thread_kind(name: str) -> str:
    if name == "MainThread":
        return "event loop"
    if name.startswith("asyncio_"):
        return "executor (verify)"
    return "database" if name.startswith("Thread-") else name.rstrip("0123456789_-")


def _thread_cpu() -> Counter[str]:
    """CPU seconds of each kind of thread of this process so far (utime + stime from /proc)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: Counter[str] = Counter()  # float seconds (Counter's type says int)
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended meanwhile
        kind = _thread_kind(names.get(int(tid), "other"))
        out[kind] += (int(fields[11]) + int(fields[12])) / _CLOCK_TICK  # type: ignore[assignment]
    return out


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _start_homeserver(data_dir: Path, database_url: str) -> Homeserver:
    fed_port = free_port()  # part of the server name, so chosen before the config is built
    config = parse_config(
        {
            "server_name": f"127.0.0.1:{fed_port}",
            "data_dir": str(data_dir),
            "signing_key_path": str(data_dir / "signing.key"),
            "database": {"url": database_url},
            "listeners": {
                "client": {"bind": "127.0.0.1", "port": 0},
                "federation": {"bind": "127.0.0.1", "port": fed_port, "tls": True},
            },
            "federation": {"verify_tls": False, "allow_loopback": True},
            "registration": {"enabled": True},
            # What is measured is ingest, not the limiter (bench/servers.py turns it off too).
            "rate_limits": {"enabled": False},
        }
    )
    hs = Homeserver(config)
    await hs.start()
    return hs


async def _create_pg_database(admin_url: str) -> tuple[str, str]:
    name = f"ranvier_send_ingest_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(
            f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
        )
    finally:
        await conn.close()
    return name, admin_url.rsplit("/", 1)[0] + "/" + name


async def _drop_pg_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


async def _join(
    hs: Homeserver, room_id: str, rv: RoomVersion, driver: Driver, state: dict[StateKey, Pdu]
) -> Pdu:
    """The driver's user joins the public room through ``/send``; returns the join (the room's new head)."""
    user = driver.user("bob")
    extremities = await hs.storage.events.get_events(await hs.storage.events.get_forward_extremities(room_id))
    content = {"membership": "join"}
    auth = auth_events_for(rv, state, "m.room.member", user, content, user)
    join = driver.build(rv, room_id, user, "m.room.member", content, list(extremities.values()), auth, user)
    result = await driver.send(hs.server_name, [join])
    if result["pdus"] != {join.event_id: {}}:
        raise RuntimeError(f"the driver's join was refused: {result}")
    state[("m.room.member", user)] = join
    return join


def _build_chain(
    chain: Chain, rv: RoomVersion, room_id: str, state: dict[StateKey, Pdu], prefix: str, count: int
) -> None:
    content0 = {"msgtype": "m.text", "body": ""}
    auth = auth_events_for(rv, state, "m.room.message", chain.user, content0)
    for i in range(count):
        content = {"msgtype": "m.text", "body": f"{prefix}{i}"}
        pdu = chain.driver.build(rv, room_id, chain.user, "m.room.message", content, [chain.last], auth)
        chain.pdus.append(pdu)
        chain.last = pdu


def _groups(drivers: list[Driver], rooms: int) -> list[list[Driver]]:
    """The drivers of each room: all in one, or one each."""
    return [drivers] if rooms == 1 else [[d] for d in drivers]


def _build_forks(
    chain: Chain, rv: RoomVersion, room_id: str, state: dict[StateKey, Pdu], prefix: str, count: int
) -> None:
    """``count`` steps of a DAG with forks: every FORK_EVERY-th step adds a second message with the same
    parent, and the next step cites both (parents always come before their children in the list)."""
    content0 = {"msgtype": "m.text", "body": ""}
    auth = auth_events_for(rv, state, "m.room.message", chain.user, content0)
    heads = [chain.last]
    for i in range(count):
        content = {"msgtype": "m.text", "body": f"{prefix}{i}"}
        pdu = chain.driver.build(rv, room_id, chain.user, "m.room.message", content, heads, auth)
        chain.pdus.append(pdu)
        if i % FORK_EVERY == 0 and len(heads) == 1 and i + 1 < count:
            # the sibling: same parent, other content
            content = {"msgtype": "m.text", "body": f"{prefix}{i}b"}
            sibling = chain.driver.build(rv, room_id, chain.user, "m.room.message", content, heads, auth)
            chain.pdus.append(sibling)
            heads = [pdu, sibling]
        else:
            heads = [pdu]
        chain.last = pdu


async def _send_chain(hs: Homeserver, chain: Chain, per_txn: int, tag: str) -> None:
    for n, i in enumerate(range(0, len(chain.pdus), per_txn)):
        txn = chain.pdus[i : i + per_txn]
        result = await chain.driver.send(hs.server_name, txn, txn_id=f"{tag}-{n}")
        if result["pdus"] != {p.event_id: {} for p in txn}:
            bad = {k: v for k, v in result["pdus"].items() if v}
            raise RuntimeError(f"PDUs refused: {list(bad.items())[:3]}")


async def _newest_ids(alice: ClientUser, room_id: str, limit: int = 20) -> set[str]:
    status, body = await alice.call("GET", f"/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit={limit}")
    if status != 200:
        raise RuntimeError(f"/messages failed: {body}")
    return {e["event_id"] for e in body["chunk"]}


async def _create_room(alice: ClientUser) -> str:
    status, body = await alice.call("POST", "/_matrix/client/v3/createRoom", {"preset": "public_chat"})
    if status != 200:
        raise RuntimeError(f"createRoom failed: {body}")
    return str(body["room_id"])


async def _one_run(
    workdir: Path,
    database_url: str,
    shape: Shape,
    total: int,
    per_txn: int,
    profile: cProfile.Profile | None,
) -> RunResult:
    hs = await _start_homeserver(workdir / "hs", database_url)
    drivers: list[Driver] = []
    session = aiohttp.ClientSession()
    try:
        drivers = [await start_driver(workdir / f"driver{i}") for i in range(shape.senders)]
        alice = await register(session, hs, "alice")
        chains: list[Chain] = []
        room_ids = [await _create_room(alice) for _ in range(shape.rooms)]
        for room_id, group in zip(room_ids, _groups(drivers, shape.rooms), strict=True):
            rv = await hs.storage.rooms.get_room_version(room_id)
            assert rv is not None, "the room was just created"
            state = await current_state_events(hs, room_id)
            joins = [await _join(hs, room_id, rv, d, state) for d in group]
            room_chains = [Chain(d, d.user("bob"), joins[-1], [], room_id) for d in group]
            for chain in room_chains:
                i = len(chains)
                build = _build_forks if shape.forks else _build_chain
                build(chain, rv, room_id, state, f"s{i}-", total // shape.senders)
                chains.append(chain)
        count = sum(len(c.pdus) for c in chains)

        if profile is not None:
            profile.enable()
        t0, cpu0, threads0 = time.perf_counter(), time.process_time(), _thread_cpu()
        await asyncio.gather(*(_send_chain(hs, c, per_txn, f"t{i}") for i, c in enumerate(chains)))
        acked, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        threads = _thread_cpu()
        threads.subtract(threads0)
        for room_id in room_ids:
            heads = {c.pdus[-1].event_id for c in chains if c.room_id == room_id}
            while not heads <= await _newest_ids(alice, room_id):
                if time.perf_counter() - t0 > acked + 60:
                    raise RuntimeError("the last PDUs never became readable through /messages")
                await asyncio.sleep(0.01)
        readable = time.perf_counter() - t0
        if profile is not None:
            profile.disable()

        # Untimed: every PDU is served, each chain in order (a fork's two siblings in either order).
        for room_id in room_ids:
            served = [e for e in await alice.messages(room_id) if e["type"] == "m.room.message"]
            for i, chain in enumerate(chains):
                if chain.room_id != room_id:
                    continue
                mine = [e["event_id"] for e in served if e["content"]["body"].startswith(f"s{i}-")]
                sent = [p.event_id for p in chain.pdus]
                if (sorted(mine) != sorted(sent)) if shape.forks else (mine != sent):
                    raise RuntimeError(f"chain {i}: {len(mine)} of {len(sent)} served, or out of order")
        per_thread = {k: v / count * 1e6 for k, v in threads.items() if v > 0}
        return RunResult(
            count / acked, count / readable, cpu / count * 1e6, _rss_mb(), _peak_rss_mb(), per_thread
        )
    finally:
        await session.close()
        for d in drivers:
            await d.close()
        await hs.stop()


def _figures(values: list[float]) -> str:
    return f"{min(values):7.0f} / {statistics.median(values):7.0f} / {max(values):7.0f}"


async def _main(args: argparse.Namespace) -> None:
    profile = cProfile.Profile() if args.profile else None
    backend = "PostgreSQL" if args.postgres else "SQLite"
    print(f"send_ingest: {args.pdus} PDUs, {args.per_txn} per transaction, {backend}, {args.runs} runs")
    print(
        f"{'variant':<22} {'accepted PDU/s':>27} {'readable PDU/s':>27}"
        f" {'CPU us/PDU':>11} {'RSS MB (peak)':>14}"
    )
    print(f"{'':<22} {'min / median / max':>27} {'min / median / max':>27} {'median':>11}")
    shapes = [Shape(n) for n in args.senders]
    if args.rooms:
        shapes.append(Shape(args.rooms, rooms=args.rooms))
    if args.forks:
        shapes.append(Shape(1, forks=True))
    for shape in shapes:
        results: list[RunResult] = []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="send_ingest-") as tmp:
                pg_name = None
                if args.postgres:
                    pg_name, url = await _create_pg_database(args.pg_url)
                else:
                    url = f"sqlite:///{Path(tmp) / 'hs' / 'homeserver.db'}"
                try:
                    results.append(await _one_run(Path(tmp), url, shape, args.pdus, args.per_txn, profile))
                finally:
                    if pg_name is not None:
                        await _drop_pg_database(args.pg_url, pg_name)
        label = shape.label
        rss = (
            f"{statistics.median(r.rss_mb for r in results):.0f} ({max(r.peak_rss_mb for r in results):.0f})"
        )
        print(
            f"{label:<22} {_figures([r.accepted for r in results]):>27}"
            f" {_figures([r.readable for r in results]):>27}"
            f" {statistics.median(r.cpu_us for r in results):>11.0f} {rss:>14}",
            flush=True,
        )
        if args.threads:
            kinds = sorted({k for r in results for k in r.thread_cpu_us})
            parts = [
                f"{k} {statistics.median(r.thread_cpu_us.get(k, 0.0) for r in results):.0f}" for k in kinds
            ]
            print(f"{'':<22} CPU us/PDU by thread (median): {', '.join(parts)}", flush=True)
    if profile is not None:
        profile.dump_stats(args.profile)
        print(f"cProfile of the timed sections (event loop thread only) written to {args.profile}")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python3 -m bench send_ingest", description=__doc__.split("\n")[0])
    parser.add_argument("--pdus", type=int, default=5000)
    parser.add_argument("--per-txn", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--senders", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2], help="variants, e.g. 1,2"
    )
    parser.add_argument(
        "--rooms", type=int, default=0, help="add the variant: N drivers, a room each, at once"
    )
    parser.add_argument("--forks", action="store_true", help="add the variant: one room, a DAG with forks")
    parser.add_argument("--threads", action="store_true", help="print CPU per PDU by thread kind")
    parser.add_argument("--postgres", action="store_true", help="a fresh PostgreSQL database per run")
    parser.add_argument("--pg-url", default=PG_URL, help="where to create (and drop) the databases")
    parser.add_argument("--profile", help="write a cProfile of the timed sections to this file")
    asyncio.run(_main(parser.parse_args(argv)))
