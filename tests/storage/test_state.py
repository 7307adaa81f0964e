"""State at events (state groups), current state and the membership index, on both databases."""

from __future__ import annotations

import pytest

from ranvier.storage.interfaces import EventToPersist, StateDelta, UnknownEvent
from ranvier.storage.sql import RoomStorage

from .conftest import ALICE
from .test_events import CREATE, new_room

BOB = "@bob:other.org"
CAROL = "@carol:third.org"


async def count(storage: RoomStorage, table: str) -> int:
    return int(await storage.db.fetchval(f"SELECT COUNT(*) FROM {table}"))


async def test_state_before_and_after_events(storage: RoomStorage) -> None:
    dag, state = await new_room(storage)
    dag.add("topic", ["create"], etype="m.room.topic", state_key="", content={"topic": "t"})
    dag.add("msg", ["topic"])
    after_topic = {**state, ("m.room.topic", ""): dag.id("topic")}
    await storage.events.persist_events(
        dag.room_id,
        [
            EventToPersist(dag.by_name["topic"], state_before=state),
            EventToPersist(dag.by_name["msg"], state_before=after_topic),
        ],
    )
    st = storage.state
    assert await st.get_state_ids_before(dag.id("topic")) == state
    assert await st.get_state_ids_after(dag.id("topic")) == after_topic
    assert await st.get_state_ids_before(dag.id("msg")) == after_topic
    assert await st.get_state_ids_after(dag.id("msg")) == after_topic
    # The message shares the topic's group: no new group was written for it.
    assert await st.get_state_group_before(dag.id("msg")) == await st.get_state_group_after(dag.id("topic"))
    assert await st.get_state_ids_before(dag.id("msg"), keys=[("m.room.topic", ""), ("x", "y")]) == {
        ("m.room.topic", ""): dag.id("topic")
    }
    with pytest.raises(UnknownEvent):
        await st.get_state_ids_before("$nope")
    # A fresh store (cold caches) reads the same maps from the tables.
    fresh = await RoomStorage.open(storage.db)
    assert await fresh.state.get_state_ids_after(dag.id("msg")) == after_topic
    assert await fresh.state.get_state_ids_before(dag.id("msg"), keys=[CREATE]) == state


async def test_one_more_message_in_a_big_room_costs_no_state_rows(storage: RoomStorage) -> None:
    dag, state = await new_room(storage)
    members = [f"@u{i}:example.org" for i in range(2000)]
    batch = []
    prev = "create"
    big = dict(state)
    for i, user in enumerate(members):
        dag.member(f"j{i}", user, "join", [prev])
        batch.append(EventToPersist(dag.by_name[f"j{i}"], state_before=dict(big)))
        big[("m.room.member", user)] = dag.id(f"j{i}")
        prev = f"j{i}"
    await storage.events.persist_events(dag.room_id, batch)
    entries_before = await count(storage, "state_group_entries")
    groups_before = await count(storage, "state_groups")
    # Each join's group is a delta merging the lowbit(depth) joins it skips: (n/2) log2 n rows, not n^2.
    assert entries_before <= 2000 * 11 // 2 + 2000
    dag.add("msg", [prev])
    await storage.events.persist_events(dag.room_id, [EventToPersist(dag.by_name["msg"], state_before=big)])
    assert await count(storage, "state_group_entries") == entries_before
    assert await count(storage, "state_groups") == groups_before
    # The full map is the same through every route: cached, cold, filtered.
    fresh = await RoomStorage.open(storage.db)
    assert await fresh.state.get_state_ids_before(dag.id("msg")) == big
    assert await storage.state.get_state_ids_before(dag.id("msg")) == big
    key = ("m.room.member", members[1234])
    assert await fresh.state.get_state_ids_before(dag.id("msg"), keys=[key]) == {key: big[key]}


