"""Fixtures for interop tests against real Synapse (installed from PyPI on first use)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.scenarios.servers import Homeserver, start_server

from .synapse import DEFAULT_VERSION, SynapseServer, running_synapse


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "interop: runs a real Synapse (or other real peer) as a subprocess")


@pytest.fixture(scope="session")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SynapseServer]:
    """One Synapse for the whole session; tests register their own users with unique localparts."""
    version = os.environ.get("RANVIER_SYNAPSE_VERSION", DEFAULT_VERSION)
    workdir: Path = tmp_path_factory.mktemp(f"synapse-{version}")
    with running_synapse(workdir, version) as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def ranvier(tmp_path: Path) -> AsyncIterator[Homeserver]:
    """A Ranvier server for the test, on loopback."""
    hs = await start_server(tmp_path / "ranvier")
    yield hs
    await hs.stop()
