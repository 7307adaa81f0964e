"""Crash safety: a writer process killed with SIGKILL in the middle of persisting leaves each batch whole or
absent, with the extremities and current state consistent, on both databases."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from ranvier.storage.interfaces import EventToPersist, StateDelta
from ranvier.storage.sql import RoomStorage

from .conftest import ALICE, Dag, DbSpec

BATCH = 300
BATCHES = 6
TOPIC = ("m.room.topic", "")

# The writer: persists the prepared events in batches, each opening with a topic change that also becomes
# the current state, and reports each commit on stdout.
WRITER = """
import asyncio, json, sys
from ranvier.protocol.events import Pdu
from ranvier.protocol.room_versions import get_room_version
from ranvier.storage.interfaces import EventToPersist, StateDelta
from ranvier.storage.sql import RoomStorage
from tests.storage.conftest import DbSpec

async def main():
    spec = DbSpec(**json.loads(sys.argv[1]))
    room_id, create_id, events_file, batch_size = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    version = get_room_version("11")
    pdus = [Pdu(json.loads(line), version) for line in open(events_file)]
    storage = await RoomStorage.open(await spec.open())
    state = {("m.room.create", ""): create_id}
    print("ready", flush=True)
    for n, start in enumerate(range(0, len(pdus), batch_size), 1):
        batch = pdus[start : start + batch_size]
        items = [EventToPersist(p, state_before=dict(state)) for p in batch]
        state[("m.room.topic", "")] = batch[0].event_id
        await storage.events.persist_events(
            room_id, items, new_current_state=StateDelta(changed={("m.room.topic", ""): batch[0].event_id})
        )
        print(f"committed {n}", flush=True)

asyncio.run(main())
"""


def build_chain(dag: Dag) -> list[str]:
    names = []
    prev = "create"
    for i in range(BATCH * BATCHES):
        name = f"e{i}"
        if i % BATCH == 0:
            dag.add(name, [prev], etype="m.room.topic", state_key="", content={"topic": str(i)})
        else:
            dag.add(name, [prev])
        names.append(name)
        prev = name
    return names


async def run_writer_and_kill(
    spec: DbSpec, dag: Dag, events_file: Path, kill_after: str, delay: float
) -> int:
    """Start the writer and SIGKILL it once it printed ``kill_after``; returns the batches it reported."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WRITER,
        json.dumps(asdict(spec)),
        dag.room_id,
        dag.id("create"),
        str(events_file),
        str(BATCH),
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.stdout is not None
    committed = 0
    try:
        while True:
            line = (await asyncio.wait_for(proc.stdout.readline(), 120)).decode().strip()
            assert line, "the writer exited before it was killed"
            if line.startswith("committed"):
                committed = int(line.split()[1])
            if line == kill_after:
                # Not a timing assertion: the delay only moves the kill into the next batch's transaction;
                # the checks below hold wherever the kill lands.
                await asyncio.sleep(delay)
                os.kill(proc.pid, signal.SIGKILL)
                break
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    return committed


@pytest.mark.parametrize(("kill_after", "delay"), [("ready", 0.0), ("committed 2", 0.02)])
async def test_a_killed_writer_leaves_whole_batches(
    db_spec: DbSpec, storage: RoomStorage, tmp_path: Path, kill_after: str, delay: float
) -> None:
    dag = Dag()
    await storage.rooms.store_room(dag.room_id, "11", ALICE)
    create = dag.add("create", etype="m.room.create", state_key="", content={"room_version": "11"})
    await storage.events.persist_events(dag.room_id, [EventToPersist(create, state_before={})])
    names = build_chain(dag)
    events_file = tmp_path / "events.jsonl"
    events_file.write_text("".join(json.dumps(dag.by_name[n].json) + "\n" for n in names))

    said = await run_writer_and_kill(db_spec, dag, events_file, kill_after, delay)

    after = await RoomStorage.open(storage.db)
    held = await after.events.have_events(dag.id(n) for n in names)
    # All or nothing per batch: what is held is a prefix of whole batches, at least those reported.
    assert len(held) % BATCH == 0 and len(held) >= said * BATCH
    assert held == {dag.id(n) for n in names[: len(held)]}
    done = len(held) // BATCH
    last = dag.id(names[len(held) - 1]) if held else dag.id("create")
    assert await after.events.get_forward_extremities(dag.room_id) == [last]
    assert await after.events.get_backward_extremities(dag.room_id) == []
    current = await after.state.get_current_state_ids(dag.room_id)
    assert current.get(TOPIC) == (dag.id(names[(done - 1) * BATCH]) if done else None)
    count = await after.db.fetchval("SELECT COUNT(*) FROM events WHERE room_id = ?", (dag.room_id,))
    assert count == len(held) + 1

    # The database is usable afterwards: the rest persists and the stream keeps increasing.
    rest = names[len(held) :]
    state = {("m.room.create", ""): dag.id("create")}
    if done:
        state[TOPIC] = dag.id(names[(done - 1) * BATCH])
    items = []
    for n in rest:
        items.append(EventToPersist(dag.by_name[n], state_before=dict(state)))
        if dag.by_name[n].type == "m.room.topic":
            state[TOPIC] = dag.id(n)
    streams = await after.events.persist_events(
        dag.room_id, items, new_current_state=StateDelta(changed={TOPIC: state[TOPIC]})
    )
    assert streams == sorted(streams) and (not streams or streams[0] > 0)
    assert await after.events.get_forward_extremities(dag.room_id) == [dag.id(names[-1])]
    assert await after.state.get_state_ids_after(dag.id(names[-1])) == state
