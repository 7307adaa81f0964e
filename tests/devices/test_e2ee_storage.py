"""The E2EE stores on SQLite and PostgreSQL: one-time key claims (each key handed out once, also under
concurrency), fallback keys, the to-device inbox and its de-duplication, remote device lists."""

from __future__ import annotations

import asyncio

from ranvier.storage.sql.e2ee_keys import OneTimeKey
from ranvier.storage.sql.e2ee_streams import RemoteDevice, ToDeviceMessage
from ranvier.storage.sql.engine import Database
from ranvier.storage.sql.storage import SqlStorage


async def _storage(db: Database) -> SqlStorage:
    return await SqlStorage.open(db)


async def test_claims_hand_out_each_key_once(db: Database) -> None:
    s = await _storage(db)
    keys = s.e2e_keys
    await keys.add_one_time_keys(
        "@a:x", "D", [OneTimeKey("signed_curve25519", f"k{i:02d}", {"key": str(i)}) for i in range(20)]
    )
    assert await keys.count_one_time_keys("@a:x", "D") == {"signed_curve25519": 20}
    claimed = await asyncio.gather(*(keys.claim_key("@a:x", "D", "signed_curve25519") for _ in range(25)))
    got = [c.key_id for c in claimed if c is not None]
    assert sorted(got) == [f"k{i:02d}" for i in range(20)]
    assert claimed.count(None) == 5
    await keys.set_fallback_key(
        "@a:x", "D", OneTimeKey("signed_curve25519", "fb", {"key": "f", "fallback": True})
    )
    assert await keys.unused_fallback_key_types("@a:x", "D") == ["signed_curve25519"]
    first = await keys.claim_key("@a:x", "D", "signed_curve25519")
    second = await keys.claim_key("@a:x", "D", "signed_curve25519")
    assert first is not None and second is not None and first.key_id == second.key_id == "fb"
    assert await keys.unused_fallback_key_types("@a:x", "D") == []
    # The same fallback key uploaded again stays used; a new one is unused.
    await keys.set_fallback_key(
        "@a:x", "D", OneTimeKey("signed_curve25519", "fb", {"key": "f", "fallback": True})
    )
    assert await keys.unused_fallback_key_types("@a:x", "D") == []
    await keys.set_fallback_key(
        "@a:x", "D", OneTimeKey("signed_curve25519", "fb2", {"key": "g", "fallback": True})
    )
    assert await keys.unused_fallback_key_types("@a:x", "D") == ["signed_curve25519"]


async def test_inbox_dedup_and_acknowledgement(db: Database) -> None:
    s = await _storage(db)
    inbox = s.to_device
    msg = ToDeviceMessage("@b:x", "B", {"type": "m.t", "sender": "@a:y", "content": {"n": 1}})
    assert await inbox.receive_remote("y", "m1", [msg])
    assert not await inbox.receive_remote("y", "m1", [msg])  # the same message id again
    assert await inbox.receive_remote("z", "m1", [msg])  # another origin's m1 is another message
    remote = [("y", {"sender": "@b:x", "type": "m.t", "message_id": "q", "messages": {"@c:y": {"C": {}}}})]
    assert await inbox.send("@a:x", "A", "t1", [msg], remote)
    assert not await inbox.send("@a:x", "A", "t1", [msg], remote)
    assert await s.outbox.pending_count("y") == 1
    upto = await inbox.max_position()
    rows = await inbox.inbox("@b:x", "B", 0, upto, 100)
    assert len(rows) == 3
    await inbox.acknowledge("@b:x", "B", rows[1][0])
    assert [r[0] for r in await inbox.inbox("@b:x", "B", 0, upto, 100)] == [rows[2][0]]


