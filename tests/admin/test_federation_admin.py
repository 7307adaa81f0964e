"""The federation admin endpoints on two real Ranvier servers: a destination's rooms, its queue and back-off
while it is down, and resetting its connection."""

from __future__ import annotations

import logging
from pathlib import Path

import aiohttp
import pytest

from tests.admin.conftest import SHARED_SECRET, AdminServer
from tests.scenarios.servers import Client, eventually, start_server

PREFIX = "/_synapse/admin/v1/federation/destinations"


async def test_destination_rooms_queue_and_reset(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    a = await start_server(tmp_path / "a", extra={"registration_shared_secret": SHARED_SECRET})
    b = await start_server(tmp_path / "b")
    b_stopped = False
    try:
        async with aiohttp.ClientSession() as session:
            server = AdminServer(a, session)
            admin = await server.user("root", admin=True)
            alice = await Client.register(session, a, "alice")
            bob = await Client.register(session, b, "bob")
            room_id = await alice.create_room()
            await bob.ok("POST", f"/join/{room_id}", {}, server_name=a.server_name)
            dest = b.server_name

            rooms = await admin.ok("GET", f"{PREFIX}/{dest}/rooms")
            assert rooms["total"] == 1 and rooms["rooms"][0]["room_id"] == room_id
            status, body = await admin.call("GET", f"{PREFIX}/unknown.example/rooms")
            assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
            carol = await server.user("carol")
            assert (await carol.call("GET", f"{PREFIX}/{dest}/rooms"))[0] == 403

            # B acknowledged A's events so far (the join's forwarding and healing): the newest one's stream
            # ordering is B's last successful position, overall and in the room.
            async def acknowledged() -> bool:
                entry = await admin.ok("GET", f"{PREFIX}/{dest}")
                return isinstance(entry["last_successful_stream_ordering"], int)

            first = await alice.send_text(room_id, "before B goes")
            await eventually(acknowledged, timeout=30)
            meta = await a.storage.events.get_event_meta(first)
            assert meta is not None

            async def reached_first() -> bool:
                entry = await admin.ok("GET", f"{PREFIX}/{dest}")
                return int(entry["last_successful_stream_ordering"]) >= meta.stream_ordering

            await eventually(reached_first, timeout=30)
            rooms = await admin.ok("GET", f"{PREFIX}/{dest}/rooms")
            assert rooms["rooms"][0]["stream_ordering"] >= meta.stream_ordering

            # B goes away: what A sends it waits in its queue, and A backs off.
            await b.stop()
            b_stopped = True
            await alice.send_text(room_id, "while you were out")

            async def queued() -> bool:
                status, entry = await admin.call("GET", f"{PREFIX}/{dest}")
                return status == 200 and entry["pending_pdus"] >= 1 and entry["failure_ts"] is not None

            await eventually(queued, timeout=30)
            listed = await admin.ok("GET", PREFIX)
            assert dest in [d["destination"] for d in listed["destinations"]]
            rooms = await admin.ok("GET", f"{PREFIX}/{dest}/rooms")
            assert rooms["rooms"][0]["pending_pdus"] >= 1
            with caplog.at_level(logging.INFO, logger="ranvier.admin"):
                assert await admin.ok("POST", f"{PREFIX}/{dest}/reset_connection", {}) == {}
            logged = [r.getMessage() for r in caplog.records if r.name == "ranvier.admin"]
            assert any(admin.user_id in m and "reset_connection" in m for m in logged), logged
    finally:
        await a.stop()
        if not b_stopped:
            await b.stop()
