"""Two Ranvier servers on PostgreSQL (the deployment for scale) federating: a remote join across a gap,
messages both ways, and a restart over the same database. Skipped with the reason printed where no
PostgreSQL is reachable, except under CI, where that fails."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from ranvier.app import Homeserver

from .servers import Client, eventually, fed_port_of, start_server

PG_ADMIN_DSN = os.environ.get("RANVIER_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
async def pg_databases() -> AsyncIterator[list[str]]:
    """Two fresh PostgreSQL databases, dropped afterwards."""
    try:
        admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as e:
        message = f"PostgreSQL at {PG_ADMIN_DSN} unreachable: {e}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    names = [f"ranvier_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    try:
        for name in names:
            await admin.execute(f"CREATE DATABASE {name}")
        yield [f"{base}/{name}" for name in names]
    finally:
        for name in names:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


async def test_two_postgres_servers_join_across_a_gap_and_survive_a_restart(
    tmp_path: Path, pg_databases: list[str]
) -> None:
    servers: list[Homeserver] = []
    try:
        a = await start_server(tmp_path / "a", database_url=pg_databases[0])
        b = await start_server(tmp_path / "b", database_url=pg_databases[1])
        servers += [a, b]
        async with aiohttp.ClientSession() as session:
            alice = await Client.register(session, a, "alice")
            bob = await Client.register(session, b, "bob")
            room_id = await alice.create_room(name="On PostgreSQL")

            async def in_the_gap(_room: str) -> None:
                await alice.send_text(room_id, "sent during the handshake")

            b.remote_membership.before_send_join = in_the_gap
            await bob.ok("POST", f"/join/{room_id}", {}, server_name=a.server_name)
            await bob.send_text(room_id, "bob on postgres")

            async def both_have_everything() -> bool:
                for client in (alice, bob):
                    texts = await client.texts(room_id)
                    if "sent during the handshake" not in texts or "bob on postgres" not in texts:
                        return False
                return True

            await eventually(both_have_everything)

            # A restart over the same PostgreSQL database keeps the room, the user and the history.
            port = fed_port_of(b)
            await b.stop()
            servers.remove(b)
            b2 = await start_server(tmp_path / "b", fed_port=port, database_url=pg_databases[1])
            servers.append(b2)
            bob2 = Client(session, b2, bob.user_id, bob.token)
            texts = await bob2.texts(room_id)
            assert "sent during the handshake" in texts and "bob on postgres" in texts
            await alice.send_text(room_id, "after the restart")
            await eventually(lambda: _has(bob2, room_id, "after the restart"))
    finally:
        for hs in servers:
            await hs.stop()


async def _has(client: Client, room_id: str, text: str) -> bool:
    return text in await client.texts(room_id)
