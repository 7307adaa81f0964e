"""The appservice tests' environment: a Ranvier with one registration, mautrix's appservice as the bridge,
and a plain HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from ranvier.app import Homeserver
from tests.appservice.harness import Bridge, Client, start_homeserver, write_config


class Env:
    def __init__(self, tmp_path: Path, hs: Homeserver, bridge: Bridge, client: Client, config: Path) -> None:
        self.tmp_path, self.hs, self.bridge, self.anon, self.config = tmp_path, hs, bridge, client, config

    @property
    def server_name(self) -> str:
        return self.hs.server_name


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    config, as_port = write_config(tmp_path)
    hs = await start_homeserver(config)
    base = f"http://127.0.0.1:{hs.ports['client']}"
    bridge = Bridge(base, hs.server_name, as_port, tmp_path / "mx-state.json")
    await bridge.start()
    async with aiohttp.ClientSession() as session:
        e = Env(tmp_path, hs, bridge, Client(session, base), config)
        try:
            yield e
        finally:
            await e.bridge.stop()
            await e.hs.stop()
