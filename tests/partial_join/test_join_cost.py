"""The work of a partial-state join does not grow with the room (issue 19: "time to a usable room flat in
the size of the room"): from the client's ``/join`` to the room in a lazy-loading ``/sync``, the database
rows the resident and the joiner read are the same for a room of 50 members and one of 2,000.

Measured by counts, never by time: every row any SQLite statement of either server returns is counted
(the counting wraps the real engine's two read paths). The resident is restarted after its rooms are built,
so its caches are cold, as for the first join after a start (7.4 s at 10,000 members, 34.9 s at 50,000,
before this test). One read does grow: the push hook reads the room's local members, for whom push rules are
evaluated on every event (one row each); it is counted apart and checked to be exactly that, and the rule
sets evaluated (those of members with the default rules once for all of them) are the same in both rooms.
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
from ranvier.storage.sql.push_counts import PushActionStore
from tests.scenarios.servers import Client, start_server

from .helpers import Gate, fill_room, lazy_sync

SMALL, BIG = 50, 2000


@dataclass
class Reads:
    """Rows returned to each server by its database, and the push hook's local-member rows apart."""

    owners: dict[int, str] = field(default_factory=dict)  # id of a connection or database -> server
    rows: Counter[str] = field(default_factory=Counter)
    statements: Counter[str] = field(default_factory=Counter)
    by_sql: dict[str, Counter[str]] = field(default_factory=dict)
    push_rows: Counter[str] = field(default_factory=Counter)
    rule_evaluations: int = 0  # push rule sets evaluated, both servers

    def own(self, name: str, hs: Homeserver) -> None:
        db: Any = hs.storage.db
        self.owners[id(db)] = name
        for conn in db._all:
            self.owners[id(conn)] = name

    def count(self, owner: object, sql: str, n: int) -> None:
        name = self.owners.get(id(owner), "other")
        self.rows[name] += n
        self.statements[name] += 1
        self.by_sql.setdefault(name, Counter())[" ".join(sql.split())[:90]] += n

    def reset(self) -> None:
        self.rows.clear()
        self.statements.clear()
        self.by_sql.clear()
        self.push_rows.clear()
        self.rule_evaluations = 0


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[Reads]:
    counted = Reads()
    txn_fetchall = engine._SqliteTxn.fetchall
    db_fetchall = engine.SqliteDatabase.fetchall
    local_members = PushActionStore.local_members_txn

    async def in_txn(self: Any, sql: str, params: Any = ()) -> list[engine.Row]:
        rows = await txn_fetchall(self, sql, params)
        counted.count(self._conn, sql, len(rows))
        return rows

    async def on_db(self: Any, sql: str, params: Any = ()) -> list[engine.Row]:
        rows = await db_fetchall(self, sql, params)
        if self._has_readers:  # else it went through a transaction, counted there
            counted.count(self, sql, len(rows))
        return rows

    async def members(txn: Any, room_id: str, server_name: str) -> tuple[list[str], int]:
        found = await local_members(txn, room_id, server_name)
        counted.push_rows[counted.owners.get(id(txn._conn), "other")] += len(found[0]) + 1
        return found

    evaluate = push_actions.evaluate

    def evaluating(*args: Any) -> Any:
        counted.rule_evaluations += 1
        return evaluate(*args)

    monkeypatch.setattr(push_actions, "evaluate", evaluating)
    monkeypatch.setattr(engine._SqliteTxn, "fetchall", in_txn)
    monkeypatch.setattr(engine.SqliteDatabase, "fetchall", on_db)
    monkeypatch.setattr(PushActionStore, "local_members_txn", staticmethod(members))
    yield counted


@dataclass(frozen=True)
class JoinCost:
    resident_rows: int  # without the push hook's local members
    push_rows: int
    joiner_rows: int  # without its push hook's local members (the joiner alone)
    resident_statements: int
    joiner_statements: int
    rule_evaluations: int


async def _join(reads: Reads, joiner: Client, resident: Homeserver, room_id: str) -> JoinCost:
    reads.reset()
    await joiner.ok("POST", f"/join/{room_id}", {}, server_name=resident.server_name)
    synced = await lazy_sync(joiner)
    assert room_id in synced["rooms"]["join"]
    cost = JoinCost(
        reads.rows["resident"] - reads.push_rows["resident"],
        reads.push_rows["resident"],
        reads.rows["joiner"] - reads.push_rows["joiner"],
        reads.statements["resident"],
        reads.statements["joiner"],
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
    reads.own("resident", a)
    reads.own("joiner", b)

    costs = {}
    for size in (SMALL, BIG):
        joiner = await Client.register(session, b, f"bob{size}")
        costs[size] = await _join(reads, joiner, a, rooms[size])
        assert await b.storage.rooms.is_partial_state(rooms[size])

    small, big = costs[SMALL], costs[BIG]
    # The push hook reads the local members (alice and the members): one row each, and a count; but the
    # members with the default rules are evaluated as one (the old code evaluated 2,001 rule sets).
    assert small.push_rows == SMALL + 2 and big.push_rows == BIG + 2
    assert big.rule_evaluations == small.rule_evaluations <= 4, costs
    # Everything else reads the same in both rooms but for the state group chain under the join's prev
    # event, which grows with the log of the room's history (state_groups.py: a few rows per doubling, 11
    # here). The old code read every member 3-5 times on the resident: thousands of rows more.
    assert abs(big.resident_rows - small.resident_rows) <= 20, costs
    assert abs(big.joiner_rows - small.joiner_rows) <= 5, costs
    assert abs(big.resident_statements - small.resident_statements) <= 3, costs
    assert abs(big.joiner_statements - small.joiner_statements) <= 3, costs
