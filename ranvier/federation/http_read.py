"""Reading HTTP response bodies with a size cap."""

from __future__ import annotations

import aiohttp


async def read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body, or the first ``limit + 1`` bytes of a longer one (so the caller can tell).

    ``StreamReader.read(n)`` returns what is buffered so far (one chunk), not ``n`` bytes: a big answer
    (a send_join with thousands of state events) must be read until the end of the stream."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await resp.content.read(min(1 << 20, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
