"""The presence store (migration 650) on SQLite and PostgreSQL: states replaced in place at new stream
positions, the /sync reads (initial: not offline; incremental: changed since), limited to users sharing a
joined room, and the servers sharing a room with a user."""

from __future__ import annotations

from ranvier.presence.state import OFFLINE, ONLINE, UNAVAILABLE, UserPresence
from ranvier.storage.sql.engine import Database
from ranvier.storage.sql.presence import PresenceStore
from ranvier.storage.sql.state import recount_server_members


async def _member(db: Database, room: str, user: str, membership: str = "join") -> None:
    async with db.transaction() as txn:
        await txn.execute(
            "INSERT INTO room_memberships (room_id, user_id, server_name, membership, event_id)"
            " VALUES (?, ?, ?, ?, ?)",
            (room, user, user.split(":", 1)[1], membership, f"$e{room}{user}"),
        )
        await recount_server_members(txn, room)  # the index written here, not by a persist


async def test_presence_store(db: Database) -> None:
    store = PresenceStore(db)
    await _member(db, "!r", "@a:hs")
    await _member(db, "!r", "@b:other")
    await _member(db, "!r", "@gone:third", "leave")
    await _member(db, "!s", "@c:hs")  # shares no room with a

    assert await store.max_position() == 0
    first = await store.put(
        [
            UserPresence("@a:hs", ONLINE, "hi", 1000, 0, True),
            UserPresence("@b:other", UNAVAILABLE, None, 900, 950, False),
            UserPresence("@c:hs", ONLINE, None, 800, 0, True),
        ]
    )
    assert first == 3 == await store.max_position()
    got = await store.get(["@a:hs", "@b:other", "@nobody:hs"])
    assert got["@a:hs"] == UserPresence("@a:hs", ONLINE, "hi", 1000, 0, True)
    assert got["@b:other"].last_federation_update_ts == 950 and "@nobody:hs" not in got

    # Initial sync of a: a and b (c shares no room), not offline ones.
    initial = await store.for_user_between("@a:hs", None, first)
    assert [(pos, p.user_id) for pos, p in initial] == [(1, "@a:hs"), (2, "@b:other")]
    second = await store.put([UserPresence("@b:other", OFFLINE, None, 900, 960, False)])
    assert second == 4
    assert await store.for_user_between("@a:hs", None, second) == initial[:1]
    # Incremental: b's change since position 3, offline included; nothing past the upper bound.
    changed = await store.for_user_between("@a:hs", 3, second)
    assert [(pos, p.user_id, p.state) for pos, p in changed] == [(4, "@b:other", OFFLINE)]
    assert await store.for_user_between("@a:hs", 3, 3) == []

    assert [p.user_id for p in await store.not_offline()] == ["@a:hs", "@c:hs"]
    assert [(pos, p.user_id) for pos, p in await store.between(1, 4, 2)] == [(3, "@c:hs"), (4, "@b:other")]
    assert await store.shares_a_room("@a:hs", "@b:other")
    assert not await store.shares_a_room("@a:hs", "@c:hs")
    assert not await store.shares_a_room("@a:hs", "@gone:third")
    assert await store.servers_sharing_a_room("@a:hs") == {"hs", "other"}
    assert await store.joined_members(["!r", "!s", "!none"]) == {"@a:hs", "@b:other", "@c:hs"}
    assert await store.joined_members([]) == set()

    await store.touch_federation_update(["@a:hs"], 5000)
    assert (await store.get(["@a:hs"]))["@a:hs"].last_federation_update_ts == 5000
    assert await store.max_position() == second  # not a change clients hear of
