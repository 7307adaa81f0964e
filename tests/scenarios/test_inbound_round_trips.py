"""Inbound federation (issue 21, ingest): the database work one ``/send`` of 50 chained messages costs,
counted by the server itself (the access log's ``db_queries`` and ``db_round_trips`` of the request: every
statement run on its behalf, the persist transaction and the push rules' hook included, and the trips to
the database they took).

The forward extremities are read once per run of a room's PDUs (not again by the persister and by the
extremity healing after it), which of a transaction's PDUs and prev events are held is one query, and the
push hook reads the local members with the member count, their account data and the state it needs in three
statements, whatever the number of remote members (it used to read every member's row). The persist
transaction reads the room's row, the batch's held events and prev events, the backward extremities among
them and the redactions of them in one statement. On SQLite, writes go to the database's thread together
with the next read or the commit rather than one trip each.
"""

from __future__ import annotations

import logging
from pathlib import Path

import aiohttp
import pytest

from .inbound_driver import current_state_events, register, start_driver, start_homeserver
from .test_inbound_state_cost import Chain

# On the code before this test: 28 statements (3 reads of the forward extremities, 2 to learn which prev
# events are held, 5 reads in the push hook per batch; 30 as its access log counted them, COMMITs included),
# each a trip of its own, plus a BEGIN and a COMMIT for each of the 2 transactions: 32 trips.
MAX_STATEMENTS = 19
MAX_ROUND_TRIPS = 11


async def test_a_transaction_of_50_messages_costs_a_bounded_number_of_statements(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hs = await start_homeserver(tmp_path / "hs")
    driver = await start_driver(tmp_path)
    session = aiohttp.ClientSession()
    try:
        alice = await register(session, hs, "alice")  # a local member: the push rules run for her
        status, body = await alice.call("POST", "/_matrix/client/v3/createRoom", {"preset": "public_chat"})
        assert status == 200, body
        room_id = body["room_id"]
        rv = await hs.storage.rooms.get_room_version(room_id)
        assert rv is not None
        state = await current_state_events(hs, room_id)
        tips = await hs.storage.events.get_events(await hs.storage.events.get_forward_extremities(room_id))
        (last,) = tips.values()
        chain = Chain(hs, driver, room_id, rv, state, last)
        await chain.send([chain.join(f"m{i}") for i in range(20)])  # remote members: never read one by one
        sender = driver.user("m0")
        await chain.send([chain.message(sender, f"warm-up {i}") for i in range(50)])

        messages = [chain.message(sender, f"hello {i}") for i in range(50)]
        with caplog.at_level(logging.INFO, logger="ranvier.access.federation"):
            await chain.send(messages)
        sends = [
            r.access  # type: ignore[attr-defined]
            for r in caplog.records
            if r.name == "ranvier.access.federation" and "/send/" in getattr(r, "access", {}).get("path", "")
        ]
        assert len(sends) == 1, sends
        statements, trips = sends[0]["db_queries"], sends[0].get("db_round_trips")
        assert statements <= MAX_STATEMENTS, f"{statements} statements for one /send of 50 PDUs"
        assert trips is not None and trips <= MAX_ROUND_TRIPS, f"{trips} trips to the database"

        # Everything was accepted, is readable, and notified the local member.
        status, body = await alice.call("GET", f"/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=1")
        assert status == 200, body
        assert body["chunk"][0]["event_id"] == messages[-1].event_id
        status, body = await alice.call("GET", "/_matrix/client/v3/notifications?limit=100")
        assert status == 200, body
        notified = {n["event"]["event_id"] for n in body["notifications"]}
        assert {p.event_id for p in messages} <= notified
    finally:
        await session.close()
        await driver.close()
        await hs.stop()