async def test_delta_chains_stay_logarithmic(storage: RoomStorage) -> None:
    dag, state = await new_room(storage)
    prev = "create"
    batch = []
    current = dict(state)
    for i in range(300):
        dag.add(f"s{i}", [prev], etype="m.room.topic", state_key="", content={"topic": str(i)})
        batch.append(EventToPersist(dag.by_name[f"s{i}"], state_before=dict(current)))
        current[("m.room.topic", "")] = dag.id(f"s{i}")
        prev = f"s{i}"
    await storage.events.persist_events(dag.room_id, batch)
    rows = await storage.db.fetchall("SELECT group_id, prev_group FROM state_groups")
    prev_of = {g: p for g, p in rows}

    def chain_length(g: int | None) -> int:
        return 0 if g is None else 1 + chain_length(prev_of[g])

    assert len(prev_of) == 302  # before the create, after it, and one per topic change
    assert max(chain_length(g) for g in prev_of) <= 10  # log2(302) + 1
    # Merged deltas repeat a changed key once: two keys at most per group here.
    assert await count(storage, "state_group_entries") <= 2 * len(prev_of)
    fresh = await RoomStorage.open(storage.db)
    assert await fresh.state.get_state_ids_after(dag.id(prev)) == current
    for i in (0, 1, 127, 128, 255, 299):
        expected = {**state, ("m.room.topic", ""): dag.id(f"s{i}")}
        assert await fresh.state.get_state_ids_after(dag.id(f"s{i}")) == expected


async def test_state_group_before_can_be_passed_and_state_removed(storage: RoomStorage) -> None:
    dag, state = await new_room(storage)
    dag.add("name", ["create"], etype="m.room.name", state_key="", content={"name": "n"})
    dag.add("a", ["name"])
    dag.add("b", ["a"])
    await storage.events.persist_events(
        dag.room_id, [EventToPersist(dag.by_name["name"], state_before=state)]
    )
    group = await storage.state.get_state_group_after(dag.id("name"))
    assert group is not None
    # A resolved state without the name (e.g. after state resolution): stored as a delta that removes it.
    await storage.events.persist_events(
        dag.room_id,
        [
            EventToPersist(dag.by_name["a"], state_group_before=group),
            EventToPersist(dag.by_name["b"], state_before=state),
        ],
    )
    assert await storage.state.get_state_ids_before(dag.id("a")) == {
        **state,
        ("m.room.name", ""): dag.id("name"),
    }
    assert await storage.state.get_state_ids_before(dag.id("b")) == state
    fresh = await RoomStorage.open(storage.db)
    assert await fresh.state.get_state_ids_before(dag.id("b")) == state
    # "Same as after the prev event": from the table, and from earlier in the same batch.
    dag.add("d", ["b"])
    dag.add("e", ["d"])
    await storage.events.persist_events(
        dag.room_id,
        [
            EventToPersist(dag.by_name["d"], state_before_is_after_prev=True),
            EventToPersist(dag.by_name["e"], state_before_is_after_prev=True),
        ],
    )
    assert await storage.state.get_state_ids_before(dag.id("e")) == state
    assert await storage.state.get_state_group_before(
        dag.id("e")
    ) == await storage.state.get_state_group_before(dag.id("b"))
    dag.add("orphan", ["$unknown"])
    with pytest.raises(ValueError):
        await storage.events.persist_events(
            dag.room_id, [EventToPersist(dag.by_name["orphan"], state_before_is_after_prev=True)]
        )
    with pytest.raises(LookupError):
        dag.add("c", ["b"])
        await storage.events.persist_events(
            dag.room_id, [EventToPersist(dag.by_name["c"], state_group_before=10**9)]
        )


