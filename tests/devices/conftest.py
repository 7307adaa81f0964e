"""Fixtures of the E2EE tests: in-process Ranvier servers (tests/scenarios) and the storage suite's
database fixtures, parametrized over SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ranvier.app import Homeserver
from tests.scenarios.conftest import servers, session  # noqa: F401
from tests.scenarios.servers import Client, start_server
from tests.storage.conftest import db, db_spec, raw_db  # noqa: F401


@pytest.fixture
async def hs(tmp_path, servers: list[Homeserver]) -> AsyncIterator[Homeserver]:  # type: ignore[no-untyped-def]  # noqa: F811
    server = await start_server(tmp_path / "hs")
    servers.append(server)
    yield server


__all__ = ["Client"]
