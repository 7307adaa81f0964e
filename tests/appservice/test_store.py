"""The appservice queue and transactions on both engines: commit order, ids never reused, bodies fixed."""

from __future__ import annotations

from ranvier.storage.sql.appservice import AppServiceStore
from ranvier.storage.sql.engine import Database

# The storage suite's database fixtures (db_spec -> raw_db -> db), parametrized over both engines.
from tests.storage.conftest import db, db_spec, raw_db  # noqa: F401


async def test_queue_txns_and_ids(db: Database) -> None:  # noqa: F811
    store = AppServiceStore(db)
    async with db.transaction() as txn:
        await store.enqueue_events_txn(txn, [("a", "$1"), ("b", "$1"), ("a", "$2")], 1000)
    async with db.transaction() as txn:
        # A retried persist queues nothing twice.
        await store.enqueue_events_txn(txn, [("a", "$2"), ("a", "$3")], 2000)
    await store.enqueue_ephemeral(["a", "b"], {"type": "m.typing", "room_id": "!r", "content": {}}, 1500)

    events, ephemeral = await store.peek("a", 2, 10)
    assert [e.value for e in events] == ["$1", "$2"]
    assert [e.queued_ts for e in ephemeral] == [1500]
    stats = await store.stats("a")
    assert (stats.queued_events, stats.queued_ephemeral, stats.oldest_ts) == (3, 1, 1000)

    body = {"events": [{"event_id": "$1"}, {"event_id": "$2"}], "ephemeral": [{"type": "m.typing"}]}
    first = await store.create_txn("a", [e.seq for e in events], [e.seq for e in ephemeral], body, 1000)
    events, ephemeral = await store.peek("a", 100, 100)
    assert [e.value for e in events] == ["$3"] and ephemeral == []
    second = await store.create_txn("a", [e.seq for e in events], [], {"events": [{"event_id": "$3"}]}, 2000)
    assert second == first + 1
    pending = await store.pending_txns("a")
    assert [(t.txn_id, t.body, t.event_count) for t in pending] == [
        (first, body, 2),
        (second, {"events": [{"event_id": "$3"}]}, 1),
    ]
    assert (await store.stats("a")).queued_events == 3  # still undelivered, in transactions
    await store.complete_txn("a", first)
    await store.complete_txn("a", second)
    assert await store.pending_txns("a") == []
    # Ids keep growing after every transaction is gone: a new one never reuses an old id.
    async with db.transaction() as txn:
        await store.enqueue_events_txn(txn, [("a", "$4")], 3000)
    events, _ = await store.peek("a", 100, 100)
    third = await store.create_txn("a", [e.seq for e in events], [], {"events": []}, 3000)
    assert third == second + 1
    # The other appservice's queue is its own, numbered from 1.
    events, ephemeral = await store.peek("b", 100, 100)
    assert [e.value for e in events] == ["$1"] and len(ephemeral) == 1
    assert await store.create_txn("b", [events[0].seq], [ephemeral[0].seq], {"events": []}, 1000) == 1
    stats = await store.stats("b")
    assert (stats.queued_events, stats.queued_ephemeral, stats.unsent_txns) == (0, 0, 1)


async def test_network_room_lists(db: Database) -> None:  # noqa: F811
    store = AppServiceStore(db)
    await store.set_room_listed("a", "libera", "!r1", True)
    await store.set_room_listed("a", "libera", "!r1", True)  # twice: once
    await store.set_room_listed("a", "oftc", "!r2", True)
    await store.set_room_listed("b", "libera", "!r3", True)
    assert await store.listed_rooms("a", "libera") == ["!r1"]
    assert await store.listed_rooms() == ["!r1", "!r2", "!r3"]
    await store.set_room_listed("a", "libera", "!r1", False)
    assert await store.listed_rooms("a", "libera") == []


async def test_feed_items_and_positions(db: Database) -> None:  # noqa: F811
    from ranvier.storage.sql.appservice import FeedItem

    store = AppServiceStore(db)
    assert await store.feed_position("to_device") is None
    items = [
        FeedItem(["a"], "to_device", {"type": "m.x", "to_device_id": "D1"}),
        FeedItem(["a", "b"], "ephemeral", {"type": "m.typing"}),
    ]
    await store.enqueue_feed(items, 1000, "to_device", 7)
    assert await store.feed_position("to_device") == 7
    await store.enqueue_feed([], 1000, "to_device", 9)  # the position moves on alone
    assert await store.feed_position("to_device") == 9
    _, ephemeral = await store.peek("a", 10, 10)
    assert [(e.kind, e.value) for e in ephemeral] == [
        ("to_device", '{"type":"m.x","to_device_id":"D1"}'),
        ("ephemeral", '{"type":"m.typing"}'),
    ]


async def test_appservices_with_queue(db: Database) -> None:  # noqa: F811
    store = AppServiceStore(db)
    assert await store.appservices_with_queue() == []
    async with db.transaction() as txn:
        await store.enqueue_events_txn(txn, [("gone", "$1")], 1)
    await store.enqueue_ephemeral(["eph"], {"type": "m.typing"}, 1)
    events, _ = await store.peek("gone", 10, 10)
    await store.create_txn("gone", [events[0].seq], [], {"events": []}, 1)
    assert await store.appservices_with_queue() == ["eph", "gone"]


async def test_joined_rooms_and_members_in_bulk(db: Database) -> None:  # noqa: F811
    """What the MSC3202 ``left`` computation reads for all its candidates at once."""
    store = AppServiceStore(db)
    rows = [
        ("!r", "@a:hs", "join"),
        ("!r", "@b:hs", "join"),
        ("!s", "@a:hs", "join"),
        ("!s", "@c:other", "leave"),
        ("!t", "@c:other", "join"),
        ("!t", "@d:hs", "ban"),
    ]
    async with db.transaction() as txn:
        for room_id, user_id, membership in rows:
            await txn.execute(
                "INSERT INTO room_memberships (room_id, user_id, server_name, membership, event_id)"
                " VALUES (?, ?, ?, ?, ?)",
                (room_id, user_id, user_id.split(":")[1], membership, f"$m{room_id}{user_id}"),
            )
    assert await store.joined_rooms_of(["@a:hs", "@c:other", "@d:hs", "@nobody:hs"]) == {
        "@a:hs": {"!r", "!s"},
        "@c:other": {"!t"},
    }
    members = await store.joined_members_of(["!r", "!s", "!t", "!none"])
    assert {room: sorted(users) for room, users in members.items()} == {
        "!r": ["@a:hs", "@b:hs"],
        "!s": ["@a:hs"],
        "!t": ["@c:other"],
    }
    assert await store.joined_rooms_of([]) == {} and await store.joined_members_of([]) == {}
