"""Inbound federation (issue 21, growth): what the intake hands storage for an event of a linear chain does
not grow with the room's state. Each event whose one prev event's state is known is persisted as "the
state after its prev event" (no full map to copy or compare), messages write no state group rows, a state
event a bounded delta, and the room's current state after such a batch is still right.

Measured by counts (maps handed to storage, their entries, state group rows written and read), never by
time: a room of a few state events and one of a few hundred must give the same counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from ranvier.app import Homeserver
from ranvier.protocol.events import Pdu, StateKey
from ranvier.protocol.room_versions import RoomVersion
from ranvier.storage.interfaces import EventToPersist

from .inbound_driver import (
    Driver,
    auth_events_for,
    current_state_events,
    register,
    start_driver,
    start_homeserver,
)

PER_TXN = 50


@dataclass
class Seen:
    """What the persister was given, per event id (a real listener of the real persister)."""

    items: dict[str, EventToPersist] = field(default_factory=dict)

    async def __call__(self, room_id: str, batch: Sequence[EventToPersist]) -> None:
        for item in batch:
            self.items[item.pdu.event_id] = item


@dataclass
class Chain:
    hs: Homeserver
    driver: Driver
    room_id: str
    rv: RoomVersion
    state: dict[StateKey, Pdu]
    last: Pdu

    def join(self, localpart: str) -> Pdu:
        user = self.driver.user(localpart)
        content = {"membership": "join"}
        auth = auth_events_for(self.rv, self.state, "m.room.member", user, content, user)
        pdu = self.driver.build(
            self.rv, self.room_id, user, "m.room.member", content, [self.last], auth, user
        )
        self.state[("m.room.member", user)] = pdu
        self.last = pdu
        return pdu

    def message(self, sender: str, body: str) -> Pdu:
        content = {"msgtype": "m.text", "body": body}
        auth = auth_events_for(self.rv, self.state, "m.room.message", sender, content)
        pdu = self.driver.build(self.rv, self.room_id, sender, "m.room.message", content, [self.last], auth)
        self.last = pdu
        return pdu

    async def send(self, pdus: list[Pdu]) -> None:
        for i in range(0, len(pdus), PER_TXN):
            part = pdus[i : i + PER_TXN]
            result = (await self.driver.send(self.hs.server_name, part))["pdus"]
            assert result == {p.event_id: {} for p in part}

    async def count(self, table: str) -> int:
        return int(await self.hs.storage.db.fetchval(f"SELECT COUNT(*) FROM {table}"))


@dataclass(frozen=True)
class Costs:
    maps_given: int  # events persisted with a full state map
    map_entries_given: int  # entries of those maps
    message_group_rows: int  # state group entries written by a batch of messages
    join_group_rows: int  # ... by a batch of joins
    group_rows_read: int  # state group entries read from the database by both batches


async def _costs(tmp_path: Path, extra_members: int) -> Costs:
    hs = await start_homeserver(tmp_path / "hs")
    driver = await start_driver(tmp_path)
    session = aiohttp.ClientSession()
    try:
        alice = await register(session, hs, "alice")
        status, body = await alice.call("POST", "/_matrix/client/v3/createRoom", {"preset": "public_chat"})
        assert status == 200, body
        room_id = body["room_id"]
        rv = await hs.storage.rooms.get_room_version(room_id)
        assert rv is not None
        state = await current_state_events(hs, room_id)
        tips = await hs.storage.events.get_events(await hs.storage.events.get_forward_extremities(room_id))
        (last,) = tips.values()
        chain = Chain(hs, driver, room_id, rv, state, last)
        # The room's size: members of the driver, joined over /send like any.
        await chain.send([chain.join(f"m{i}") for i in range(extra_members)])
        seen = Seen()
        hs.persister.add_listener(seen)
        sender = chain.driver.user("m0")
        groups = hs.storage.state_groups
        read_before = groups.rows_read

        rows = await chain.count("state_group_entries")
        messages = [chain.message(sender, f"hello {i}") for i in range(20)]
        await chain.send(messages)
        message_rows = await chain.count("state_group_entries") - rows

        rows = await chain.count("state_group_entries")
        joins = [chain.join(f"late{i}") for i in range(10)]
        await chain.send(joins)
        join_rows = await chain.count("state_group_entries") - rows

        for pdu in [*messages, *joins]:
            item = seen.items[pdu.event_id]
            assert item.state_before_is_after_prev, pdu.event_id
        # The current state after the batch of joins (built from the chain, not from maps) is right.
        current = await hs.storage.state.get_current_state_ids(room_id)
        assert current == {k: v.event_id for k, v in chain.state.items()}
        assert await hs.storage.state.get_membership(room_id, driver.user("late9")) == (
            "join",
            joins[-1].event_id,
        )
        given = [seen.items[p.event_id].state_before for p in [*messages, *joins]]
        return Costs(
            maps_given=sum(m is not None for m in given),
            map_entries_given=sum(len(m) for m in given if m is not None),
            message_group_rows=message_rows,
            join_group_rows=join_rows,
            group_rows_read=groups.rows_read - read_before,
        )
    finally:
        await session.close()
        await driver.close()
        await hs.stop()


async def test_a_linear_chain_costs_the_same_state_work_in_a_small_and_a_big_room(tmp_path: Path) -> None:
    small = await _costs(tmp_path / "small", extra_members=1)
    big = await _costs(tmp_path / "big", extra_members=300)
    # No event of a linear chain carries the room's state to storage: it is the state after its prev.
    assert small.maps_given == big.maps_given == 0
    assert small.map_entries_given == big.map_entries_given == 0
    # Messages write no state group entries; ten joins a delta each that does not depend on the room's
    # size (at most log2 of the lineage's depth + 1 entries per group: 10 * 10 is a loose bound).
    assert small.message_group_rows == big.message_group_rows == 0
    assert 10 <= big.join_group_rows <= 100
    # Nothing of the state groups is read back from the database for these batches: the groups they
    # build on are in memory.
    assert big.group_rows_read <= small.group_rows_read + 10


async def test_messages_on_one_branch_of_a_fork_resolve_the_current_state_once(tmp_path: Path) -> None:
    hs = await start_homeserver(tmp_path / "hs")
    driver = await start_driver(tmp_path)
    session = aiohttp.ClientSession()
    try:
        alice = await register(session, hs, "alice")
        status, body = await alice.call("POST", "/_matrix/client/v3/createRoom", {"preset": "public_chat"})
        assert status == 200, body
        room_id = body["room_id"]
        rv = await hs.storage.rooms.get_room_version(room_id)
        assert rv is not None
        state = await current_state_events(hs, room_id)
        tips = await hs.storage.events.get_events(await hs.storage.events.get_forward_extremities(room_id))
        (fork_point,) = tips.values()
        chain = Chain(hs, driver, room_id, rv, state, fork_point)
        await chain.send([chain.join("bob")])
        bob = driver.user("bob")
        # Two branches from bob's join, each another member's join: the room has two forward extremities
        # whose states differ, so the current state is a resolution.
        base = chain.last
        left = chain.join("left")
        chain.last = base
        right = chain.join("right")
        await chain.send([left, right])
        tips_now = set(await hs.storage.events.get_forward_extremities(room_id))
        assert tips_now == {left.event_id, right.event_id}

        resolutions = 0
        metrics = hs.state.on_resolved

        def counted(seconds: float) -> None:
            nonlocal resolutions
            resolutions += 1
            if metrics is not None:
                metrics(seconds)

        hs.state.on_resolved = counted
        chain.last = left
        messages = [chain.message(bob, f"on the left {i}") for i in range(20)]
        await chain.send(messages)
        hs.state.on_resolved = metrics
        # One resolution for the run's step 6 (every message has the same state sets: the left branch's
        # map, shared by the messages, and the right one's), one for the new current state when persisted;
        # each message resolved its own (and flushed the run for it) before.
        assert 1 <= resolutions <= 3
        extremities = set(await hs.storage.events.get_forward_extremities(room_id))
        assert extremities == {messages[-1].event_id, right.event_id}
        current = await hs.storage.state.get_current_state_ids(room_id)
        assert current[("m.room.member", driver.user("left"))] == left.event_id
        assert current[("m.room.member", driver.user("right"))] == right.event_id
        for pdu in messages:
            meta = await hs.storage.events.get_event_meta(pdu.event_id)
            assert meta is not None and not meta.soft_failed and meta.rejected_reason is None
    finally:
        await session.close()
        await driver.close()
        await hs.stop()
