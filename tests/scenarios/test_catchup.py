"""No event missing after outages (issue 13, items 1 and 3): what a server misses while it is down or cut
off reaches its timeline without any client paging, a hole that is left is filled when a client pages to
it, and a one-way partition cannot push the sender's back-off out of reach.

What a server holds is read from its storage (``timeline_status``), not through /messages, which would
backfill what it finds missing and so hide the very hole a test looks for.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from ranvier.app import Homeserver
from tests.ports import free_port

from .catchup_helpers import Proxy, in_timeline, start, timeline_status
from .servers import Client, eventually, fed_port_of

OUTAGE_MESSAGES = 150


async def shared_room(
    session: aiohttp.ClientSession, a: Homeserver, b: Homeserver
) -> tuple[Client, Client, str]:
    alice = await Client.register(session, a, "alice")
    bob = await Client.register(session, b, "bob")
    room_id = await alice.create_room()
    await bob.ok("POST", f"/join/{room_id}", {}, server_name=a.server_name)
    first = await alice.send_text(room_id, "before the outage")
    await eventually(lambda: in_timeline(b, [first]), timeout=20)
    await bob.sync()  # Bob's client is up to date before the outage
    return alice, bob, room_id


async def sync_window(client: Client, room_id: str) -> dict[str, Any]:
    """An incremental /sync with room for the whole window: ``limited`` only if something is missing."""
    params = {"timeout": "0", "since": client.since or "", "filter": '{"room":{"timeline":{"limit":1000}}}'}
    answer = await client.ok("GET", "/sync", **params)
    client.since = answer["next_batch"]
    return dict(answer["rooms"]["join"][room_id]["timeline"])


def moved(client: Client, hs: Homeserver) -> None:
    """The client talks to ``hs`` (a restarted server listens on a new client port)."""
    client.hs = hs
    client.base = f"http://127.0.0.1:{hs.ports['client']}/_matrix/client/v3"


async def all_pages(client: Client, room_id: str, start: str | None = None) -> list[dict[str, Any]]:
    """The room's whole history through /messages, paging back from the end (or ``start``), oldest first."""
    chunk: list[dict[str, Any]] = []
    params = {"dir": "b", "limit": "40"}
    if start is not None:
        params["from"] = start
    while True:
        page = await client.ok("GET", f"/rooms/{room_id}/messages", **params)
        chunk += page["chunk"]
        if "end" not in page or not page["chunk"]:
            return list(reversed(chunk))
        params["from"] = page["end"]


async def outage(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession, a_config: dict[str, Any]
) -> tuple[Client, Client, str, list[str], int]:
    """a and b share a room; b stops; Alice sends OUTAGE_MESSAGES messages; a fails to reach b. Returns
    the clients, the room, the ids sent and b's federation port (b is stopped)."""
    a = await start(tmp_path / "a", **a_config)
    b = await start(tmp_path / "b")
    servers += [a, b]
    alice, bob, room_id = await shared_room(session, a, b)
    port = fed_port_of(b)
    await b.stop()
    sent = [await alice.send_text(room_id, f"during the outage {i}") for i in range(OUTAGE_MESSAGES)]

    async def a_backs_off() -> bool:
        return await a.storage.outbox.get_retry(b.server_name) is not None

    await eventually(a_backs_off, timeout=20)
    return alice, bob, room_id, sent, port


