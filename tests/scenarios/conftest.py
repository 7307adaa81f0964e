"""Fixtures shared by the scenario tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from ranvier.app import Homeserver


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def servers() -> AsyncIterator[list[Homeserver]]:
    """Servers a test starts (append them); stopped at teardown unless the test stopped them already."""
    started: list[Homeserver] = []
    yield started
    for hs in started:
        if hs.running:
            await hs.stop()
