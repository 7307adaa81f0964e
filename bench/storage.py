"""Room/event storage on SQLite and PostgreSQL.

Prints, as min / median of several runs (each on a fresh database):

- persist: a linear chain of message events in one room, in batches (default 10,000 in batches of 50),
  events/s; SQLite both with synchronous=FULL (the server's setting: a commit survives power loss) and
  NORMAL (survives a process crash only);
- state lookup: the state before a message in a room whose state has 50,000 member events (joined one by
  one, so the groups form the deepest lineage): time and rows read, cold (fresh caches) and warm, for the
  full map and for the four keys an auth check needs; and persisting one more message by passing that
  full map (the cost of the map comparison);
- size: database growth per 10,000 messages in a room with 5,000 members.

Events are built and signed before timing starts: only storage is measured.

Usage: python3 -m bench storage [--events 10000] [--batch 50] [--runs 3] [--state 50000] [--members 5000]
       [--pg-dsn postgresql://postgres@127.0.0.1:5432/test] [--no-pg]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg

from ranvier.protocol.events import Pdu, build_event
from ranvier.protocol.room_versions import get_room_version
from ranvier.protocol.signing import SigningKey
from ranvier.storage.interfaces import EventToPersist, StateDelta
from ranvier.storage.sql import RoomStorage, migrate
from ranvier.storage.sql.engine import Database, PostgresDatabase, SqliteDatabase

SERVER = "bench.example.org"
KEY = SigningKey.from_seed("bench", bytes(range(32)))
VERSION = get_room_version("11")
CREATOR = f"@creator:{SERVER}"


class Room:
    """Builds a room's events ahead of time: create, power levels, join rules, then what the bench needs."""

    def __init__(self) -> None:
        self.room_id = f"!{uuid.uuid4().hex[:16]}:{SERVER}"
        self.events: list[Pdu] = []
        self.ts = 1_700_000_000_000
        self.auth: dict[tuple[str, str], str] = {}
        create = self.add("m.room.create", "", {"room_version": "11"}, auth=[])
        self.add("m.room.member", CREATOR, {"membership": "join"}, auth=[create.event_id])
        self.add("m.room.power_levels", "", {"users": {CREATOR: 100}})
        self.add("m.room.join_rules", "", {"join_rule": "public"})

    def add(
        self,
        etype: str,
        state_key: str | None,
        content: dict[str, Any],
        sender: str = CREATOR,
        auth: list[str] | None = None,
    ) -> Pdu:
        if auth is None:
            keys = [("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.member", sender)]
            auth = [self.auth[k] for k in keys if k in self.auth]
        self.ts += 1
        pdu = build_event(
            room_version=VERSION,
            room_id=self.room_id,
            sender=sender,
            event_type=etype,
            content=content,
            prev_events=[self.events[-1].event_id] if self.events else [],
            auth_events=auth,
            depth=len(self.events) + 1,
            origin_server_ts=self.ts,
            server_name=SERVER,
            signing_key=KEY,
            state_key=state_key,
        )
        self.events.append(pdu)
        if state_key is not None:
            self.auth[(etype, state_key)] = pdu.event_id
        return pdu

    def joins(self, n: int) -> None:
        for i in range(n):
            user = f"@user{i}:{SERVER}"
            self.add("m.room.member", user, {"membership": "join", "displayname": f"User {i}"}, sender=user)

    def messages(self, n: int) -> None:
        body = "The quick brown fox jumps over the lazy dog. " * 2
        for i in range(n):
            self.add("m.room.message", None, {"msgtype": "m.text", "body": f"{body}{i}"})


def state_of(events: list[Pdu]) -> dict[tuple[str, str], str]:
    return {e.state_tuple: e.event_id for e in events if e.state_tuple is not None}


async def persist_chain(storage: RoomStorage, room: Room, events: list[Pdu], batch: int) -> None:
    """Persist ``events`` (a chain continuing the room) in batches, keeping current state up to date."""
    for start in range(0, len(events), batch):
        part = events[start : start + batch]
        items = [EventToPersist(e, state_before_is_after_prev=True) for e in part]
        if part[0].depth == 1:
            items[0] = EventToPersist(part[0], state_before={})
        delta = StateDelta(changed=state_of(part))
        await storage.events.persist_events(room.room_id, items, new_current_state=delta)


@asynccontextmanager
async def fresh_database(kind: str, pg_dsn: str) -> AsyncIterator[tuple[Database, Callable[[], Any]]]:
    """A new empty migrated database and a coroutine function returning its size in bytes."""
    if kind.startswith("sqlite"):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "bench.db"
            db = await SqliteDatabase.open(path, synchronous=kind.partition("-")[2] or "FULL")

            async def sqlite_size() -> int:
                # The logical size (pages in use, WAL included), not the files, which lag behind.
                query = "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()"
                return int(await db.fetchval(query))

            try:
                await migrate(db)
                yield db, sqlite_size
            finally:
                await db.close()
        return
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_dsn)
    await admin.execute(f"CREATE SCHEMA {schema}")
    db = await PostgresDatabase.open(pg_dsn, schema=schema)

    async def pg_size() -> int:
        return int(
            await admin.fetchval(
                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind = 'r'",
                schema,
            )
        )

    try:
        await migrate(db)
        yield db, pg_size
    finally:
        await db.close()
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


