"""The work of a partial-state join does not grow with the room (issue 19: "time to a usable room flat in
the size of the room"): from the client's ``/join`` to the room in a lazy-loading ``/sync`` and the first
message sent, the work the resident's and the joiner's databases do is the same for a room of 50 members
and one of 2,000.

Measured by counts, never by time: every row any SQLite statement of either server returns, the statements,
and the SQLite virtual machine's steps (its progress handler, every STEP instructions), which count what a
statement does inside the database too: a scan of the room's membership index that returns one row per
server, or a count, is one row but thousands of steps. The resident is restarted after its rooms are built,
so its caches are cold, as for the first join after a start (7.4 s at 10,000 members, 34.9 s at 50,000,
before this test). The push hook evaluates the join for the room's local members without reading them (a
join notifies no member with the default rules); the rule sets evaluated are the same in both rooms.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ranvier.app import Homeserver
from ranvier.push import actions as push_actions
from ranvier.storage.sql import engine
from tests.scenarios.servers import Client, start_server

from .helpers import Gate, fill_room, lazy_sync

SMALL, BIG = 50, 2000
STEP = 10  # SQLite VM instructions per progress-handler call


@dataclass
class Reads:
    """Rows returned to each server by its database, statements, and SQLite VM steps (in STEPs)."""

    owners: dict[int, str] = field(default_factory=dict)  # id of a connection or database -> server
    rows: Counter[str] = field(default_factory=Counter)
    statements: Counter[str] = field(default_factory=Counter)
    by_sql: dict[str, Counter[str]] = field(default_factory=dict)
    ticks: dict[int, list[int]] = field(default_factory=dict)  # id of a connection -> [progress calls]
    rule_evaluations: int = 0  # push rule sets evaluated, both servers

    async def own(self, name: str, hs: Homeserver) -> None:
        db: Any = hs.storage.db
        self.owners[id(db)] = name
        for conn in db._all:
            self.owners[id(conn)] = name
            cell = self.ticks[id(conn)] = [0]

            def tick(cell: list[int] = cell) -> int:  # in the connection's thread: one cell each
                cell[0] += 1
                return 0  # go on

            await conn.set_progress_handler(tick, STEP)

    def steps(self, name: str) -> int:
        return sum(cell[0] for conn, cell in self.ticks.items() if self.owners[conn] == name)

    def count(self, owner: object, sql: str, n: int) -> None:
        name = self.owners.get(id(owner), "other")
        self.rows[name] += n
        self.statements[name] += 1
        self.by_sql.setdefault(name, Counter())[" ".join(sql.split())[:90]] += n

    def reset(self) -> None:
        self.rows.clear()
        self.statements.clear()
        self.by_sql.clear()
        for cell in self.ticks.values():
            cell[0] = 0
        self.rule_evaluations = 0


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[Reads]:
    counted = Reads()
    txn_fetchall = engine._SqliteTxn.fetchall
    db_fetchall = engine.SqliteDatabase.fetchall

    async def in_txn(self: Any, sql: str, params: Any = ()) -> list[engine.Row]:
        rows = await txn_fetchall(self, sql, params)
        counted.count(self._conn, sql, len(rows))
        return rows

    async def on_db(self: Any, sql: str, params: Any = ()) -> list[engine.Row]:
        rows = await db_fetchall(self, sql, params)
        if self._has_readers:  # else it went through a transaction, counted there
            counted.count(self, sql, len(rows))
        return rows

    evaluate = push_actions.evaluate

    def evaluating(*args: Any) -> Any:
        counted.rule_evaluations += 1
        return evaluate(*args)

    monkeypatch.setattr(push_actions, "evaluate", evaluating)
    monkeypatch.setattr(engine._SqliteTxn, "fetchall", in_txn)
    monkeypatch.setattr(engine.SqliteDatabase, "fetchall", on_db)
    yield counted


@dataclass(frozen=True)
class JoinCost:
    resident_rows: int
    joiner_rows: int
    resident_statements: int
    joiner_statements: int
    resident_steps: int  # in STEPs
    joiner_steps: int  # the join, the /sync and the first message sent
    rule_evaluations: int


async def _join(reads: Reads, joiner: Client, resident: Homeserver, room_id: str) -> JoinCost:
    reads.reset()
    await joiner.ok("POST", f"/join/{room_id}", {}, server_name=resident.server_name)
    synced = await lazy_sync(joiner)
    assert room_id in synced["rooms"]["join"]
    resident_steps = reads.steps("resident")  # before the message reaches it (its members are notified)
    await joiner.ok(
        "PUT", f"/rooms/{room_id}/send/m.room.message/first", {"msgtype": "m.text", "body": "hello"}
    )
    cost = JoinCost(
        reads.rows["resident"],
        reads.rows["joiner"],
        reads.statements["resident"],
        reads.statements["joiner"],
        resident_steps,
        reads.steps("joiner"),
        reads.rule_evaluations,
    )
    print(cost, {k: dict(v.most_common(5)) for k, v in reads.by_sql.items()})
    return cost


async def test_partial_join_reads_the_same_rows_in_any_room_size(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession, reads: Reads
) -> None:
    a = await start_server(tmp_path / "a", rate_limits={"enabled": False})
    servers.append(a)
    alice = await Client.register(session, a, "alice")
    rooms = {}
    for size in (SMALL, BIG):
        rooms[size] = await alice.create_room(name=f"room of {size}", topic="join cost")
        await fill_room(a, rooms[size], size)
    # Cold caches, as for the first join after a start.
    port = int(a.server_name.rsplit(":", 1)[1])
    await a.stop()
    servers.remove(a)
    a = await start_server(tmp_path / "a", fed_port=port, rate_limits={"enabled": False})
    servers.append(a)
    b = await start_server(tmp_path / "b", rate_limits={"enabled": False})
    servers.append(b)
    Gate(b)  # the background resync waits: only the join and the first /sync are counted
    await reads.own("resident", a)
    await reads.own("joiner", b)

    costs = {}
    for size in (SMALL, BIG):
        joiner = await Client.register(session, b, f"bob{size}")
        costs[size] = await _join(reads, joiner, a, rooms[size])
        assert await b.storage.rooms.is_partial_state(rooms[size])

    small, big = costs[SMALL], costs[BIG]
    # The push hook reads no member and evaluates the default rules once (the old code evaluated 2,001
    # rule sets, then read every local member's row on each join).
    assert big.rule_evaluations == small.rule_evaluations <= 4, costs
    # Everything else reads the same in both rooms but for the state group chain under the join's prev
    # event, which grows with the log of the room's history (state_groups.py: a few rows per doubling, 11
    # here). The old code read every member 3-5 times on the resident: thousands of rows more.
    assert abs(big.resident_rows - small.resident_rows) <= 20, costs
    assert abs(big.joiner_rows - small.joiner_rows) <= 5, costs
    assert abs(big.resident_statements - small.resident_statements) <= 3, costs
    assert abs(big.joiner_statements - small.joiner_statements) <= 3, costs
    # Inside the database too: one index entry is several VM steps, so one scan of the 1,950 more members
    # costs ~600 STEPs more (the old code: ~8,500 more, the membership index scanned four times: the push
    # hook's members and their rules, the member counts of /hierarchy, the joined servers of send_join).
    # The state group chain's few more rows account for ~100 STEPs here.
    assert big.resident_steps - small.resident_steps <= 300, costs
    assert big.joiner_steps - small.joiner_steps <= 150, costs
