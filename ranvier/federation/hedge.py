"""A request repeated on another connection when the first gets no answer (a "hedged" request).

A connection that lost bytes on a link that swallowed them (a partition that has since healed, a dead NAT
entry) never answers, and a request sent on it waits out its whole timeout even after the link is back.
So: when ``send()`` has no answer after ``after`` seconds, ``probe()`` (a cheap request on a new connection,
e.g. ``GET /version``) is tried every ``interval`` seconds, and once it answers ``send()`` is called once
more; the first answer wins. Only for requests the destination may see twice (a transaction: same id, the
receiver answers a repeat from the first; a read). The caller bounds the whole with its own timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from .client import DestinationUnreachable, FederationClient, FederationError

log = logging.getLogger(__name__)
T = TypeVar("T")

# Defaults: a request without an answer this long is repeated once a probe answers; probes this often.
HEDGE_AFTER_SECONDS = 3.0
PROBE_INTERVAL_SECONDS = 2.0
PROBE_TIMEOUT_SECONDS = 2.0


async def answers_probe(
    client: FederationClient, destination: str, timeout: float = PROBE_TIMEOUT_SECONDS
) -> bool:
    """Whether ``destination`` gives any HTTP answer to ``GET /version`` (unauthenticated, cheap) in time."""
    try:
        await client.request(
            "GET", destination, "/_matrix/federation/v1/version", authenticate=False, timeout=timeout
        )
        return True
    except DestinationUnreachable:
        return False
    except FederationError:
        return True  # an HTTP error is an answer: the link is up
    except Exception:
        # Not an answer either (a bug in the probe must not end a wait early).
        log.debug("probing %s failed", destination, exc_info=True)
        return False


async def hedged(
    send: Callable[[], Awaitable[T]],
    probe: Callable[[], Awaitable[bool]],
    *,
    after: float,
    interval: float,
) -> T:
    """``send()``'s answer, or that of a second ``send()`` made once ``probe()`` answers after ``after``
    seconds without one. The first try's failure is the failure; the second's is ignored (the first may
    still answer)."""

    async def second() -> T:
        await asyncio.sleep(after)
        while not await probe():
            await asyncio.sleep(interval)
        return await send()

    first_task: asyncio.Future[T] = asyncio.ensure_future(send())
    second_task: asyncio.Future[T] = asyncio.ensure_future(second())
    pending: set[asyncio.Future[T]] = {first_task, second_task}
    try:
        while True:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if first_task in done:
                return first_task.result()
            if second_task.exception() is None:
                return second_task.result()
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