async def test_everything_sent_during_an_outage_reaches_the_timeline_in_order(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    _, bob, room_id, sent, port = await outage(tmp_path, servers, session, {})
    a = servers[0]
    b = await start(tmp_path / "b", port)
    servers.append(b)
    moved(bob, b)
    loop = asyncio.get_running_loop()
    restarted = loop.time()
    # Nobody on b says anything: b's start-up announcement (an empty transaction) is to a a proof that b is
    # up, and a sends its queue now rather than at the end of its back-off.

    await eventually(lambda: in_timeline(b, sent), timeout=60)
    print(f"\n{OUTAGE_MESSAGES} outage messages in b's timeline {loop.time() - restarted:.2f}s after restart")
    # Delivered live, as /sync shows them: nothing left for backfill, no hole.
    assert set((await timeline_status(b, sent)).values()) == {"live"}
    assert await b.storage.events.get_timeline_gaps(room_id) == {}
    await eventually(lambda: _drained(a, b.server_name), timeout=20)

    # And in order, for a client paging /messages from the end.
    texts = [e["event_id"] for e in await all_pages(bob, room_id) if e["type"] == "m.room.message"]
    assert [t for t in texts if t in set(sent)] == sent


async def test_after_a_partition_heals_the_bounded_back_off_brings_the_queue_over(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    """b is cut off (not restarted) and nobody on b says anything: only the back-off's bound brings a's
    queue over once the link is back."""
    name_port, listen_port = free_port(), free_port()
    proxy = Proxy(name_port, listen_port)
    await proxy.open()
    try:
        a = await start(tmp_path / "a", retry_initial_backoff=0.2, retry_max_backoff=1)
        b = await start(tmp_path / "b", name_port, listen_port)
        servers += [a, b]
        alice, _, room_id = await shared_room(session, a, b)
        await proxy.refuse()
        sent = [await alice.send_text(room_id, f"during the partition {i}") for i in range(20)]

        async def at_the_bound() -> bool:
            retry = await a.storage.outbox.get_retry(b.server_name)
            return retry is not None and retry.failure_count >= 5

        await eventually(at_the_bound, timeout=30)
        retry = await a.storage.outbox.get_retry(b.server_name)
        assert retry is not None and retry.retry_interval == 1000  # doubled up to the bound, not beyond
        await proxy.heal()
        loop = asyncio.get_running_loop()
        healed = loop.time()
        await eventually(lambda: in_timeline(b, sent), timeout=30)
        print(f"\nqueue over {loop.time() - healed:.2f}s after the heal (back-off bound 1 s)")
        assert set((await timeline_status(b, sent)).values()) == {"live"}
    finally:
        await proxy.refuse()


async def test_a_backlog_over_the_cap_leaves_a_hole_the_receiver_fills_in_the_background(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    """a sends only the newest 50 of the 150; b fetches 20 more with /get_missing_events and backfills the
    rest from the hole on its own, in the background."""
    _, bob, room_id, sent, port = await outage(tmp_path, servers, session, {"catchup_max_per_room": 50})
    b = await start(tmp_path / "b", port)
    servers.append(b)
    moved(bob, b)
    loop = asyncio.get_running_loop()
    restarted = loop.time()
    await bob.send_text(room_id, "b is back")

    await eventually(lambda: in_timeline(b, sent), timeout=60)
    print(f"\nhole of ~80 events filled {loop.time() - restarted:.2f}s after restart")
    statuses = await timeline_status(b, sent)
    assert list(statuses.values()).count("backfilled") > 0  # there was a hole, and it was filled
    assert await b.storage.events.get_timeline_gaps(room_id) == {}

    # A client that last synced before the outage gets the window of live events, which skips what was
    # filled in below it: limited, and paging back from prev_batch reads every message in order.
    timeline = await sync_window(bob, room_id)
    assert len(timeline["events"]) < OUTAGE_MESSAGES
    assert timeline["limited"] is True
    ids = [e["event_id"] for e in await all_pages(bob, room_id, timeline["prev_batch"])]
    ids += [e["event_id"] for e in timeline["events"]]
    assert [e for e in ids if e in set(sent)] == sent


async def test_a_hole_in_the_middle_of_the_timeline_is_filled_by_messages(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    _, bob, room_id, sent, port = await outage(tmp_path, servers, session, {"catchup_max_per_room": 50})
    a = servers[0]
    b = await start(tmp_path / "b", port, gap_fill_max_events=0)  # no background filling: the hole stays
    servers.append(b)
    moved(bob, b)
    await bob.send_text(room_id, "b is back")
    await eventually(lambda: _drained(a, b.server_name), timeout=60)
    await eventually(lambda: in_timeline(b, sent[-50:]), timeout=20)
    statuses = await timeline_status(b, sent)
    assert "missing" in statuses.values()  # the hole
    assert len(await b.storage.events.get_timeline_gaps(room_id)) == 1

    # /sync since before the outage: the window holds the hole, so it is limited with a usable prev_batch.
    timeline = await sync_window(bob, room_id)
    assert len(timeline["events"]) < OUTAGE_MESSAGES
    assert timeline["limited"] is True and "prev_batch" in timeline

    # /context just after the hole fills the events before it first.
    held = [statuses[e] == "live" for e in sent]
    child = sent[next(i for i in range(1, len(sent)) if held[i] and not held[i - 1])]
    context = await bob.ok("GET", f"/rooms/{room_id}/context/{child}", limit="20")
    before = [e["event_id"] for e in context["events_before"]]
    i = sent.index(child)
    assert before == list(reversed(sent[i - 10 : i]))

    # Paging back from the end crosses the hole: each page is completed before it is answered.
    ids = [e["event_id"] for e in await all_pages(bob, room_id)]
    assert [e for e in ids if e in set(sent)] == sent
    assert await in_timeline(b, sent)
    assert await b.storage.events.get_timeline_gaps(room_id) == {}


async def test_paging_forwards_across_a_hole_fills_it_too(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    _, bob, room_id, sent, port = await outage(tmp_path, servers, session, {"catchup_max_per_room": 50})
    a = servers[0]
    b = await start(tmp_path / "b", port, gap_fill_max_events=0)
    servers.append(b)
    moved(bob, b)
    await eventually(lambda: _drained(a, b.server_name), timeout=60)
    await eventually(lambda: in_timeline(b, sent[-50:]), timeout=20)
    assert not await in_timeline(b, sent)

    # From the room's first event forwards, page by page, to the end.
    first = (await bob.ok("GET", f"/rooms/{room_id}/messages", dir="f", limit="1"))["chunk"][0]
    params = {"dir": "f", "limit": "40"}
    ids = [first["event_id"]]
    params["from"] = (await bob.ok("GET", f"/rooms/{room_id}/context/{first['event_id']}", limit="0"))["end"]
    while True:
        page = await bob.ok("GET", f"/rooms/{room_id}/messages", **params)
        ids += [e["event_id"] for e in page["chunk"]]
        if not page["chunk"] or "end" not in page:
            break
        params["from"] = page["end"]
    assert [e for e in ids if e in set(sent)] == sent
    assert await in_timeline(b, sent)


async def test_a_hole_left_at_shutdown_is_filled_after_restart(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    """The holes are the stored backward extremities: a restart resumes filling them."""
    _, _, room_id, sent, port = await outage(tmp_path, servers, session, {"catchup_max_per_room": 50})
    a = servers[0]
    b = await start(tmp_path / "b", port, gap_fill_max_events=0)
    servers.append(b)
    await eventually(lambda: _drained(a, b.server_name), timeout=60)
    await eventually(lambda: in_timeline(b, sent[-50:]), timeout=20)
    assert not await in_timeline(b, sent)
    await b.stop()

    b = await start(tmp_path / "b", port)
    servers.append(b)
    await eventually(lambda: in_timeline(b, sent), timeout=60)
    assert await b.storage.events.get_timeline_gaps(room_id) == {}


async def test_a_one_way_partition_keeps_the_back_off_bounded_and_the_queue_drains_after_heal(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    """b is reached through a proxy; cutting it stops a -> b while b -> a still works. b keeps talking to
    a (every transaction proves b is up); a's back-off must not escalate, and once the link heals a's
    queue drains with nobody on b saying anything."""
    name_port, listen_port = free_port(), free_port()
    proxy = Proxy(name_port, listen_port)
    await proxy.open()
    try:
        a = await start(tmp_path / "a")  # default back-off settings
        b = await start(tmp_path / "b", name_port, listen_port)
        servers += [a, b]
        admin = await Client.register(session, a, "admin")
        await a.storage.users.set_admin(admin.user_id, True)
        alice, bob, room_id = await shared_room(session, a, b)

        await proxy.refuse()
        during = [await alice.send_text(room_id, f"a during the partition {i}") for i in range(5)]
        intervals: list[int] = []
        for i in range(15):
            await bob.send_text(room_id, f"b during the partition {i}")
            retry = await a.storage.outbox.get_retry(b.server_name)
            if retry is not None:
                intervals.append(retry.retry_interval)
            await asyncio.sleep(0.2)
        await eventually(lambda: _retry_known(a, b.server_name), timeout=20)
        retry = await a.storage.outbox.get_retry(b.server_name)
        assert retry is not None
        intervals.append(retry.retry_interval)
        print(f"\na's back-off towards b during the partition (ms): max {max(intervals)}, {intervals}")
        # Each of b's transactions reset the back-off rather than counting as one more failure.
        assert max(intervals) <= 2 * 5000

        status, entry = await admin_get(admin, f"/destinations/{b.server_name}")
        assert status == 200 and entry["destination"] == b.server_name and entry["pending_pdus"] >= 5
        status, listing = await admin_get(admin, "/destinations")
        assert b.server_name in [d["destination"] for d in listing["destinations"]]
        assert (await admin_get(alice, "/destinations"))[0] == 403  # not an admin

        await proxy.heal()
        loop = asyncio.get_running_loop()
        healed = loop.time()
        await eventually(lambda: in_timeline(b, during), timeout=30)
        await eventually(lambda: _drained(a, b.server_name), timeout=30)
        print(f"a's queue for b drained {loop.time() - healed:.2f}s after the heal")
    finally:
        await proxy.refuse()


async def admin_get(client: Client, path: str) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{client.hs.ports['client']}/_synapse/admin/v1/federation{path}"
    headers = {"Authorization": f"Bearer {client.token}"}
    async with client.session.get(url, headers=headers) as resp:
        return resp.status, await resp.json()


async def _everywhere(homeservers: list[Homeserver], event_ids: list[str]) -> bool:
    return all([await in_timeline(hs, event_ids) for hs in homeservers])


async def _drained(hs: Homeserver, destination: str) -> bool:
    return bool(await hs.storage.outbox.pending_count(destination) == 0)


async def _retry_known(hs: Homeserver, destination: str) -> bool:
    return await hs.storage.outbox.get_retry(destination) is not None


async def test_a_crash_between_the_event_and_its_txn_id_cannot_duplicate_the_retried_message(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    """Issue 13, item 2: the process dies right after the event's writes, before the client's transaction
    id is recorded. Whatever the split, the client's retry with the same txnId must not make a second
    event: the event and the id commit together, or neither does."""
    a = await start(tmp_path / "a")
    servers.append(a)
    alice = await Client.register(session, a, "alice")
    room_id = await alice.create_room()
    store = a.storage.client_txns
    crashed: list[str] = []

    def crash_once(method: Any) -> Any:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not crashed:
                crashed.append(method.__name__)
                raise RuntimeError("killed before the transaction id was written")
            return await method(*args, **kwargs)

        return wrapper

    # Whichever way the send handler records the id (in the event's transaction or after it), the first
    # attempt dies there.
    for name in ("store_event_id", "store_event_id_txn"):
        if hasattr(store, name):
            setattr(store, name, crash_once(getattr(store, name)))
    path = f"/rooms/{room_id}/send/m.room.message/the-one-txn"
    status, _ = await alice.call("PUT", path, {"msgtype": "m.text", "body": "only once"})
    assert status == 500 and crashed

    answer = await alice.ok("PUT", path, {"msgtype": "m.text", "body": "only once"})  # the client retries
    again = await alice.ok("PUT", path, {"msgtype": "m.text", "body": "only once"})
    assert again["event_id"] == answer["event_id"]
    bodies = [e["content"].get("body") for e in await all_pages(alice, room_id)]
    assert bodies.count("only once") == 1


async def test_three_servers_a_server_down_while_the_other_two_interleave_gets_everything(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    """a and b take turns while c is down, so every event of one cites the other's: c gets a's queue and
    b's queue separately, each in order but not in each other's, and must still end with every event in
    its timeline, without paging, in the same order as a and b."""
    a = await start(tmp_path / "a")
    b = await start(tmp_path / "b")
    c = await start(tmp_path / "c")
    servers += [a, b, c]
    alice, bob, room_id = await shared_room(session, a, b)
    carol = await Client.register(session, c, "carol")
    await carol.ok("POST", f"/join/{room_id}", {}, server_name=a.server_name)
    hello = await carol.send_text(room_id, "carol is here")
    await eventually(lambda: _everywhere([a, b], [hello]), timeout=20)
    port = fed_port_of(c)
    await c.stop()

    sent = []
    for i in range(60):
        for client in (alice, bob):
            sent.append(await client.send_text(room_id, f"{client.user_id} {i}"))
            # Both hold it before the next one is sent: the next cites it, so the two queues interleave.
            await eventually(lambda: _everywhere([a, b], sent[-1:]), timeout=20)
    c = await start(tmp_path / "c", port)
    servers.append(c)
    moved(carol, c)
    loop = asyncio.get_running_loop()
    restarted = loop.time()
    await eventually(lambda: in_timeline(c, sent), timeout=90)
    statuses = list((await timeline_status(c, sent)).values())
    print(
        f"\n120 interleaved events at c {loop.time() - restarted:.2f}s after restart:"
        f" {statuses.count('live')} live, {statuses.count('backfilled')} filled in"
    )
    order = {}
    for hs, client in ((a, alice), (c, carol)):
        ids = [e["event_id"] for e in await all_pages(client, room_id)]
        order[hs.server_name] = [e for e in ids if e in set(sent)]
    assert order[a.server_name] == order[c.server_name] == sent
