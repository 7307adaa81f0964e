"""A joiner killed with SIGKILL in the middle of its partial-state resync resumes after a restart: the state
ids at the join, fetched before the kill, are not asked again, and the room completes.

The joiner is a real process (``python -m ranvier run``); the resident runs in the test, where its /state
answer is held until the joiner has been killed."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from ranvier.app import Homeserver
from tests.e2e.ranvier_process import RanvierProcess
from tests.scenarios.servers import Client, start_server

from .helpers import fill_room

# More members than the joiner fetches one by one, so the members come in one /state (held by the test).
MEMBERS = 60


async def test_kill_mid_resync_then_resume(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a = await start_server(tmp_path / "a", rate_limits={"enabled": False})
    servers.append(a)
    alice = await Client.register(session, a, "alice")
    room_id = await alice.create_room(name="Restart")
    await fill_room(a, room_id, MEMBERS)

    # The resident counts /state_ids and holds the first /state (the joiner's fetch of the members).
    reads = a.federation_reads
    # (The resident's /state handler reads its state ids through state_ids too: counted here as well.)
    asked: dict[str, int] = {"state_ids": 0, "state": 0}
    state_reached, release = asyncio.Event(), asyncio.Event()
    state_ids, state = reads.state_ids, reads.state_text

    async def counted_state_ids(origin: str, room: str, event_id: str) -> dict[str, Any]:
        asked["state_ids"] += 1
        return await state_ids(origin, room, event_id)

    async def held_state(origin: str, room: str, event_id: str) -> str:
        asked["state"] += 1
        if asked["state"] == 1:
            state_reached.set()
            await release.wait()
        return await state(origin, room, event_id)

    reads.state_ids = counted_state_ids  # type: ignore[method-assign]
    reads.state_text = held_state  # type: ignore[method-assign]

    b = RanvierProcess.create(tmp_path / "b")
    await asyncio.to_thread(b.start)
    try:
        base = f"{b.client_url}/_matrix/client/v3"
        async with session.post(
            f"{base}/register",
            json={"username": "bob", "password": "pw-bob-bob-bob", "auth": {"type": "m.login.dummy"}},
        ) as resp:
            bob = await resp.json()
            assert resp.status == 200, bob
        headers = {"Authorization": f"Bearer {bob['access_token']}"}
        async with session.post(
            f"{base}/join/{room_id}", params={"server_name": a.server_name}, json={}, headers=headers
        ) as resp:
            assert resp.status == 200, await resp.text()
        await asyncio.wait_for(state_reached.wait(), 30)
        assert asked == {"state_ids": 1, "state": 1}
        assert b.proc is not None
        b.proc.kill()  # SIGKILL, mid-resync: the state ids are stored, the members not yet
        await asyncio.to_thread(b.proc.wait)
        b.proc = None
        release.set()

        await asyncio.to_thread(b.start)
        # /joined_members waits for the full state: right once the resumed resync completes.
        async with session.get(f"{base}/rooms/{room_id}/joined_members", headers=headers) as resp:
            joined = await resp.json()
            assert resp.status == 200, joined
        assert len(joined["joined"]) == MEMBERS + 2, b.log_tail()
        assert asked["state"] == 2
        log = b.log_tail(1_000_000)
        assert "resuming the partial-state resync of" in log
        # The joiner asked /state_ids once over both runs: the answer was kept across the kill.
        assert log.count('"GET /_matrix/federation/v1/state_ids/') == 1, log
    finally:
        b.stop()
