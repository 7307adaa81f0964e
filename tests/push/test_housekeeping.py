"""Push housekeeping (ranvier.push.housekeeping): a redaction removes the redacted event's notification
(unread counts and /notifications), a deleted device's pushers go with it (logout, logout/all), and read
notifications past the retention are pruned while the unread counts stay as they were; on SQLite and
PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from ranvier.app import Homeserver
from tests.scenarios.servers import Client, start_server
from tests.scenarios.test_postgres_federation import PG_ADMIN_DSN

from .test_counts import n, unread

DAY_MS = 86_400_000


@pytest.fixture(params=["sqlite", "postgres"])
async def hs(
    request: pytest.FixtureRequest, tmp_path: Path, servers: list[Homeserver]
) -> AsyncIterator[Homeserver]:
    """A server on SQLite, or on a fresh PostgreSQL database (skipped without PostgreSQL, failed under CI)."""
    if request.param == "sqlite":
        server = await start_server(tmp_path / "a")
        servers.append(server)
        yield server
        return
    try:
        admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as e:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {PG_ADMIN_DSN} unreachable: {e}")
        pytest.skip(f"PostgreSQL at {PG_ADMIN_DSN} unreachable: {e}")
    name = f"ranvier_push_{uuid.uuid4().hex[:12]}"
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        server = await start_server(tmp_path / "a", database_url=f"{PG_ADMIN_DSN.rsplit('/', 1)[0]}/{name}")
        yield server
        await server.stop()
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


def mention(user_id: str, text: str) -> dict[str, Any]:
    return {"msgtype": "m.text", "body": text, "m.mentions": {"user_ids": [user_id]}}


async def send(client: Client, room_id: str, content: dict[str, Any]) -> str:
    """A message with its own transaction id (the body's text is unique in these tests)."""
    answer = await client.ok("PUT", f"/rooms/{room_id}/send/m.room.message/{content['body']}", content)
    return str(answer["event_id"])


async def test_housekeeping(hs: Homeserver, session: aiohttp.ClientSession) -> None:
    """One server per engine for the three parts (a server start costs more than each part)."""
    await _redaction_removes_the_notification(hs, session)
    await _deleted_devices_lose_their_pushers(hs, session)
    await _old_read_notifications_are_pruned(hs, session)


async def _redaction_removes_the_notification(hs: Homeserver, session: aiohttp.ClientSession) -> None:
    alice = await Client.register(session, hs, "alice")
    bob = await Client.register(session, hs, "bob")
    room = await alice.create_room()
    await bob.ok("POST", f"/join/{room}", {})
    first = await send(alice, room, mention(bob.user_id, "bob-one"))
    await alice.send_text(room, "two")
    assert (await unread(bob, room))["room"] == n(2, 1)
    await alice.ok("PUT", f"/rooms/{room}/redact/{first}/r1", {"reason": "oops"})
    assert (await unread(bob, room))["room"] == n(1, 0)
    listed = await bob.ok("GET", "/notifications")
    assert first not in [x["event"]["event_id"] for x in listed["notifications"]]
    assert len(listed["notifications"]) == 1


async def _deleted_devices_lose_their_pushers(hs: Homeserver, session: aiohttp.ClientSession) -> None:
    bob = await Client.register(session, hs, "bob2")
    logged = await bob.ok(
        "POST",
        "/login",
        {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "bob2"},
            "password": "pw-bob2bob2bob2",
        },
    )
    phone = Client(session, hs, bob.user_id, logged["access_token"])
    url = "https://push.example.org/_matrix/push/v1/notify"  # never reached: nothing notifies bob here

    def pusher(pushkey: str) -> dict[str, Any]:
        return {
            "kind": "http",
            "app_id": "org.example.app",
            "pushkey": pushkey,
            "app_display_name": "App",
            "device_display_name": pushkey,
            "lang": "en",
            "data": {"url": url},
        }

    await bob.ok("POST", "/pushers/set", pusher("laptop-key"))
    await phone.ok("POST", "/pushers/set", pusher("phone-key"))
    listed = await bob.ok("GET", "/pushers")
    assert sorted(p["pushkey"] for p in listed["pushers"]) == ["laptop-key", "phone-key"]

    await phone.ok("POST", "/logout", {})
    listed = await bob.ok("GET", "/pushers")
    assert [p["pushkey"] for p in listed["pushers"]] == ["laptop-key"]
    await bob.ok("POST", "/logout/all", {})
    assert await hs.storage.pushers.pushers_for_user(bob.user_id) == []


async def _old_read_notifications_are_pruned(hs: Homeserver, session: aiohttp.ClientSession) -> None:
    alice = await Client.register(session, hs, "alice3")
    bob = await Client.register(session, hs, "bob3")
    room = await alice.create_room()
    await bob.ok("POST", f"/join/{room}", {})
    ids = [await send(alice, room, mention(bob.user_id, f"bob-{i}")) for i in range(3)]
    await bob.ok("POST", f"/rooms/{room}/receipt/m.read/{ids[1]}", {})
    assert (await unread(bob, room))["room"] == n(1, 1)

    housekeeping = hs.push_housekeeping
    assert housekeeping.retention_ms == 30 * DAY_MS  # the default
    assert await housekeeping.prune() == 0  # nothing that old yet
    clock = housekeeping._clock_ms
    housekeeping._clock_ms = lambda: clock() + 31 * DAY_MS
    assert await housekeeping.prune() == 2  # the two read ones
    assert (await unread(bob, room))["room"] == n(1, 1)  # the unread one stays, and counts
    listed = await bob.ok("GET", "/notifications")
    assert [x["event"]["event_id"] for x in listed["notifications"]] == [ids[2]]
    assert await housekeeping.prune() == 0
