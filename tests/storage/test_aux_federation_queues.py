"""The federation outbox, inbound transaction dedup, pending join PDUs and server keys, including what
survives closing and reopening the database."""

from __future__ import annotations

import pytest

from ranvier.storage.sql.engine import Database
from ranvier.storage.sql.inbound_txns import InboundTxnStore
from ranvier.storage.sql.outbox import OutboxStore, RetryState
from ranvier.storage.sql.pending_join_pdus import PendingJoinPduStore
from ranvier.storage.sql.server_keys import ServerKeyStore

from .conftest import DbSpec


async def test_outbox_batches_in_order_and_ack(db: Database) -> None:
    outbox = OutboxStore(db)
    for i in range(5):
        await outbox.enqueue_pdus(["b.example", "c.example"], f"$e{i}", "!r:x", stream_ordering=i)
    await outbox.enqueue_edu(
        ["b.example"], "m.typing", {"room_id": "!r:x", "user_id": "@a:x", "typing": True}
    )
    assert await outbox.destinations_with_pending() == ["b.example", "c.example"]

    batch = await outbox.next_batch("b.example", max_pdus=3)
    assert batch.event_ids == ["$e0", "$e1", "$e2"]
    assert [p.stream_ordering for p in batch.pdus] == [0, 1, 2]
    assert [e.edu_type for e in batch.edus] == ["m.typing"]
    # Reading a batch does not consume it: until acked, the same items come back.
    assert (await outbox.next_batch("b.example", max_pdus=3)).event_ids == batch.event_ids

    assert await outbox.last_successful() == {}
    await outbox.ack_batch(batch)
    # The newest acknowledged PDU is the destination's last successful position, overall and per room.
    assert await outbox.last_successful() == {"b.example": 2}
    assert await outbox.room_progress("b.example") == {"!r:x": 2}
    rest = await outbox.next_batch("b.example")
    assert rest.event_ids == ["$e3", "$e4"] and rest.edus == []
    await outbox.ack_batch(batch)  # an older batch acknowledged again does not move it back
    assert await outbox.last_successful() == {"b.example": 2}
    await outbox.ack_batch(rest)
    assert await outbox.last_successful() == {"b.example": 4}
    assert await outbox.room_progress("b.example") == {"!r:x": 4}
    await outbox.ack("b.example", rest.pdu_ids)
    assert (await outbox.next_batch("b.example")).is_empty()
    assert await outbox.destinations_with_pending() == ["c.example"]
    assert await outbox.pending_count("c.example") == 5


async def test_outbox_dedups_events_and_coalesces_edus(db: Database) -> None:
    outbox = OutboxStore(db)
    await outbox.enqueue_pdus(["b.example"], "$e", "!r:x")
    await outbox.enqueue_pdus(["b.example", "b.example"], "$e", "!r:x")
    key = "!r:x/@a:x"
    await outbox.enqueue_edu(["b.example"], "m.typing", {"typing": True}, coalesce_key=key)
    await outbox.enqueue_edu(["b.example"], "m.receipt", {"n": 1})
    await outbox.enqueue_edu(["b.example"], "m.typing", {"typing": False}, coalesce_key=key)
    await outbox.enqueue_edu(["b.example"], "m.receipt", {"n": 2})
    batch = await outbox.next_batch("b.example")
    assert batch.event_ids == ["$e"]
    assert [(e.edu_type, e.content) for e in batch.edus] == [
        ("m.receipt", {"n": 1}),
        ("m.typing", {"typing": False}),
        ("m.receipt", {"n": 2}),
    ]


async def test_enqueue_inside_a_failed_transaction_queues_nothing(db: Database) -> None:
    outbox = OutboxStore(db)

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with db.transaction() as txn:
            await outbox.enqueue_pdus_txn(txn, ["b.example"], "$lost", "!r:x")
            raise Boom
    assert await outbox.destinations_with_pending() == []
    async with db.transaction() as txn:
        await outbox.enqueue_pdus_txn(txn, ["b.example"], "$kept", "!r:x", 7)
    assert (await outbox.next_batch("b.example")).event_ids == ["$kept"]


async def test_retry_state(db: Database) -> None:
    outbox = OutboxStore(db)
    assert await outbox.get_retry("b.example") is None
    await outbox.set_retry("b.example", RetryState(1000, 5000, 1))
    await outbox.set_retry("b.example", RetryState(7000, 10000, 2))
    await outbox.set_retry("c.example", RetryState(1, 2, 3))
    # failure_ts is when the streak began: the first failure's time, kept by the later ones.
    assert await outbox.get_retry("b.example") == RetryState(7000, 10000, 2, failure_ts=1000)
    assert await outbox.get_all_retries() == {
        "b.example": RetryState(7000, 10000, 2, failure_ts=1000),
        "c.example": RetryState(1, 2, 3, failure_ts=1),
    }
    await outbox.reset_retry("b.example")
    assert await outbox.get_retry("b.example") is None
    # A success ends the streak: the next failure starts a new one.
    await outbox.set_retry("b.example", RetryState(9000, 5000, 1))
    assert await outbox.get_retry("b.example") == RetryState(9000, 5000, 1, failure_ts=9000)


