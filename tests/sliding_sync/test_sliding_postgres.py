"""Simplified sliding sync on a server over PostgreSQL: lists, an incremental answer, a position that
survives a restart (the storage reads run on both databases in test_sliding_store.py; this runs the
whole path)."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from tests.scenarios.servers import fed_port_of, start_server
from tests.scenarios.test_postgres_federation import pg_databases

from .helpers import one_list, register

__all__ = ["pg_databases"]  # the fixture, imported for this module's test


async def test_sliding_sync_on_postgres(tmp_path: Path, pg_databases: list[str]) -> None:
    async with aiohttp.ClientSession() as session:
        server = await start_server(tmp_path / "pg", database_url=pg_databases[0])
        try:
            base = f"http://127.0.0.1:{server.ports['client']}"
            alice = await register(session, base, "alice")
            bob = await register(session, base, "bob")
            quiet = await alice.create_room(name="Quiet", preset="public_chat")
            busy = await alice.create_room(name="Busy", preset="public_chat")
            await bob.ok("POST", f"/join/{busy}", {})
            request = one_list([[0, 9]], required_state=[["m.room.member", "$LAZY"]], timeline_limit=2)
            first = await alice.sync(request)
            assert first["lists"]["all"]["ops"][0]["room_ids"] == [busy, quiet]
            assert first["rooms"][busy]["joined_count"] == 2
            await bob.text(busy, "news")
            later = await alice.sync(request)
            assert set(later["rooms"]) == {busy}
            assert later["rooms"][busy]["num_live"] == 1
        finally:
            await server.stop()
        server = await start_server(
            tmp_path / "pg", fed_port=fed_port_of(server), database_url=pg_databases[0]
        )
        try:
            alice.base_url = bob.base_url = f"http://127.0.0.1:{server.ports['client']}"
            await bob.text(busy, "after the restart")
            again = await alice.sync(request)
            assert [e["content"]["body"] for e in again["rooms"][busy]["timeline"]] == ["after the restart"]
        finally:
            await server.stop()
