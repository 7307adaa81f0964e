"""Aliases, directory visibility, account data, receipts and client transaction ids."""

from __future__ import annotations

from ranvier.storage.sql.account_data import AccountDataStore
from ranvier.storage.sql.aliases import AliasStore
from ranvier.storage.sql.client_txns import ClientTxnStore
from ranvier.storage.sql.directory import DirectoryStore
from ranvier.storage.sql.engine import Database
from ranvier.storage.sql.receipts import ReceiptStore, client_receipt_contents


async def test_aliases(db: Database) -> None:
    aliases = AliasStore(db)
    assert await aliases.create_alias("#a:x", "!r1:x", "@u:x")
    assert not await aliases.create_alias("#a:x", "!r2:x", "@v:x")
    assert await aliases.create_alias("#b:x", "!r1:x", "@u:x")
    rec = await aliases.get_alias("#a:x")
    assert rec is not None and (rec.room_id, rec.creator) == ("!r1:x", "@u:x")
    assert sorted(await aliases.aliases_for_room("!r1:x")) == ["#a:x", "#b:x"]
    assert await aliases.delete_alias("#a:x")
    assert not await aliases.delete_alias("#a:x")
    assert await aliases.get_alias("#a:x") is None
    assert await aliases.aliases_for_room("!r1:x") == ["#b:x"]


async def test_directory_visibility(db: Database) -> None:
    directory = DirectoryStore(db)
    assert await directory.get_visibility("!r:x") == "private"
    await directory.set_visibility("!r:x", "public")
    await directory.set_visibility("!r:x", "public")
    await directory.set_visibility("!s:x", "public")
    assert await directory.get_visibility("!r:x") == "public"
    assert await directory.public_room_ids() == ["!r:x", "!s:x"]
    await directory.set_visibility("!r:x", "private")
    assert await directory.public_room_ids() == ["!s:x"]


async def test_account_data_global_room_and_stream(db: Database) -> None:
    ad = AccountDataStore(db)
    assert await ad.max_position() == 0
    p1 = await ad.put_global("@a:x", "m.push_rules", {"global": {}})
    p2 = await ad.put_room("@a:x", "!r:x", "m.tag", {"tags": {"u.work": {}}})
    p3 = await ad.put_global("@b:x", "m.direct", {})
    assert p1 < p2 < p3 == await ad.max_position()

    assert await ad.get_global("@a:x", "m.push_rules") == {"global": {}}
    assert await ad.get_global("@a:x", "m.tag") is None  # room data is not global
    assert await ad.get_room("@a:x", "!r:x", "m.tag") == {"tags": {"u.work": {}}}
    assert await ad.get_all_global("@a:x") == {"m.push_rules": {"global": {}}}
    assert await ad.get_all_for_room("@a:x", "!r:x") == {"m.tag": {"tags": {"u.work": {}}}}

    everything = await ad.changes_since("@a:x", 0)
    assert everything.global_data == {"m.push_rules": {"global": {}}}
    assert everything.room_data == {"!r:x": {"m.tag": {"tags": {"u.work": {}}}}}
    assert everything.position == p3

    # Overwriting moves the entry forward in the stream and replaces the content.
    p4 = await ad.put_global("@a:x", "m.push_rules", {"global": {"override": []}})
    later = await ad.changes_since("@a:x", everything.position)
    assert later.global_data == {"m.push_rules": {"global": {"override": []}}}
    assert later.room_data == {}
    assert later.position == p4
    nothing = await ad.changes_since("@a:x", p4)
    assert nothing.global_data == {} and nothing.room_data == {}
    # Other users' writes are not included.
    assert (await ad.changes_since("@b:x", 0)).global_data == {"m.direct": {}}


async def test_receipts(db: Database) -> None:
    rs = ReceiptStore(db)
    p1 = await rs.put_receipt("!r:x", "m.read", "@a:x", "$e1", {"ts": 1})
    p2 = await rs.put_receipt("!r:x", "m.read", "@b:x", "$e1", {"ts": 2})
    p3 = await rs.put_receipt("!r:x", "m.read", "@a:x", "$e2", {"ts": 3})  # replaces @a's first
    p4 = await rs.put_receipt("!r:x", "m.read", "@a:x", "$e3", {"ts": 4}, thread_id="$thread")
    p5 = await rs.put_receipt("!other:x", "m.read.private", "@a:x", "$o1", {"ts": 5})
    assert p1 < p2 < p3 < p4 < p5 == await rs.max_position()

    unthreaded = await rs.get_receipt("!r:x", "m.read", "@a:x")
    assert unthreaded is not None and unthreaded.event_id == "$e2" and unthreaded.data == {"ts": 3}
    threaded = await rs.get_receipt("!r:x", "m.read", "@a:x", thread_id="$thread")
    assert threaded is not None and threaded.event_id == "$e3" and threaded.thread_id == "$thread"
    assert {(r.user_id, r.event_id) for r in await rs.receipts_for_room("!r:x")} == {
        ("@b:x", "$e1"),
        ("@a:x", "$e2"),
        ("@a:x", "$e3"),
    }

    since = await rs.receipts_since(["!r:x"], p2, p5)
    assert [r.event_id for r in since] == ["$e2", "$e3"]
    assert [r.room_id for r in await rs.receipts_since(["!r:x", "!other:x"], p4, p5)] == ["!other:x"]
    assert await rs.receipts_since([], 0, p5) == []

    contents = client_receipt_contents(since)
    assert contents == {
        "!r:x": {
            "$e2": {"m.read": {"@a:x": {"ts": 3}}},
            "$e3": {"m.read": {"@a:x": {"ts": 4, "thread_id": "$thread"}}},
        }
    }


async def test_client_txns_are_per_device_and_first_wins(db: Database) -> None:
    txns = ClientTxnStore(db)
    path = "/rooms/!r:x/send/m.room.message"
    assert await txns.get_event_id("@a:x", "D1", path, "t1") is None
    assert await txns.store_event_id("@a:x", "D1", path, "t1", "$first") == "$first"
    assert await txns.store_event_id("@a:x", "D1", path, "t1", "$second") == "$first"
    assert await txns.get_event_id("@a:x", "D1", path, "t1") == "$first"
    # The same txn id from another device, user or endpoint is a different transaction.
    assert await txns.get_event_id("@a:x", "D2", path, "t1") is None
    assert await txns.get_event_id("@b:x", "D1", path, "t1") is None
    assert await txns.get_event_id("@a:x", "D1", "/rooms/!r:x/redact/$e", "t1") is None
