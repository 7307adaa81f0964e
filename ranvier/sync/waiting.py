"""Long-polling, shared by /sync and simplified sliding sync: wait for the first of two wake-ups."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any


async def wait_any(first: Awaitable[Any], second: Awaitable[Any], timeout: float) -> None:
    """Wait until either awaitable finishes or ``timeout`` passes; cancel the other."""
    tasks = [asyncio.ensure_future(first), asyncio.ensure_future(second)]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