async def test_current_state_and_membership_index(storage: RoomStorage) -> None:
    dag, state = await new_room(storage)
    room = dag.room_id
    dag.member("aj", ALICE, "join", ["create"])
    dag.member("bi", BOB, "invite", ["aj"])
    dag.member("ck", CAROL, "knock", ["bi"])
    current = {**state, ("m.room.member", ALICE): dag.id("aj")}
    await storage.events.persist_events(
        room, [EventToPersist(dag.by_name["aj"], state_before=state)], new_current_state=current
    )
    await storage.events.persist_events(
        room,
        [
            EventToPersist(dag.by_name["bi"], state_before=current),
            EventToPersist(dag.by_name["ck"], state_before=current),
        ],
        new_current_state=StateDelta(
            changed={("m.room.member", BOB): dag.id("bi"), ("m.room.member", CAROL): dag.id("ck")}
        ),
    )
    st = storage.state
    assert await st.get_members(room) == {ALICE: "join", BOB: "invite", CAROL: "knock"}
    assert await st.get_joined_users(room) == {ALICE}
    assert await st.get_joined_servers(room) == {"example.org"}
    assert await st.get_rooms_for_user(BOB) == {room: "invite"}
    assert await st.get_membership(room, CAROL) == ("knock", dag.id("ck"))
    assert await st.get_membership(room, "@nobody:x") is None
    dag.member("bj", BOB, "join", ["ck"])
    dag.member("cb", CAROL, "ban", ["bj"], sender=ALICE)
    await storage.events.persist_events(
        room,
        [
            EventToPersist(dag.by_name["bj"], state_before=current),
            EventToPersist(dag.by_name["cb"], state_before=current),
        ],
        new_current_state=StateDelta(
            changed={("m.room.member", BOB): dag.id("bj"), ("m.room.member", CAROL): dag.id("cb")}
        ),
    )
    assert await st.get_joined_servers(room) == {"example.org", "other.org"}
    assert await st.get_members(room) == {ALICE: "join", BOB: "join", CAROL: "ban"}
    create = await st.get_current_state_event(room, "m.room.create", "")
    assert create is not None and create.event_id == state[CREATE]
    assert await st.get_current_state_event(room, "m.room.topic", "") is None
    # A full map replaces everything: Carol's ban drops out of current state (e.g. after resolution).
    full = {**state, ("m.room.member", ALICE): dag.id("aj"), ("m.room.member", BOB): dag.id("bj")}
    await storage.events.persist_events(room, [], new_current_state=full)
    assert await st.get_current_state_ids(room) == full
    assert await st.get_members(room) == {ALICE: "join", BOB: "join"}
    assert await st.get_rooms_for_user(CAROL) == {}
    fresh = await RoomStorage.open(storage.db)
    assert await fresh.state.get_current_state_ids(room) == full
    assert await fresh.state.get_membership(room, BOB) == ("join", dag.id("bj"))


async def test_current_state_naming_an_unknown_member_event_writes_nothing(storage: RoomStorage) -> None:
    dag, state = await new_room(storage)
    dag.add("m", ["create"])
    with pytest.raises(UnknownEvent):
        await storage.events.persist_events(
            dag.room_id,
            [EventToPersist(dag.by_name["m"], state_before=state)],
            new_current_state=StateDelta(changed={("m.room.member", BOB): "$unknown"}),
        )
    assert await storage.events.have_events([dag.id("m")]) == set()
    assert await storage.state.get_current_state_ids(dag.room_id) == {}
    assert await storage.state.get_members(dag.room_id) == {}


async def test_rejected_state_event_does_not_change_state(storage: RoomStorage) -> None:
    dag, state = await new_room(storage)
    dag.add("t", ["create"], etype="m.room.topic", state_key="", content={"topic": "x"})
    dag.add("s", ["create"], etype="m.room.name", state_key="", content={"name": "x"})
    await storage.events.persist_events(
        dag.room_id,
        [
            EventToPersist(dag.by_name["t"], state_before=state, rejected_reason="auth"),
            EventToPersist(dag.by_name["s"], state_before=state, soft_failed=True),
        ],
    )
    assert await storage.state.get_state_ids_after(dag.id("t")) == state
    # A soft-failed event did pass auth at its own state: the state after it includes it.
    assert await storage.state.get_state_ids_after(dag.id("s")) == {**state, ("m.room.name", ""): dag.id("s")}