async def new_storage(db: Database, room: Room) -> RoomStorage:
    storage = await RoomStorage.open(db)
    await storage.rooms.store_room(room.room_id, "11", CREATOR)
    return storage


def summary(values: list[float], unit: str, fmt: str = "{:,.0f}") -> str:
    return f"min {fmt.format(min(values))} / median {fmt.format(statistics.median(values))} {unit}"


async def bench_persist(kind: str, args: argparse.Namespace, room: Room, setup: int) -> str:
    rates = []
    for _ in range(args.runs):
        async with fresh_database(kind, args.pg_dsn) as (db, _size):
            storage = await new_storage(db, room)
            await persist_chain(storage, room, room.events[:setup], args.batch)
            start = time.perf_counter()
            await persist_chain(storage, room, room.events[setup:], args.batch)
            rates.append((len(room.events) - setup) / (time.perf_counter() - start))
    return summary(rates, "events/s")


async def bench_state_lookup(kind: str, args: argparse.Namespace, room: Room, message: Pdu) -> list[str]:
    async with fresh_database(kind, args.pg_dsn) as (db, _size):
        storage = await new_storage(db, room)
        start = time.perf_counter()
        await persist_chain(storage, room, room.events, 500)
        build = time.perf_counter() - start
        target = room.events[-1].event_id
        auth_keys = [("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.join_rules", "")]
        auth_keys.append(("m.room.member", f"@user{args.state // 2}:{SERVER}"))
        lines = [f"building the room ({len(room.events):,} events, batches of 500): {build:.1f} s"]
        for label, keys in (("full map", None), ("4 auth keys", auth_keys)):
            cold_t, warm_t, rows = [], [], []
            for _ in range(max(args.runs, 3)):
                cold = await RoomStorage.open(db)
                start = time.perf_counter()
                state = await cold.state.get_state_ids_after(target, keys)
                cold_t.append((time.perf_counter() - start) * 1000)
                rows.append(cold.state_groups.rows_read)
                start = time.perf_counter()
                await cold.state.get_state_ids_after(target, keys)
                warm_t.append((time.perf_counter() - start) * 1000)
            assert len(state) == (len(keys) if keys else len(room.events))  # every event is a state event
            lines.append(
                f"{label}: cold {summary(cold_t, 'ms', '{:.1f}')}, rows read {int(min(rows)):,};"
                f" warm {summary(warm_t, 'ms', '{:.2f}')}"
            )
        full = await storage.state.get_state_ids_after(target)
        start = time.perf_counter()
        await storage.events.persist_events(room.room_id, [EventToPersist(message, state_before=full)])
        lines.append(f"one more message given the full map: {(time.perf_counter() - start) * 1000:.1f} ms")
        return lines


async def bench_size(kind: str, args: argparse.Namespace, room: Room, setup: int) -> str:
    async with fresh_database(kind, args.pg_dsn) as (db, size):
        storage = await new_storage(db, room)
        await persist_chain(storage, room, room.events[:setup], 500)
        before = await size()
        await persist_chain(storage, room, room.events[setup:], args.batch)
        grown = await size() - before
        per = grown * 10_000 / (len(room.events) - setup)
        return f"{per / 2**20:,.1f} MiB per 10,000 messages ({per / 10_000:,.0f} bytes each)"


async def run(args: argparse.Namespace) -> None:
    kinds = ["sqlite-FULL", "sqlite-NORMAL"] + ([] if args.no_pg else ["postgres"])
    print("building events ...", flush=True)
    chain = Room()
    setup = len(chain.events)
    chain.messages(args.events)
    big = Room()
    big.joins(args.state - 4)  # the four setup state events make the total
    message = build_event(
        room_version=VERSION,
        room_id=big.room_id,
        sender=CREATOR,
        event_type="m.room.message",
        content={"msgtype": "m.text", "body": "hello"},
        prev_events=[big.events[-1].event_id],
        auth_events=[big.auth[("m.room.create", "")], big.auth[("m.room.member", CREATOR)]],
        depth=len(big.events) + 1,
        origin_server_ts=big.ts + 1,
        server_name=SERVER,
        signing_key=KEY,
    )
    sized = Room()
    sized.joins(args.members)
    size_setup = len(sized.events)
    sized.messages(10_000)

    print(f"\npersist {args.events:,} chained messages in batches of {args.batch} ({args.runs} runs)")
    for kind in kinds:
        print(f"  {kind:14} {await bench_persist(kind, args, chain, setup)}", flush=True)
    print(f"\nstate lookup: state after the last of {args.state:,} state events (one join each)")
    for kind in kinds[:1] + kinds[2:]:
        for line in await bench_state_lookup(kind, args, big, message):
            print(f"  {kind:14} {line}", flush=True)
    print(f"\ndatabase size: 10,000 messages in a room with {args.members:,} members")
    for kind in kinds[:1] + kinds[2:]:
        print(f"  {kind:14} {await bench_size(kind, args, sized, size_setup)}", flush=True)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python3 -m bench storage", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--state", type=int, default=50_000)
    parser.add_argument("--members", type=int, default=5_000)
    parser.add_argument("--pg-dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--no-pg", action="store_true")
    asyncio.run(run(parser.parse_args(argv)))
