"""Room deletion (v2 with its status endpoints, and v1) and make_room_admin against a real Ranvier."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests.admin.conftest import SHARED_SECRET, AdminServer
from tests.scenarios.servers import eventually, start_server
from tests.storage.conftest import PG_DSN

V1 = "/_synapse/admin/v1"
V2 = "/_synapse/admin/v2"
CS = "/_matrix/client/v3"


async def test_delete_room_moves_members_blocks_and_purges(admin_server: AdminServer) -> None:
    admin = await admin_server.user("root", admin=True)
    alice = await admin_server.user("alice")
    bob = await admin_server.user("bob")
    name = admin_server.hs.server_name
    room_id = (
        await alice.ok("POST", CS + "/createRoom", {"preset": "public_chat", "room_alias_name": "doomed"})
    )["room_id"]
    await bob.ok("POST", f"{CS}/rooms/{room_id}/join", {})
    body = {"msgtype": "m.text", "body": "bad"}
    event_id = (await alice.ok("PUT", f"{CS}/rooms/{room_id}/send/m.room.message/b1", body))["event_id"]

    answer = await admin.ok(
        "DELETE",
        f"{V2}/rooms/{room_id}",
        {"block": True, "purge": True, "new_room_user_id": f"@moderator:{name}", "message": "Moved."},
    )
    delete_id = answer["delete_id"]

    async def complete() -> bool:
        status = await admin.ok("GET", f"{V2}/rooms/delete_status/{delete_id}")
        assert status["status"] != "failed", status
        return bool(status["status"] == "complete")

    await eventually(complete)
    status = await admin.ok("GET", f"{V2}/rooms/delete_status/{delete_id}")
    shutdown = status["shutdown_room"]
    assert sorted(shutdown["kicked_users"]) == sorted([alice.user_id, bob.user_id])
    assert shutdown["failed_to_kick_users"] == [] and shutdown["local_aliases"] == [f"#doomed:{name}"]
    by_room = await admin.ok("GET", f"{V2}/rooms/{room_id}/delete_status")
    assert [r["delete_id"] for r in by_room["results"]] == [delete_id]

    # Moved to the new room, which says why.
    new_room = shutdown["new_room_id"]
    joined = await alice.ok("GET", CS + "/joined_rooms")
    assert joined["joined_rooms"] == [new_room]
    messages = await alice.ok("GET", f"{CS}/rooms/{new_room}/messages", dir="b", limit="20")
    assert "Moved." in [e["content"].get("body") for e in messages["chunk"]]
    # Purged: the room and its events are gone; blocked: nobody here can join it again.
    assert (await admin.call("GET", f"{V1}/rooms/{room_id}"))[0] == 404
    assert await admin_server.hs.storage.events.get_event(event_id) is None
    assert (
        await admin_server.hs.storage.db.fetchval("SELECT COUNT(*) FROM events WHERE room_id = ?", (room_id,))
        == 0
    )
    assert (await admin.call("GET", f"{CS}/directory/room/%23doomed:{name}"))[0] == 404
    assert await admin.ok("GET", f"{V1}/rooms/{room_id}/block") == {"block": True, "user_id": admin.user_id}
    status_code, error = await bob.call("POST", f"{CS}/join/{room_id}", {})
    assert (status_code, error["errcode"]) == (403, "M_FORBIDDEN")
    assert (await admin.call("GET", f"{V2}/rooms/delete_status/nope"))[0] == 404


async def test_delete_v1_without_purge_and_make_room_admin(admin_server: AdminServer) -> None:
    admin = await admin_server.user("root", admin=True)
    alice = await admin_server.user("alice")
    bob = await admin_server.user("bob")
    room_id = (await alice.ok("POST", CS + "/createRoom", {"preset": "private_chat"}))["room_id"]
    # Bob is not in the private room: he is made admin there and invited by its creator.
    assert await admin.ok("POST", f"{V1}/rooms/{room_id}/make_room_admin", {"user_id": bob.user_id}) == {}
    await bob.ok("POST", f"{CS}/rooms/{room_id}/join", {})
    levels = await bob.ok("GET", f"{CS}/rooms/{room_id}/state/m.room.power_levels/")
    # The creator's level (100, or unbounded since v12, where the highest listed level or 100 is given).
    assert levels["users"][bob.user_id] == 100

    shutdown = await admin.ok("DELETE", f"{V1}/rooms/{room_id}", {"purge": False})
    assert sorted(shutdown["kicked_users"]) == sorted([alice.user_id, bob.user_id])
    assert shutdown["new_room_id"] is None
    # Not purged: the room is still known, with nobody of ours in it.
    members = await admin.ok("GET", f"{V1}/rooms/{room_id}/members")
    assert members["total"] == 0
    status, body = await admin.call("DELETE", f"{V2}/rooms/!unknown:{admin_server.hs.server_name}", {})
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    status, body = await admin.call("POST", f"{V1}/rooms/{room_id}/make_room_admin", {})
    assert (status, body["errcode"]) == (400, "M_UNKNOWN")


@pytest.fixture
async def pg_admin_server(tmp_path: Path) -> AsyncIterator[AdminServer]:
    """The same server over a fresh PostgreSQL database (the purge reads the schema: both engines)."""
    try:
        conn = await asyncpg.connect(PG_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as e:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {PG_DSN} unreachable: {e}")
        pytest.skip(f"PostgreSQL at {PG_DSN} unreachable: {e}")
    name = f"ranvier_admin_{uuid.uuid4().hex[:12]}"
    await conn.execute(f"CREATE DATABASE {name}")
    try:
        hs = await start_server(
            tmp_path / "hs",
            database_url=f"{PG_DSN.rsplit('/', 1)[0]}/{name}",
            extra={"registration_shared_secret": SHARED_SECRET},
        )
        try:
            async with aiohttp.ClientSession() as session:
                yield AdminServer(hs, session)
        finally:
            await hs.stop()
    finally:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await conn.close()


async def test_purge_on_postgresql(pg_admin_server: AdminServer) -> None:
    admin = await pg_admin_server.user("root", admin=True)
    alice = await pg_admin_server.user("alice")
    room_id = (await alice.ok("POST", CS + "/createRoom", {"preset": "public_chat"}))["room_id"]
    await alice.ok("PUT", f"{CS}/rooms/{room_id}/send/m.room.message/p1", {"msgtype": "m.text", "body": "x"})
    shutdown = await admin.ok("DELETE", f"{V1}/rooms/{room_id}", {"purge": True})
    assert shutdown["kicked_users"] == [alice.user_id]
    assert (await admin.call("GET", f"{V1}/rooms/{room_id}"))[0] == 404
    db = pg_admin_server.hs.storage.db
    assert await db.fetchval("SELECT COUNT(*) FROM events WHERE room_id = ?", (room_id,)) == 0
    assert await db.fetchval("SELECT COUNT(*) FROM current_state WHERE room_id = ?", (room_id,)) == 0
    # The server goes on: a new room works.
    await alice.ok("POST", CS + "/createRoom", {})
