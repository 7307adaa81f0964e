"""Fixtures of the hostile corpus, and the per-category outcome table printed at the end of a run."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from .fed_harness import OUTCOMES


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fed_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not OUTCOMES:
        return
    terminalreporter.section("hostile federation corpus: outcomes per category")
    total: dict[str, int] = {"refused": 0, "accepted": 0, "5xx": 0}
    for category in sorted(OUTCOMES):
        counts = OUTCOMES[category]
        for k in total:
            total[k] += counts.get(k, 0)
        terminalreporter.write_line(
            f"{category:<34} refused {counts.get('refused', 0):>4}  accepted {counts.get('accepted', 0):>4}"
            f"  5xx {counts.get('5xx', 0):>3}"
        )
    terminalreporter.write_line(
        f"{'total':<34} refused {total['refused']:>4}  accepted {total['accepted']:>4}  5xx {total['5xx']:>3}"
    )
