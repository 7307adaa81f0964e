"""Fixtures of the worker runtime tests: a fresh PostgreSQL database and a private Redis channel prefix.

Both services are required: unreachable, the tests skip with the reason, except under ``CI``, where they
fail (CI starts PostgreSQL and Redis).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from redis.exceptions import RedisError

PG_ADMIN_DSN = os.environ.get("RANVIER_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("RANVIER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _unavailable(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


async def _redis_url() -> str:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except (RedisError, OSError) as e:
        _unavailable(f"Redis at {REDIS_URL} unreachable: {e}")
    finally:
        await client.aclose()
    return REDIS_URL


@pytest.fixture
async def redis_url() -> str:
    return await _redis_url()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def module_redis_url() -> str:
    return await _redis_url()


@pytest.fixture
def channel_prefix() -> str:
    """Each test on its own channel, so tests running side by side never hear each other."""
    return f"test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL database (every process of a test opens it), dropped afterwards."""
    async for url in _fresh_database():
        yield url


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def module_pg_url() -> AsyncIterator[str]:
    """One fresh database for a module whose tests share a deployment."""
    async for url in _fresh_database():
        yield url


async def _fresh_database() -> AsyncIterator[str]:
    try:
        admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as e:
        _unavailable(f"PostgreSQL at {PG_ADMIN_DSN} unreachable: {e}")
        raise
    name = f"ranvier_w_{uuid.uuid4().hex[:12]}"
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        yield f"{PG_ADMIN_DSN.rsplit('/', 1)[0]}/{name}"
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()
