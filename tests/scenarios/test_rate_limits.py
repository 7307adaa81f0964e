"""Rate limits at the client API answer 429 M_LIMIT_EXCEEDED with retry_after_ms, and change nothing."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from .servers import Client, start_server


async def test_logins_and_sends_are_limited_and_configurable(tmp_path: Path) -> None:
    limits = {
        "login": {"per_second": 0.01, "burst": 3},
        "message": {"per_second": 0.01, "burst": 5},
    }
    hs = await start_server(tmp_path / "a", rate_limits=limits)
    try:
        async with aiohttp.ClientSession() as session:
            alice = await Client.register(session, hs, "alice")
            room_id = await alice.create_room()
            login = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}}
            statuses = []
            for _ in range(4):
                status, body = await alice.call("POST", "/login", {**login, "password": "wrong"})
                statuses.append(status)
            assert statuses[:3] == [403, 403, 403]
            assert statuses[3] == 429 and body["errcode"] == "M_LIMIT_EXCEEDED" and body["retry_after_ms"] > 0

            # createRoom's own events are not client sends; five sends fit the burst, the sixth does not.
            for i in range(5):
                await alice.send_text(room_id, f"m{i}")
            status, body = await alice.call(
                "PUT", f"/rooms/{room_id}/send/m.room.message/over", {"msgtype": "m.text", "body": "over"}
            )
            assert status == 429 and body["errcode"] == "M_LIMIT_EXCEEDED"
            assert "over" not in await alice.texts(room_id)
    finally:
        await hs.stop()


async def test_limits_can_be_switched_off(tmp_path: Path) -> None:
    hs = await start_server(
        tmp_path / "a", rate_limits={"enabled": False, "message": {"per_second": 0.01, "burst": 1}}
    )
    try:
        async with aiohttp.ClientSession() as session:
            alice = await Client.register(session, hs, "alice")
            room_id = await alice.create_room()
            for i in range(5):
                await alice.send_text(room_id, f"m{i}")
    finally:
        await hs.stop()
