"""Inbound federation on a federation_inbound worker, on PostgreSQL + Redis: a remote server that reaches
us through the inbound worker (as a reverse proxy would route /_matrix/federation) joins a room of ours
and sends to it; the worker hands the join (send_join) and each room's PDUs to the room's persister, and
our users see them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ranvier.app import Homeserver
from ranvier.config import parse_config
from tests.ports import free_port
from tests.scenarios.servers import Client, eventually, start_server
from tests.workers.configs import tls_paths, worker_config

PERSISTERS = ["persister1", "persister2"]


def _config(tmp: Path, pg_url: str, redis_url: str, prefix: str, inbound_port: int) -> dict[str, Any]:
    instances = {
        "main": {"role": "main", "replication": {"port": free_port()}},
        "inbound1": {
            "role": "federation_inbound",
            "listeners": {"federation": {"port": inbound_port, "tls": True, **tls_paths(tmp)}},
            "replication": {"port": free_port()},
        },
        **{p: {"role": "event_persister", "replication": {"port": free_port()}} for p in PERSISTERS},
    }
    workers = {"instances": instances, "event_persisters": PERSISTERS}
    return worker_config(tmp, pg_url, redis_url, prefix, free_port(), workers)


@pytest.fixture
async def ours(
    tmp_path: Path, pg_url: str, redis_url: str, channel_prefix: str
) -> AsyncIterator[tuple[dict[str, Homeserver], int]]:
    inbound_port = free_port()
    config = parse_config(_config(tmp_path / "ours", pg_url, redis_url, channel_prefix, inbound_port))
    started: dict[str, Homeserver] = {}
    try:
        for name in ["main", *PERSISTERS, "inbound1"]:
            hs = Homeserver(config, name)
            await hs.start()
            started[name] = hs
        yield started, inbound_port
    finally:
        for hs in reversed(list(started.values())):
            await hs.stop()


async def test_pdus_arriving_at_the_inbound_worker_are_persisted_by_the_rooms_persister(
    tmp_path: Path, ours: tuple[dict[str, Homeserver], int]
) -> None:
    started, inbound_port = ours
    main, inbound = started["main"], started["inbound1"]
    remote = await start_server(
        tmp_path / "remote",
        rate_limits={"enabled": False},
        extra={
            "federation": {
                "verify_tls": False,
                "allow_loopback": True,
                # Everything the remote sends us goes to the inbound worker, as the proxy would route it.
                "host_overrides": {main.server_name: f"127.0.0.1:{inbound_port}"},
            }
        },
    )
    try:
        async with aiohttp.ClientSession() as session:
            alice = await Client.register(session, main, "alice")
            bob = await Client.register(session, remote, "bob")
            room_id = await alice.create_room(name="through the inbound worker")
            owner = main.plan.persister_of(room_id)
            assert inbound.replication_client is not None
            counts = inbound.replication_client.counts
            await bob.ok("POST", f"/join/{room_id}", {}, server_name=main.server_name)
            # The remote's send_join reached the inbound worker, which handed it to the room's persister.
            assert counts["membership"] == 1
            for i in range(3):
                await bob.send_text(room_id, f"from afar {i}")

            async def alice_has_them() -> bool:
                texts = await alice.texts(room_id)
                return all(f"from afar {i}" in texts for i in range(3))

            await eventually(alice_has_them, timeout=30)
            assert counts["pdus"] >= 1, f"not handed to {owner}"

            # A deferred PDU retried by a process that does not own its room is retried by the owner:
            # main (which persists nothing here) retries one of bob's events, already stored: judged.
            event_id = await bob.send_text(room_id, "retried")
            pdu = await remote.storage.events.get_event(event_id)
            assert pdu is not None
            await eventually(alice_has_them, timeout=30)
            assert main.replication_client is not None
            before = main.replication_client.counts["pdus"]
            assert await main.incoming_pdus.deferred._retry(remote.server_name, pdu.to_federation())
            assert main.replication_client.counts["pdus"] == before + 1
    finally:
        await remote.stop()
