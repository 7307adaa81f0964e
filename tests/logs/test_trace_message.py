"""One message, one trace, across two servers that list each other as tracing peers (issue 25): the
sender's PUT /send, its persist, the federation sender's transaction (a background task, run as the request
that created the event), the receiver's /send with each PDU's checks and its persist, and the /sync that
delivered the message to the other user. The transaction's log lines carry the client request's id."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiohttp
import pytest

from ranvier.app import Homeserver
from tests.logs.servers import start
from tests.logs.test_tracing import Receiver, Span, flush, receiver  # noqa: F401 - the fixture
from tests.scenarios.servers import Client, eventually


async def test_a_message_is_one_trace_from_send_to_the_remote_sync(
    tmp_path: Path,
    receiver: Receiver,  # noqa: F811
    servers: list[Homeserver],
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    peers = {"tracing": {"federation_peers": ["127.0.0.1:*"]}}
    a = await start(tmp_path / "a", **peers)
    servers.append(a)
    b = await start(tmp_path / "b", **peers)
    servers.append(b)
    alice = await Client.register(session, a, "alice")
    bob = await Client.register(session, b, "bob")
    room = await alice.create_room(preset="public_chat")
    await bob.ok("POST", f"/join/{room}", {}, server_name=a.server_name)
    await bob.sync()
    # Nothing else queued for B when the message goes: it travels in a transaction of its own. (One that
    # carries events of several requests belongs to the first one's trace; the others get a span linked
    # to it: tests/logs/test_trace_message.py::test_a_shared_transaction_is_linked_from_each_trace.)
    await a.resident.wait_for_healing()

    async def quiet() -> bool:
        return b.server_name not in await a.storage.outbox.pending_counts()

    await eventually(quiet, timeout=20)

    async def bobs_sync_with_message() -> dict[str, object]:
        while True:
            body = await bob.sync(timeout_ms=10_000)
            timeline = body.get("rooms", {}).get("join", {}).get(room, {}).get("timeline", {})
            for event in timeline.get("events", []):
                if event.get("content", {}).get("body") == "traced":
                    return dict(event)

    waiting = asyncio.create_task(bobs_sync_with_message())
    await asyncio.sleep(0.2)  # Bob's long-poll is waiting when the message arrives
    event_id = await alice.send_text(room, "traced")
    delivered = await asyncio.wait_for(waiting, 30)
    assert delivered["event_id"] == event_id

    async def exported() -> bool:
        await flush(a, b)
        # Spans are exported as they end, each server on its own schedule: wait for the message's whole
        # trace (A's transaction span ends only after B answered it).
        puts = [s for s in receiver.spans if s.server == a.server_name and "/send/{type}/{txn}" in s.name]
        names = {s.name for s in receiver.spans if puts and s.trace_id == puts[0].trace_id}
        return {"sync delivered event", "federation transaction", "check PDU"} <= names and any(
            "/federation/v1/send/" in n for n in names
        )

    await eventually(exported, timeout=20)
    (put,) = [
        s
        for s in receiver.spans
        if s.server == a.server_name
        and s.name.startswith("PUT /_matrix/client/v3/rooms/")
        and "/send/" in s.name
    ]
    trace = [s for s in receiver.spans if s.trace_id == put.trace_id]
    by_id = {s.span_id: s for s in trace}
    names = {(s.server == a.server_name, s.name) for s in trace}
    # The sending side: the client request, its persist, and the transaction (the sender's background
    # task, run as this request) with its client span.
    assert (True, "persist events") in names and (True, "federation transaction") in names
    (txn_out,) = [
        s for s in trace if s.server == a.server_name and s.kind == 3 and "/federation/v1/send/" in s.name
    ]
    # The receiving side, in the same trace: /send served as a child of A's client span, the PDU checked
    # and persisted, and Bob's /sync delivering it.
    (txn_in,) = [
        s for s in trace if s.server == b.server_name and s.kind == 2 and "/federation/v1/send/" in s.name
    ]
    assert txn_in.parent == txn_out.span_id
    (check,) = [s for s in trace if s.server == b.server_name and s.name == "check PDU"]
    assert check.attributes["ranvier.event_id"] == event_id
    assert any(s.server == b.server_name and s.name == "persist events" for s in trace)
    (sync_span,) = [s for s in trace if s.name == "sync delivered event"]
    assert sync_span.server == b.server_name and sync_span.attributes["ranvier.event_id"] == event_id
    assert sync_span.links  # to the /sync request's own span
    assert all(s.parent == "" or s.parent in by_id for s in trace)

    # The transaction's request line on A carries the id of Alice's PUT /send.
    put_ids = {
        r.request  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "ranvier.access.client" and "/send/m.room.message/" in r.getMessage()
    }
    sent = [
        r
        for r in caplog.records
        if r.name == "ranvier.access.outbound_federation"
        and "/federation/v1/send/" in r.getMessage()
        and r.request in put_ids  # type: ignore[attr-defined]
    ]
    assert sent, put_ids


async def test_a_shared_transaction_is_linked_from_each_trace(receiver: Receiver) -> None:  # noqa: F811
    """Events of two requests in one transaction: the transaction's span is in the first request's trace,
    and the second request's trace gets a span linked to it (what the federation sender does)."""
    import os

    from ranvier.logs.tracing import EventOrigins, Tracing

    tracing = Tracing("127.0.0.1:1", [], env=os.environ)
    origins = EventOrigins(tracing)
    with tracing.internal_span("first request"):
        origins.remember(["$first"])
    with tracing.internal_span("second request"):
        origins.remember(["$second"])
    first, second = origins.all_of(["$first", "$second"])
    with origins.running_as(first), origins.span("federation transaction", "peer", "t1"):
        link = origins.current_link()
    origins.mark_carried(second, link, "peer", "t1")
    await asyncio.to_thread(tracing.shutdown)

    by_name = {s.name: s for s in receiver.spans}
    txn, carried = by_name["federation transaction"], by_name["federation transaction carried event"]
    assert txn.trace_id == by_name["first request"].trace_id
    assert carried.trace_id == by_name["second request"].trace_id
    assert carried.links == [txn.trace_id]
