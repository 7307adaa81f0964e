"""Rooms, persisting events, the DAG bookkeeping, redactions and the stream, on both databases."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import pytest

from ranvier.storage.interfaces import EventToPersist, TopoToken, UnknownRoom
from ranvier.storage.sql import RoomStorage
from ranvier.storage.sql.engine import Database

from .conftest import ALICE, Dag

CREATE = ("m.room.create", "")


async def new_room(storage: RoomStorage, version: str = "11") -> tuple[Dag, dict[tuple[str, str], str]]:
    """A room with its create event persisted; returns the builder and the state after the create."""
    dag = Dag(version=version)
    await storage.rooms.store_room(dag.room_id, version, ALICE)
    create = dag.add("create", etype="m.room.create", state_key="", content={"room_version": version})
    await storage.events.persist_events(dag.room_id, [EventToPersist(create, state_before={})])
    return dag, {CREATE: create.event_id}


async def chain(
    storage: RoomStorage, dag: Dag, state: dict, names: list[str], after: str, **kw: object
) -> None:
    prev = after
    batch = []
    for name in names:
        dag.add(name, [prev])
        batch.append(EventToPersist(dag.by_name[name], state_before=state, **kw))  # type: ignore[arg-type]
        prev = name
    await storage.events.persist_events(dag.room_id, batch)


async def test_rooms(storage: RoomStorage) -> None:
    assert await storage.rooms.store_room("!a:x", "10", "@u:x", is_public=True)
    assert not await storage.rooms.store_room("!a:x", "11", "@v:x")  # already there: unchanged
    await storage.rooms.store_room("!b:x", "11", "@v:x")
    version = await storage.rooms.get_room_version("!a:x")
    assert version is not None and version.identifier == "10"
    assert await storage.rooms.get_room_version("!nope:x") is None
    assert [(r.room_id, r.is_public) for r in await storage.rooms.get_all_rooms()] == [
        ("!a:x", True),
        ("!b:x", False),
    ]
    assert not await storage.rooms.is_partial_state("!b:x")
    await storage.rooms.set_partial_state("!b:x", True)
    assert await storage.rooms.is_partial_state("!b:x")
    await storage.rooms.set_partial_state("!b:x", False)
    assert not await storage.rooms.is_partial_state("!b:x")
    with pytest.raises(Exception):  # noqa: B017 - UnsupportedRoomVersion
        await storage.rooms.store_room("!c:x", "999", "@u:x")


async def test_linear_chain_reads_and_extremities(storage: RoomStorage) -> None:
    dag, state = await new_room(storage)
    await chain(storage, dag, state, ["m1", "m2", "m3"], after="create")
    ev = storage.events
    assert await ev.get_forward_extremities(dag.room_id) == [dag.id("m3")]
    assert await ev.get_backward_extremities(dag.room_id) == []
    got = await ev.get_event(dag.id("m2"))
    assert got is not None and got.json == dag.by_name["m2"].json
    assert set(await ev.get_events([dag.id("m1"), dag.id("m3"), "$missing"])) == {dag.id("m1"), dag.id("m3")}
    assert await ev.have_events([dag.id("m1"), "$missing"]) == {dag.id("m1")}
    metas = [await ev.get_event_meta(dag.id(n)) for n in ("create", "m1", "m2", "m3")]
    streams = [m.stream_ordering for m in metas if m is not None]
    assert streams == sorted(streams) and len(set(streams)) == 4 and streams[0] > 0
    assert [m.depth for m in metas if m is not None] == [1, 2, 3, 4]
    assert await ev.get_max_depth_of([dag.id("m2"), dag.id("m1"), "$missing"]) == 3
    assert await ev.get_max_depth_of(["$missing"]) == 0
    assert await ev.get_prev_event_ids(dag.id("m2")) == [dag.id("m1")]
    assert await ev.get_child_event_ids([dag.id("m1"), dag.id("m3")]) == {dag.id("m2")}
    assert storage.stream.current_position() == streams[-1]


async def test_persisting_again_is_a_no_op_returning_the_same_streams(storage: RoomStorage) -> None:
    dag, state = await new_room(storage)
    dag.add("m1", ["create"])
    batch = [EventToPersist(dag.by_name["m1"], state_before=state)]
    first = await storage.events.persist_events(dag.room_id, batch)
    again = await storage.events.persist_events(dag.room_id, batch + batch)
    assert again == first + first
    assert storage.stream.current_position() == first[0]


async def test_batch_validation(storage: RoomStorage) -> None:
    dag, state = await new_room(storage)
    m = dag.add("m", ["create"])
    with pytest.raises(ValueError):
        await storage.events.persist_events(dag.room_id, [EventToPersist(m)])  # non-outlier without state
    with pytest.raises(ValueError):
        await storage.events.persist_events(
            dag.room_id, [EventToPersist(m, outlier=True, state_before=state)]
        )
    with pytest.raises(ValueError):
        await storage.events.persist_events("!other:x", [EventToPersist(m, state_before=state)])
    other = Dag()
    o = other.add("o")
    with pytest.raises(UnknownRoom):
        await storage.events.persist_events(other.room_id, [EventToPersist(o, state_before={})])
    assert await storage.events.have_events([m.event_id, o.event_id]) == set()


async def test_outliers_are_held_but_not_in_the_timeline_until_deoutliered(storage: RoomStorage) -> None:
    dag, state = await new_room(storage)
    dag.add("o", ["create"])
    dag.add("m", ["o"])
    ev = storage.events
    [s_o] = await ev.persist_events(dag.room_id, [EventToPersist(dag.by_name["o"], outlier=True)])
    assert await ev.get_event(dag.id("o")) is not None
    assert await ev.get_forward_extremities(dag.room_id) == [dag.id("create")]
    assert await storage.stream.get_recent_events(dag.room_id, 10) == [dag.by_name["create"]]
    # A child of an outlier: the outlier is a backward extremity (no state at it), not a forward one.
    await ev.persist_events(dag.room_id, [EventToPersist(dag.by_name["m"], state_before=state)])
    assert set(await ev.get_forward_extremities(dag.room_id)) == {dag.id("create"), dag.id("m")}
    assert await ev.get_backward_extremities(dag.room_id) == [dag.id("o")]
    # De-outliering gives it a new stream position and its state.
    [s_o2] = await ev.persist_events(dag.room_id, [EventToPersist(dag.by_name["o"], state_before=state)])
    assert s_o2 > s_o
    meta = await ev.get_event_meta(dag.id("o"))
    assert meta is not None and not meta.outlier and meta.stream_ordering == s_o2
    assert await ev.get_forward_extremities(dag.room_id) == [dag.id("m")]
    assert await ev.get_backward_extremities(dag.room_id) == []
    assert await storage.state.get_state_ids_before(dag.id("o")) == state


async def test_rejected_and_soft_failed_events(storage: RoomStorage) -> None:
    dag, state = await new_room(storage)
    dag.add("bad", ["create"])
    dag.add("soft", ["create"])
    ev = storage.events
    await ev.persist_events(
        dag.room_id,
        [
            EventToPersist(dag.by_name["bad"], rejected_reason="auth", state_before=state),
            EventToPersist(dag.by_name["soft"], soft_failed=True, state_before=state),
        ],
    )
    assert await ev.get_event(dag.id("bad")) is None
    assert await ev.get_events([dag.id("bad")]) == {}
    rejected = await ev.get_event(dag.id("bad"), allow_rejected=True)
    assert rejected is not None and rejected.event_id == dag.id("bad")
    verdicts = await ev.get_events_with_verdicts([dag.id("bad"), dag.id("soft"), "$unknown"])
    assert verdicts == {dag.id("bad"): (rejected, "auth"), dag.id("soft"): (dag.by_name["soft"], None)}
    assert await ev.have_events([dag.id("bad")]) == {dag.id("bad")}
    assert await ev.get_event(dag.id("soft")) is not None
    meta = await ev.get_event_meta(dag.id("bad"))
    assert meta is not None and meta.rejected_reason == "auth"
    # Neither hides its parent nor becomes an extremity, nor shows in timelines.
    assert await ev.get_forward_extremities(dag.room_id) == [dag.id("create")]
    assert await storage.stream.get_recent_events(dag.room_id, 10) == [dag.by_name["create"]]
    assert await storage.stream.get_room_events_between([dag.room_id], 0, 10**9, 10) == {
        dag.room_id: [dag.by_name["create"]]
    }


async def test_children_arriving_before_their_parent(storage: RoomStorage) -> None:
    dag, state = await new_room(storage)
    dag.add("p", ["create"])
    dag.add("c", ["p"])
    ev = storage.events
    await ev.persist_events(dag.room_id, [EventToPersist(dag.by_name["c"], state_before=state)])
    assert await ev.get_backward_extremities(dag.room_id) == [dag.id("p")]
    assert set(await ev.get_forward_extremities(dag.room_id)) == {dag.id("create"), dag.id("c")}
    await ev.persist_events(dag.room_id, [EventToPersist(dag.by_name["p"], state_before=state)])
    assert await ev.get_forward_extremities(dag.room_id) == [dag.id("c")]
    assert await ev.get_backward_extremities(dag.room_id) == []


async def test_backfilled_events_sort_before_everything(storage: RoomStorage) -> None:
    dag, state = await new_room(storage)
    dag.add("old1", ["create"])
    dag.add("old2", ["old1"])
    dag.add("new", ["old2"])
    ev = storage.events
    [s_new] = await ev.persist_events(dag.room_id, [EventToPersist(dag.by_name["new"], state_before=state)])
    assert await ev.get_backward_extremities(dag.room_id) == [dag.id("old2")]
    streams = await ev.persist_events(
        dag.room_id,
        [EventToPersist(dag.by_name[n], backfilled=True, state_before=state) for n in ("old2", "old1")],
    )
    assert streams[0] < 0 and streams[1] < streams[0] < s_new
    assert storage.stream.current_position() == s_new  # backfill is not news for /sync
    assert await ev.get_backward_extremities(dag.room_id) == []
    assert await ev.get_forward_extremities(dag.room_id) == [dag.id("new")]
    events, _ = await storage.stream.paginate(dag.room_id, None, "b", 10)
    assert [e.event_id for e in events] == [dag.id(n) for n in ("new", "old2", "old1", "create")]


async def test_auth_chain(storage: RoomStorage) -> None:
    dag, _ = await new_room(storage)
    dag.add("pl", ["create"], etype="m.room.power_levels", state_key="", auth=["create"], content={})
    dag.member("join", ALICE, "join", ["pl"], auth=["create", "pl"])
    dag.add("msg", ["join"], auth=["create", "pl", "join"])
    ev = storage.events
    await ev.persist_events(
        dag.room_id, [EventToPersist(dag.by_name[n], outlier=True) for n in ("pl", "join", "msg")]
    )
    assert await ev.get_auth_chain_ids([dag.id("msg")]) == {dag.id("create"), dag.id("pl"), dag.id("join")}
    assert await ev.get_auth_chain_ids([dag.id("pl"), dag.id("join")]) == {dag.id("create"), dag.id("pl")}
    assert await ev.get_auth_chain_ids([dag.id("create")]) == set()


async def test_redactions_apply_on_read_and_keep_the_original(storage: RoomStorage) -> None:
    dag, state = await new_room(storage)
    dag.add("secret", ["create"], content={"body": "secret"})
    dag.add("r", ["secret"], etype="m.room.redaction", content={}, redacts=dag.id("secret"))
    dag.add("remote", ["r"], content={"body": "theirs"}, sender="@bob:other.org")
    dag.add("r2", ["remote"], etype="m.room.redaction", content={}, redacts=dag.id("remote"))
    ev = storage.events
    # The redaction arrives before its target.
    await ev.persist_events(dag.room_id, [EventToPersist(dag.by_name["r"], outlier=True)])
    await ev.persist_events(dag.room_id, [EventToPersist(dag.by_name["secret"], state_before=state)])
    got = await ev.get_event(dag.id("secret"))
    assert got is not None and got.content == {} and got.event_id == dag.id("secret")
    assert got.unsigned["redacted_because"]["content"] == {"redacts": dag.id("secret")}
    stored = await storage.db.fetchval("SELECT json FROM events WHERE event_id = ?", (dag.id("secret"),))
    assert json.loads(stored)["content"] == {"body": "secret"}
    # Another server's event: only with the room layer's word that the power level allowed it.
    await ev.persist_events(
        dag.room_id,
        [
            EventToPersist(dag.by_name["remote"], state_before=state),
            EventToPersist(dag.by_name["r2"], state_before=state),
        ],
    )
    remote = await ev.get_event(dag.id("remote"))
    assert remote is not None and remote.content == {"body": "theirs"}
    dag.add("r3", ["r2"], etype="m.room.redaction", content={}, redacts=dag.id("remote"))
    await ev.persist_events(
        dag.room_id,
        [EventToPersist(dag.by_name["r3"], state_before=state, redaction_permitted_by_power=True)],
    )
    remote = await ev.get_event(dag.id("remote"))
    assert remote is not None and remote.content == {}
    # A fresh store (no caches) reads the same.
    fresh = await RoomStorage.open(storage.db)
    again = await fresh.events.get_event(dag.id("remote"))
    assert again is not None and again.json == remote.json


async def test_rejected_redaction_does_not_apply(storage: RoomStorage) -> None:
    dag, state = await new_room(storage)
    dag.add("m", ["create"], content={"body": "keep"})
    dag.add("r", ["m"], etype="m.room.redaction", content={}, redacts=dag.id("m"))
    await storage.events.persist_events(
        dag.room_id,
        [
            EventToPersist(dag.by_name["m"], state_before=state),
            EventToPersist(dag.by_name["r"], state_before=state, rejected_reason="no power"),
        ],
    )
    got = await storage.events.get_event(dag.id("m"))
    assert got is not None and got.content == {"body": "keep"}


async def test_stream_reads(storage: RoomStorage) -> None:
    a, sa = await new_room(storage)
    b, sb = await new_room(storage)
    start = storage.stream.current_position()
    await chain(storage, a, sa, ["a1", "a2", "a3"], after="create")
    await chain(storage, b, sb, ["b1"], after="create")
    end = storage.stream.current_position()
    got = await storage.stream.get_room_events_between([a.room_id, b.room_id, "!none:x"], start, end, 2)
    assert {r: [e.event_id for e in evs] for r, evs in got.items()} == {
        a.room_id: [a.id("a2"), a.id("a3")],
        b.room_id: [b.id("b1")],
    }
    a3_stream = (await storage.events.get_event_meta(a.id("a3"))).stream_ordering  # type: ignore[union-attr]
    assert await storage.stream.get_room_events_between([a.room_id], a3_stream, end, 5) == {}
    recent = await storage.stream.get_recent_events(a.room_id, 2)
    assert [e.event_id for e in recent] == [a.id("a2"), a.id("a3")]
    older = await storage.stream.get_recent_events(a.room_id, 10, before_stream=a3_stream)
    assert [e.event_id for e in older] == [a.id(n) for n in ("create", "a1", "a2")]


async def test_paginate_both_ways_with_tokens(storage: RoomStorage) -> None:
    dag, state = await new_room(storage)
    names = [f"m{i}" for i in range(7)]
    await chain(storage, dag, state, names, after="create")
    everything = [dag.id(n) for n in ("create", *names)]
    seen: list[str] = []
    token = None
    while True:
        events, token = await storage.stream.paginate(dag.room_id, token, "b", 3)
        if not events:
            break
        seen += [e.event_id for e in events]
    assert seen == list(reversed(everything))
    # Forward from a token taken while going back resumes just after the last event returned.
    page, token = await storage.stream.paginate(dag.room_id, None, "b", 2)
    assert [e.content["body"] for e in page] == ["m6", "m5"]
    assert token is not None
    forward, ftoken = await storage.stream.paginate(dag.room_id, token, "f", 10)
    assert [e.content["body"] for e in forward] == ["m5", "m6"]
    assert TopoToken.parse(str(ftoken)) == ftoken
    filtered, _ = await storage.stream.paginate(dag.room_id, None, "f", 10, types=["m.room.create"])
    assert [e.event_id for e in filtered] == [dag.id("create")]
    with pytest.raises(ValueError):
        TopoToken.parse("s12")


async def test_wait_for_new_wakes_on_persist_and_times_out(storage: RoomStorage) -> None:
    dag, state = await new_room(storage)
    pos = storage.stream.current_position()
    assert await storage.stream.wait_for_new(pos, 0.01) == pos
    assert await storage.stream.wait_for_new(pos - 1, 5) == pos  # already past: returns at once
    waiter = asyncio.create_task(storage.stream.wait_for_new(pos, 30))
    await asyncio.sleep(0)
    assert not waiter.done()
    await chain(storage, dag, state, ["m"], after="create")
    assert await waiter == pos + 1


class PausingDatabase(Database):
    """The real database, except that the first read of event rows waits until the test lets it go."""

    def __init__(self, inner: Database) -> None:
        self.dialect = inner.dialect
        self._inner = inner
        self.reading, self.resume = asyncio.Event(), asyncio.Event()

    def transaction(self) -> Any:
        return self._inner.transaction()

    def snapshot(self) -> Any:
        return self._inner.snapshot()

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        rows = await self._inner.fetchall(sql, params)
        if "rejected_reason, redacted_by" in sql and not self.reading.is_set():
            self.reading.set()
            await self.resume.wait()
        return rows

    async def close(self) -> None:
        await self._inner.close()


async def test_a_read_racing_a_redaction_does_not_cache_the_unredacted_event(storage: RoomStorage) -> None:
    dag, state = await new_room(storage)
    dag.add("m", ["create"], content={"body": "oops"})
    dag.add("r", ["m"], etype="m.room.redaction", content={}, redacts=dag.id("m"))
    await storage.events.persist_events(dag.room_id, [EventToPersist(dag.by_name["m"], state_before=state)])
    paused = PausingDatabase(storage.db)
    racing = await RoomStorage.open(paused)
    read = asyncio.create_task(racing.events.get_event(dag.id("m")))
    await paused.reading.wait()  # the read has the unredacted row in hand
    await racing.events.persist_events(dag.room_id, [EventToPersist(dag.by_name["r"], state_before=state)])
    paused.resume.set()
    first = await read
    assert first is not None and first.content == {"body": "oops"}  # read before the redaction: fine
    again = await racing.events.get_event(dag.id("m"))
    assert again is not None and again.content == {}