async def test_queues_survive_reopening_the_database(db_spec: DbSpec, db: Database) -> None:
    outbox = OutboxStore(db)
    await outbox.enqueue_pdus(["b.example"], "$e1", "!r:x", 1)
    await outbox.enqueue_edu(["b.example"], "m.presence", {"push": []})
    await outbox.set_retry("b.example", RetryState(5, 6, 7))
    pending = PendingJoinPduStore(db)
    await pending.append("!r:x", "b.example", {"type": "m.room.message", "content": {"body": "hi"}})
    await db.close()

    reopened = await db_spec.open()
    try:
        batch = await OutboxStore(reopened).next_batch("b.example")
        assert batch.event_ids == ["$e1"] and [e.content for e in batch.edus] == [{"push": []}]
        assert await OutboxStore(reopened).get_retry("b.example") == RetryState(5, 6, 7, failure_ts=5)
        listed = await PendingJoinPduStore(reopened).list_for_room("!r:x")
        assert [p.pdu["content"] for p in listed] == [{"body": "hi"}]
        # Positions continue after the ones already used, so the order stays right after a restart.
        await OutboxStore(reopened).enqueue_pdus(["b.example"], "$e2", "!r:x", 2)
        assert (await OutboxStore(reopened).next_batch("b.example")).event_ids == ["$e1", "$e2"]
    finally:
        await reopened.close()


async def test_inbound_txns(db: Database) -> None:
    store = InboundTxnStore(db)
    assert await store.get_response("b.example", "t1") is None
    await store.store_response("b.example", "t1", {"pdus": {"$e": {}}})
    await store.store_response("b.example", "t1", {"pdus": {"$e": {"error": "second"}}})
    assert await store.get_response("b.example", "t1") == {"pdus": {"$e": {}}}
    assert await store.get_response("c.example", "t1") is None
    assert await store.prune_older_than(0) == 0
    assert await store.prune_older_than(2**62) == 1
    assert await store.get_response("b.example", "t1") is None


async def test_pending_join_pdus_keep_arrival_order(db: Database) -> None:
    pending = PendingJoinPduStore(db)
    seqs = [await pending.append("!r:x", "b.example", {"n": i}) for i in range(4)]
    await pending.append("!other:x", "c.example", {"n": 99})
    listed = await pending.list_for_room("!r:x")
    assert [p.pdu["n"] for p in listed] == [0, 1, 2, 3]
    assert [p.seq for p in listed] == seqs
    assert [p.pdu["n"] for p in await pending.list_for_room("!r:x", limit=2)] == [0, 1]
    assert await pending.rooms_with_pending() == ["!other:x", "!r:x"]
    assert await pending.count_for_room("!r:x") == 4
    await pending.delete("!r:x", seqs[:2])
    assert [p.pdu["n"] for p in await pending.list_for_room("!r:x")] == [2, 3]
    await pending.delete_room("!r:x")
    assert await pending.list_for_room("!r:x") == []
    assert await pending.rooms_with_pending() == ["!other:x"]


def _key_response(
    server: str, key_ids: list[str], valid_until: int, old: dict[str, int] | None = None
) -> dict:
    return {
        "server_name": server,
        "valid_until_ts": valid_until,
        "verify_keys": {k: {"key": f"pub-{k}"} for k in key_ids},
        "old_verify_keys": {k: {"key": f"old-{k}", "expired_ts": ts} for k, ts in (old or {}).items()},
        "signatures": {server: {k: "sig" for k in key_ids}},
    }


async def test_server_keys(db: Database) -> None:
    keys = ServerKeyStore(db)
    first = _key_response("b.example", ["ed25519:a"], 1000, old={"ed25519:old": 500})
    await keys.store_server_keys("b.example", first, 1000)
    got = await keys.get_server_keys("b.example", ["ed25519:a", "ed25519:old", "ed25519:missing"])
    assert set(got) == {"ed25519:a", "ed25519:old"}
    assert got["ed25519:a"].keys_json == first and got["ed25519:a"].valid_until_ts == 1000
    # Both rows come from one response, handed back as one object.
    assert got["ed25519:a"].keys_json is got["ed25519:old"].keys_json

    # A newer response replaces; an older one arriving late does not.
    newer = _key_response("b.example", ["ed25519:a", "ed25519:b"], 5000)
    await keys.store_server_keys("b.example", newer, 5000)
    stale = _key_response("b.example", ["ed25519:a"], 2000)
    await keys.store_server_keys("b.example", stale, 2000)
    everything = await keys.get_server_keys("b.example", [])
    assert set(everything) == {"ed25519:a", "ed25519:b", "ed25519:old"}
    assert everything["ed25519:a"].valid_until_ts == 5000
    assert everything["ed25519:a"].keys_json == newer
    assert everything["ed25519:old"].keys_json == first
    assert await keys.get_server_keys("c.example", []) == {}
    assert await keys.servers_with_keys() == ["b.example"]
