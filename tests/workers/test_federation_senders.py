"""Outbound federation sharded over federation senders, on PostgreSQL + Redis, with a remote Ranvier server.

Our deployment: main (client and federation listeners, persists every room) and two federation senders. A
remote server joins a room of ours; what our users send there is queued by main (the outbox, in the persist
transaction) and sent by the one sender that owns the remote destination, woken over the bus. A sender
that is stopped leaves its queue in PostgreSQL; started again, it resumes it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ranvier.app import Homeserver
from ranvier.config import HomeserverConfig, parse_config
from ranvier.workers.roles import pick
from tests.ports import free_port
from tests.scenarios.servers import Client, eventually, start_server
from tests.workers.configs import worker_config

SENDERS = ["sender1", "sender2"]


def _config(tmp: Path, pg_url: str, redis_url: str, prefix: str) -> dict[str, Any]:
    instances = {
        "main": {"role": "main", "replication": {"port": free_port()}},
        **{s: {"role": "federation_sender"} for s in SENDERS},
    }
    workers = {"instances": instances, "federation_senders": SENDERS}
    return worker_config(tmp, pg_url, redis_url, prefix, free_port(), workers)


@pytest.fixture
async def ours(
    tmp_path: Path, pg_url: str, redis_url: str, channel_prefix: str
) -> AsyncIterator[tuple[HomeserverConfig, dict[str, Homeserver]]]:
    config = parse_config(_config(tmp_path / "ours", pg_url, redis_url, channel_prefix))
    started: dict[str, Homeserver] = {}
    try:
        for name in ["main", *SENDERS]:
            hs = Homeserver(config, name)
            await hs.start()
            started[name] = hs
        yield config, started
    finally:
        for hs in list(started.values()):
            await hs.stop()


async def test_the_destinations_sender_delivers_and_resumes_after_a_restart(
    tmp_path: Path, ours: tuple[HomeserverConfig, dict[str, Homeserver]]
) -> None:
    config, started = ours
    main = started["main"]
    remote = await start_server(tmp_path / "remote", rate_limits={"enabled": False})
    try:
        owner = pick(SENDERS, remote.server_name)
        other = next(s for s in SENDERS if s != owner)
        assert not started["main"].plan.federation_sender
        async with aiohttp.ClientSession() as session:
            alice = await Client.register(session, main, "alice")
            bob = await Client.register(session, remote, "bob")
            room_id = await alice.create_room(name="sharded senders")
            await bob.ok("POST", f"/join/{room_id}", {}, server_name=main.server_name)
            await alice.send_text(room_id, "first")

            async def bob_has(*texts: str) -> bool:
                have = await bob.texts(room_id)
                return all(t in have for t in texts)

            await eventually(lambda: bob_has("first"), timeout=30)
            # Only the owner ran a worker for the remote server; main and the other sender never did.
            assert remote.server_name in started[owner].federation_sender._destinations
            for name in ("main", other):
                assert remote.server_name not in started[name].federation_sender._destinations

            # The owner stops; what is sent meanwhile waits in the outbox, and a new owner process resumes it.
            await started.pop(owner).stop()
            await alice.send_text(room_id, "while the sender was down")
            restarted = Homeserver(config, owner)
            await restarted.start()
            started[owner] = restarted
            await eventually(lambda: bob_has("first", "while the sender was down"), timeout=30)
    finally:
        await remote.stop()
