"""The federation outbox is written in the transaction that persists our events (ARCHITECTURE: "every
durable write that something else depends on is committed before it is acknowledged"): a crash between the
commit and the sender's wake-up delays a send but never loses it, and a failure while queueing persists
nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ranvier.app import Homeserver
from tests.workers.target import workers_target

from .servers import Client, eventually, fed_port_of, start_server

# The outbox is read from the server's SQLite file: nothing a deployment's processes expose.
pytestmark = pytest.mark.skipif(workers_target(), reason="reads the server's own SQLite database file")


def read_db(data_dir: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """A second connection to a server's database: sees only what was committed."""
    with sqlite3.connect(f"file:{data_dir / 'homeserver.db'}?mode=ro", uri=True) as conn:
        return conn.execute(sql, params).fetchall()


async def shared_room(
    session: aiohttp.ClientSession, a: Homeserver, b: Homeserver
) -> tuple[Client, Client, str]:
    alice = await Client.register(session, a, "alice")
    bob = await Client.register(session, b, "bob")
    room_id = await alice.create_room()
    await bob.ok("POST", f"/join/{room_id}", {}, server_name=a.server_name)
    return alice, bob, room_id


async def test_a_crash_after_the_commit_loses_no_send(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a = await start_server(tmp_path / "a")
    b = await start_server(tmp_path / "b")
    servers += [a, b]
    alice, bob, room_id = await shared_room(session, a, b)
    # The crash window: the event is committed, the process dies before anything wakes the sender.
    a.persister._listeners.remove(a.federation_sender.on_persisted)

    event_id = await alice.send_text(room_id, "written with its outbox row")

    assert read_db(tmp_path / "a", "SELECT room_id FROM events WHERE event_id = ?", (event_id,)) == [
        (room_id,)
    ]
    queued = read_db(tmp_path / "a", "SELECT destination FROM outbox_pdus WHERE event_id = ?", (event_id,))
    assert queued == [(b.server_name,)]
    assert "written with its outbox row" not in await bob.texts(room_id)

    port = fed_port_of(a)
    await a.stop()
    a2 = await start_server(tmp_path / "a", fed_port=port)
    servers.append(a2)

    async def bob_has_it() -> bool:
        return "written with its outbox row" in await bob.texts(room_id)

    await eventually(bob_has_it, timeout=20)
    await eventually(lambda: _outbox_empty(tmp_path / "a"))


async def _outbox_empty(data_dir: Path) -> bool:
    return read_db(data_dir, "SELECT COUNT(*) FROM outbox_pdus") == [(0,)]


async def test_a_failure_while_queueing_persists_nothing(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a = await start_server(tmp_path / "a")
    b = await start_server(tmp_path / "b")
    servers += [a, b]
    alice, bob, room_id = await shared_room(session, a, b)
    count = "SELECT (SELECT COUNT(*) FROM events), (SELECT COUNT(*) FROM outbox_pdus)"
    await eventually(lambda: _outbox_empty(tmp_path / "a"))
    before = read_db(tmp_path / "a", count)

    async def broken(txn: Any, room: str, written: list[Any]) -> None:
        # Runs after the sender's hook has written its outbox rows in the same transaction.
        raise RuntimeError("the disk is full")

    a.persister.add_txn_hook(broken)
    status, _ = await alice.call("PUT", f"/rooms/{room_id}/send/m.room.message/t1", {"body": "lost"})
    assert status == 500
    assert read_db(tmp_path / "a", count) == before
    assert read_db(tmp_path / "a", "SELECT event_id FROM forward_extremities") != []

    a.persister._txn_hooks.remove(broken)
    await alice.send_text(room_id, "after the failure")

    async def bob_has_it() -> bool:
        return "after the failure" in await bob.texts(room_id)

    await eventually(bob_has_it)
    assert "lost" not in await bob.texts(room_id)
