"""The sliding sync reads of ranvier/storage/sql/sliding_sync.py on SQLite and PostgreSQL: a user's
memberships with their positions, member counts, the latest bump event per room within a position, the
rooms with news and the state keys changed in a stream range, current state by type."""

from __future__ import annotations

from ranvier.storage.interfaces import EventToPersist, StateDelta
from ranvier.storage.sql import RoomStorage
from ranvier.storage.sql.sliding_positions import SlidingPositionStore
from ranvier.storage.sql.sliding_sync import SlidingSyncStore
from tests.storage.conftest import ALICE, db, db_spec, raw_db, storage  # noqa: F401
from tests.storage.test_events import CREATE, new_room

BOB = "@bob:other.org"
MEMBER = "m.room.member"


async def test_sliding_sync_reads(storage: RoomStorage) -> None:  # noqa: F811
    store = SlidingSyncStore(storage.db)
    dag, state = await new_room(storage)
    other, other_state = await new_room(storage)
    join = dag.member("alice-join", ALICE, "join", ["create"])
    invite = dag.member("bob-invite", BOB, "invite", ["alice-join"])
    after_invite = {**state, (MEMBER, ALICE): join.event_id, (MEMBER, BOB): invite.event_id}
    await storage.events.persist_events(
        dag.room_id,
        [
            EventToPersist(join, state_before=state),
            EventToPersist(invite, state_before={**state, (MEMBER, ALICE): join.event_id}),
        ],
        new_current_state=StateDelta(
            changed={(MEMBER, ALICE): join.event_id, (MEMBER, BOB): invite.event_id}
        ),
    )
    middle = storage.stream.current_position()
    topic = dag.add("topic", ["bob-invite"], etype="m.room.topic", state_key="", content={"topic": "t"})
    message = dag.add("msg", ["topic"])
    await storage.events.persist_events(
        dag.room_id,
        [
            EventToPersist(topic, state_before=after_invite),
            EventToPersist(message, state_before={**after_invite, ("m.room.topic", ""): topic.event_id}),
        ],
        new_current_state=StateDelta(changed={("m.room.topic", ""): topic.event_id}),
    )
    other_join = other.member("alice-join", ALICE, "join", ["create"])
    await storage.events.persist_events(
        other.room_id,
        [EventToPersist(other_join, state_before=other_state)],
        new_current_state=StateDelta(changed={(MEMBER, ALICE): other_join.event_id}),
    )
    end = storage.stream.current_position()
    positions = await store.event_positions([join.event_id, message.event_id, "$unknown"])
    assert set(positions) == {join.event_id, message.event_id}
    assert positions[join.event_id] < middle < positions[message.event_id] <= end

    rows = {r.room_id: r for r in await store.memberships(ALICE)}
    assert set(rows) == {dag.room_id, other.room_id}
    assert (rows[dag.room_id].membership, rows[dag.room_id].event_id) == ("join", join.event_id)
    assert rows[dag.room_id].position == positions[join.event_id] and rows[dag.room_id].sender == ALICE
    assert [r.membership for r in await store.memberships(BOB)] == ["invite"]

    assert await store.member_counts([dag.room_id, other.room_id, "!none:x"]) == {
        dag.room_id: (1, 1),
        other.room_id: (1, 0),
        "!none:x": (0, 0),
    }
    bump = {"m.room.create", "m.room.message"}
    latest = await store.latest_positions([dag.room_id, other.room_id], bump, end)
    assert latest[dag.room_id] == positions[message.event_id]
    create_only = await store.latest_positions([dag.room_id], bump, middle)
    assert create_only[dag.room_id] < positions[join.event_id]  # the create event, before the message
    assert await store.latest_positions([other.room_id], {"m.room.message"}, end) == {}

    assert await store.rooms_with_events([dag.room_id, other.room_id], middle, end) == {
        dag.room_id,
        other.room_id,
    }
    assert await store.rooms_with_events([dag.room_id], end, end) == set()
    assert await store.state_keys_changed(dag.room_id, middle, end) == {("m.room.topic", "")}
    assert await store.state_keys_changed(dag.room_id, 0, middle) == {CREATE, (MEMBER, ALICE), (MEMBER, BOB)}

    current = await store.current_state_of_types([dag.room_id, other.room_id], ["m.room.topic", MEMBER])
    assert current[dag.room_id] == {
        ("m.room.topic", ""): topic.event_id,
        (MEMBER, ALICE): join.event_id,
        (MEMBER, BOB): invite.event_id,
    }
    assert current[other.room_id] == {(MEMBER, ALICE): other_join.event_id}


async def test_connection_positions_on_disk(storage: RoomStorage) -> None:  # noqa: F811
    disk = SlidingPositionStore(storage.db)
    conn = ("@a:x", "DEV", "")
    await disk.save(*conn, None, 1, "s1_0_0_0_0_0", "{}", 1_000)
    await disk.save(*conn, 1, 2, "s2_0_0_0_0_0", '{"!r:x":[2,[],1,[],"join"]}', 2_000)
    await disk.save(*conn, 2, 3, "s3_0_0_0_0_0", "{}", 3_000)  # keeps 2 and 3, forgets 1
    assert await disk.load(*conn, 1, 4_000) is None
    assert await disk.load(*conn, 2, 4_000) == ("s2_0_0_0_0_0", '{"!r:x":[2,[],1,[],"join"]}')
    assert await disk.load("@a:x", "DEV", "other", 3, 4_000) is None  # another connection
    await disk.save(*conn, None, 4, "s4_0_0_0_0_0", "{}", 5_000)  # no pos: the connection starts again
    assert await disk.load(*conn, 2, 5_000) is None and await disk.load(*conn, 3, 5_000) is None
    await disk.expire(5_001)
    assert await disk.load(*conn, 4, 6_000) is None
