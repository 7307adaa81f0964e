"""The make_join/send_join gap between Ranvier and a real Synapse, both ways.

An event the resident creates between the joiner's make_join and send_join is cited neither by the join
nor by the state the joiner receives. Each test widens that window on purpose, sends a message in it, and
checks that the message ends up in the joiner's history:

* Ranvier joins a Synapse 1.163.2 room (``before_send_join`` hook): Synapse, with its own fix, sends a
  dummy event citing the join and the missed event; Ranvier must take it even though it may arrive before
  the send_join answer does. Run with and without our joiner-side gap check.
* Synapse 1.163.2 joins a Ranvier room through ``DelayProxy``, which holds the send_join: our resident-side
  dummy event must lead Synapse to the missed event.
* Ranvier joins a Synapse 1.155.0 room (before Synapse's fix): only our joiner-side detection can help.

How long the missed event takes to become visible on the joiner is printed (``-s``), never asserted.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from ranvier.app import Homeserver
from tests.scenarios.servers import Client, eventually, free_port, start_server

from .delay_proxy import DelayProxy
from .peers import SynapseClient, start_ranvier_behind
from .synapse import SynapseServer, running_synapse

pytestmark = pytest.mark.interop

FED_TIMEOUT = 30.0
OLD_SYNAPSE = "1.155.0"  # the last release without Synapse's resident-side gap fix (SYNAPSE.md)


def _figure(label: str, seconds: float) -> None:
    print(f"\n[gap timing] {label}: {seconds * 1000:.0f} ms")


@pytest.fixture(scope="module")
def old_synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SynapseServer]:
    if os.environ.get("RANVIER_SKIP_OLD_SYNAPSE"):
        pytest.skip("RANVIER_SKIP_OLD_SYNAPSE is set")
    with running_synapse(tmp_path_factory.mktemp("synapse-old"), OLD_SYNAPSE) as server:
        yield server


async def _join_synapse_room_across_a_gap(
    synapse: SynapseServer, ranvier: Homeserver, session: aiohttp.ClientSession, label: str
) -> str:
    """Ranvier's user joins a room on ``synapse``; the Synapse user speaks between make_join and
    send_join."""
    carol = await SynapseClient.register_on(session, synapse, f"gap_carol_{label}")
    bob = await Client.register(session, ranvier, f"bob{label}")
    room_id = await carol.create_room()
    await carol.send_text(room_id, "old news")
    loop = asyncio.get_running_loop()
    sent_join_at: list[float] = []

    async def message_in_the_gap(_room: str) -> None:
        # Synapse has persisted it when the client call returns: it is a forward extremity the join
        # template we already hold does not cite.
        await carol.send_text(room_id, "said during the handshake")
        sent_join_at.append(loop.time())

    ranvier.remote_membership.before_send_join = message_in_the_gap
    await bob.ok("POST", f"/join/{room_id}", {}, server_name=synapse.server_name)

    async def joiner_has_it() -> bool:
        return "said during the handshake" in await bob.texts(room_id)

    await eventually(joiner_has_it, timeout=FED_TIMEOUT)
    _figure(f"Synapse {synapse.version} -> Ranvier joiner ({label})", loop.time() - sent_join_at[0])
    assert (await bob.texts(room_id)).count("said during the handshake") == 1
    # The room works afterwards in both directions.
    await bob.send_text(room_id, "bob after the gap")
    await eventually(lambda: _has(carol, room_id, "bob after the gap"), timeout=FED_TIMEOUT)
    return room_id


async def _room_event_ids(hs: Homeserver, room_id: str) -> list[str]:
    """Every event id of the room on ``hs``, walking prev_events back from the forward extremities."""
    seen: set[str] = set()
    todo = list(await hs.storage.events.get_forward_extremities(room_id))
    while todo:
        event_id = todo.pop()
        if event_id not in seen:
            seen.add(event_id)
            todo.extend(await hs.storage.events.get_prev_event_ids(event_id))
    return sorted(seen)


@pytest.mark.parametrize("gap_check", [False, True], ids=["synapse_fix_only", "both_fixes"])
async def test_ranvier_joins_a_synapse_room_across_a_gap(
    synapse: SynapseServer, ranvier: Homeserver, session: aiohttp.ClientSession, gap_check: bool
) -> None:
    # Without our own check, only Synapse's dummy event (sent while it still handles our send_join, so
    # possibly before its answer reaches us) can bring the missed message.
    ranvier.remote_membership.gap_check = gap_check
    room_id = await _join_synapse_room_across_a_gap(
        synapse, ranvier, session, "new" if gap_check else "dummy"
    )
    if not gap_check:
        # The message came through Synapse's dummy event (it cites the join and the missed message).
        events = await ranvier.storage.events.get_events(await _room_event_ids(ranvier, room_id))
        assert any(
            e.type == "org.matrix.dummy_event" and e.sender.endswith(":" + synapse.server_name)
            for e in events.values()
        )


async def test_ranvier_joins_an_old_synapse_room_across_a_gap(
    old_synapse: SynapseServer,
    tmp_path: Path,
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ranvier = await start_server(tmp_path / "ranvier-old-peer")
    try:
        assert ranvier.remote_membership.gap_check  # the joiner-side detection is all there is here
        with caplog.at_level(logging.INFO, logger="ranvier.rooms.remote_join"):
            await _join_synapse_room_across_a_gap(old_synapse, ranvier, session, "old")
        # It was our check that found the unknown forward extremity (Synapse 1.155 sends no dummy event).
        assert any("join gap in" in r.getMessage() for r in caplog.records)
    finally:
        await ranvier.stop()


async def test_synapse_joins_a_ranvier_room_across_a_gap(
    synapse: SynapseServer, tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    proxy_port = free_port()
    proxy = DelayProxy(tmp_path / "proxy", proxy_port)
    await proxy.start()
    ranvier = await start_ranvier_behind(tmp_path / "ranvier", f"127.0.0.1:{proxy_port}")
    try:
        proxy.upstream = f"https://127.0.0.1:{ranvier.ports['federation']}"
        alice = await Client.register(session, ranvier, "alice")
        dave = await SynapseClient.register_on(session, synapse, "gap_dave_proxy")
        room_id = await alice.create_room()
        await alice.send_text(room_id, "old news")

        proxy.hold_send_join = True
        join = asyncio.create_task(dave.ok("POST", f"/join/{room_id}", {}, server_name=ranvier.server_name))
        await asyncio.wait_for(proxy.send_join_arrived.wait(), FED_TIMEOUT)
        # Synapse holds its join template; the room moves on under it.
        await alice.send_text(room_id, "said during the handshake")
        proxy.release()
        await asyncio.wait_for(join, FED_TIMEOUT)

        async def joiner_has_it() -> bool:
            return "said during the handshake" in await dave.texts(room_id)

        await eventually(joiner_has_it, timeout=FED_TIMEOUT)
        assert proxy.send_join_forwarded_at is not None
        _figure(
            f"Ranvier -> Synapse {synapse.version} joiner (through the proxy)",
            asyncio.get_running_loop().time() - proxy.send_join_forwarded_at,
        )
        # Our dummy event tied the join and the missed message together.
        assert len(await ranvier.storage.events.get_forward_extremities(room_id)) == 1
        await dave.send_text(room_id, "dave after the gap")
        await eventually(lambda: _has(alice, room_id, "dave after the gap"), timeout=FED_TIMEOUT)
    finally:
        await ranvier.stop()
        await proxy.close()


async def _has(client: Client, room_id: str, text: str) -> bool:
    return text in await client.texts(room_id)