async def test_remote_device_lists(db: Database) -> None:
    s = await _storage(db)
    lists = s.device_lists
    before = await lists.max_position()
    assert await lists.get_remote_list("@r:y") is None
    await lists.replace_remote_list(
        "@r:y", 7, [RemoteDevice("D1", "phone", {"k": 1}), RemoteDevice("D2", None, None)]
    )
    assert await lists.get_remote_list("@r:y") == (7, False)
    await lists.apply_remote_update("@r:y", 8, RemoteDevice("D3", None, {"k": 3}), deleted=False)
    await lists.apply_remote_update("@r:y", 9, RemoteDevice("D1", None, None), deleted=True)
    assert [d.device_id for d in await lists.get_remote_devices("@r:y")] == ["D2", "D3"]
    assert await lists.seen_stream_ids("@r:y", [7, 8, 9, 10]) == {7, 8, 9}
    await lists.mark_remote_stale("@r:y")
    assert await lists.get_remote_list("@r:y") == (9, True)
    assert await lists.changed_between(before, await lists.max_position()) == {"@r:y"}
    # Outbound ids for a local user grow, each pointing at the one before.
    await lists.record_change(["@l:x"])
    assert "@l:x" in await lists.users_with_unsent_changes()
    first, prev = await lists.next_outbound_id("@l:x")
    second, prev2 = await lists.next_outbound_id("@l:x")
    assert prev is None and prev2 == first and second > first
    assert "@l:x" not in await lists.users_with_unsent_changes()
    await lists.record_change(["@l:x"])
    assert "@l:x" in await lists.users_with_unsent_changes()
    # Nobody shares a room with anyone here (the membership index is empty).
    assert await lists.users_sharing_rooms("@l:x") == set()
    assert not await lists.shares_room_with_server("@r:y", "x")


async def test_keys_signatures_and_device_deletion(db: Database) -> None:
    s = await _storage(db)
    keys, lists = s.e2e_keys, s.device_lists
    await s.devices.create_device("@a:x", "D1", "phone")
    await s.devices.create_device("@a:x", "D2")
    before = await lists.max_position()
    assert await keys.set_device_keys("@a:x", "D1", {"k": 1})
    assert not await keys.set_device_keys("@a:x", "D1", {"k": 1})  # unchanged: no new change
    assert await keys.set_device_keys("@a:x", "D2", {"k": 2})
    assert await lists.changed_between(before, await lists.max_position()) == {"@a:x"}
    got = await keys.get_devices_with_keys(["@a:x", "@nobody:x"])
    assert got == {"@a:x": {"D1": {"k": 1, "unsigned": {"device_display_name": "phone"}}, "D2": {"k": 2}}}
    await keys.add_one_time_keys("@a:x", "D2", [OneTimeKey("alg", "1", "key")])
    assert await keys.set_cross_signing_keys("@a:x", {"master": {"keys": {"ed25519:M": "M"}}})
    assert not await keys.set_cross_signing_keys("@a:x", {"master": {"keys": {"ed25519:M": "M"}}})
    await keys.add_signatures(
        [("@a:x", "D2", "@a:x", "ed25519:S", "sig"), ("@a:x", "M", "@b:y", "ed25519:U", "s2")]
    )
    sigs = await keys.get_signatures(["@a:x"])
    assert sigs[("@a:x", "D2")] == [("@a:x", "ed25519:S", "sig")] and sigs[("@a:x", "M")] == [
        ("@b:y", "ed25519:U", "s2")
    ]
    # Deleting D2 takes its keys, one-time keys, signatures and inbox with it.
    await s.to_device.receive_remote("y", "m", [ToDeviceMessage("@a:x", "D2", {"type": "t"})])
    assert await s.devices.delete_device("@a:x", "D2")
    assert await keys.get_device_keys("@a:x", "D2") is None
    assert await keys.count_one_time_keys("@a:x", "D2") == {}
    assert ("@a:x", "D2") not in await keys.get_signatures(["@a:x"])
    assert await s.to_device.inbox("@a:x", "D2", 0, 1 << 62, 10) == []
    assert await keys.get_device_keys("@a:x", "D1") == {"k": 1}
    # A new master key drops the owner's own signatures of the old one.
    await keys.add_signatures([("@a:x", "M", "@a:x", "ed25519:D1", "own")])
    await keys.set_cross_signing_keys("@a:x", {"master": {"keys": {"ed25519:N": "N"}}})
    assert all(
        signer != "@a:x" for signer, _, _ in (await keys.get_signatures(["@a:x"])).get(("@a:x", "M"), [])
    )
    # The membership reads run on both engines (nothing is joined here).
    assert await lists.membership_changes(["!r:x"], 0, 100) == []
    assert await lists.servers_sharing_rooms("@a:x") == set()
