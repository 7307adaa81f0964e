"""The catch-up scenarios' hardest case on PostgreSQL: a backlog over the sender's cap leaves a hole that
the receiver fills in the background, and a client reads every message in order. Skipped with the reason
printed where no PostgreSQL is reachable, except under CI, where that fails."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from ranvier.app import Homeserver

from .catchup_helpers import in_timeline, start, timeline_status
from .servers import eventually, fed_port_of
from .test_catchup import OUTAGE_MESSAGES, all_pages, moved, shared_room
from .test_postgres_federation import pg_databases

__all__ = ["pg_databases"]  # the fixture, imported for this module's tests


async def test_a_hole_over_the_cap_is_filled_in_the_background_on_postgres(
    tmp_path: Path, pg_databases: list[str], servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a = await start(tmp_path / "a", database_url=pg_databases[0], catchup_max_per_room=50)
    b = await start(tmp_path / "b", database_url=pg_databases[1])
    servers += [a, b]
    alice, bob, room_id = await shared_room(session, a, b)
    port = fed_port_of(b)
    await b.stop()
    sent = [await alice.send_text(room_id, f"during the outage {i}") for i in range(OUTAGE_MESSAGES)]

    async def a_backs_off() -> bool:
        return await a.storage.outbox.get_retry(b.server_name) is not None

    await eventually(a_backs_off, timeout=20)
    b = await start(tmp_path / "b", port, database_url=pg_databases[1])
    servers.append(b)
    moved(bob, b)

    await eventually(lambda: in_timeline(b, sent), timeout=60)
    assert "backfilled" in (await timeline_status(b, sent)).values()  # there was a hole: it was filled
    assert await b.storage.events.get_timeline_gaps(room_id) == {}
    ids = [e["event_id"] for e in await all_pages(bob, room_id)]
    assert [e for e in ids if e in set(sent)] == sent
