"""The join gap under partial state, Ranvier joining Ranvier (issue 19): a message the resident sends between
make_join and send_join reaches the joiner while its room is still partial (its resync held by a gate),
through the resident's dummy event alone (the joiner's detection off), or through the joiner's own
detection alone (the resident's dummy event off); once the resync may go on the room completes with the
message once and every member. Rooms of ROOM_SIZE members (200, 5,000 with RANVIER_LONG=1)."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from ranvier.app import Homeserver
from tests.scenarios.servers import Client, eventually, start_server

from .helpers import JOINER_ROOMS, ROOM_SIZE, Gate, fill_room, joined_count

TIMEOUT = 300.0 if os.environ.get("RANVIER_LONG") == "1" else 30.0
GAP = "said during the handshake"


@pytest.mark.parametrize("fix", ["resident_dummy_event", "joiner_detection"])
async def test_gap_message_reaches_the_partial_joiner(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession, fix: str
) -> None:
    dummy = fix == "resident_dummy_event"
    a = await start_server(tmp_path / "a", rate_limits={"enabled": False}, join_gap_dummy_event=dummy)
    b = await start_server(tmp_path / "b", rate_limits={"enabled": False}, **JOINER_ROOMS)
    servers += [a, b]
    b.remote_membership.gap_check = not dummy  # one fix at a time
    alice = await Client.register(session, a, "alice")
    room_id = await alice.create_room(name="Gap")
    await fill_room(a, room_id, ROOM_SIZE)
    await alice.send_text(room_id, "old news")

    async def message_in_the_gap(_room: str) -> None:
        await alice.send_text(room_id, GAP)

    b.remote_membership.before_send_join = message_in_the_gap
    gate = Gate(b)
    bob = await Client.register(session, b, "bob")
    await bob.ok("POST", f"/join/{room_id}", {}, server_name=a.server_name)
    assert await b.storage.rooms.is_partial_state(room_id)

    async def seen() -> bool:
        return GAP in await bob.texts(room_id)

    took = await eventually(seen, timeout=TIMEOUT)
    print(f"\n[partial gap] {fix}, {ROOM_SIZE} members: the gap message seen after {took * 1000:.0f} ms")
    await eventually(_reached(gate), timeout=TIMEOUT)
    assert await b.storage.rooms.is_partial_state(room_id), "seen only after the resync"
    assert (await bob.texts(room_id)).count(GAP) == 1
    # Which fix closed it: the resident's dummy event ties the join and the message (one extremity);
    # without it, the resident keeps both and the joiner found the message alone.
    assert len(await a.storage.events.get_forward_extremities(room_id)) == (1 if dummy else 2)

    gate.open()

    async def complete() -> bool:
        return not await b.storage.rooms.is_partial_state(room_id)

    await eventually(complete, timeout=TIMEOUT, interval=0.1)
    assert (await bob.texts(room_id)).count(GAP) == 1
    members = await bob.ok("GET", f"/rooms/{room_id}/members", membership="join")
    assert len(members["chunk"]) == ROOM_SIZE + 2  # alice, the members, bob
    assert await joined_count(b, room_id) == ROOM_SIZE + 2
    await bob.send_text(room_id, "bob after the gap")

    async def alice_has_it() -> bool:
        return "bob after the gap" in await alice.texts(room_id)

    await eventually(alice_has_it, timeout=TIMEOUT)


def _reached(gate: Gate) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return gate.reached.is_set()

    return check
