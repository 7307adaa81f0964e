"""Remote joins between in-process Ranvier servers, and the make_join/send_join gap from both sides."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from ranvier.app import Homeserver
from ranvier.federation.client import FederationError

from .servers import Client, eventually, start_server


async def test_remote_join_and_messages_both_ways(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a = await start_server(tmp_path / "a")
    b = await start_server(tmp_path / "b")
    servers += [a, b]
    alice = await Client.register(session, a, "alice")
    bob = await Client.register(session, b, "bob")
    room_id = await alice.create_room(name="Federated")
    await alice.send_text(room_id, "before bob")

    await bob.ok("POST", f"/join/{room_id}", {}, server_name=a.server_name)
    sync = await bob.sync()
    assert room_id in sync["rooms"]["join"]
    state = sync["rooms"]["join"][room_id]["state"]["events"]
    assert any(e["type"] == "m.room.name" and e["content"]["name"] == "Federated" for e in state)

    await bob.send_text(room_id, "hello from b")
    await alice.send_text(room_id, "hello from a")

    async def both_see_both() -> bool:
        for client in (alice, bob):
            if not {"hello from a", "hello from b"} <= set(await client.texts(room_id)):
                return False
        return True

    await eventually(both_see_both)
    members = await alice.ok("GET", f"/rooms/{room_id}/joined_members")
    assert set(members["joined"]) == {alice.user_id, bob.user_id}


async def test_gap_event_reaches_the_joiner_through_the_dummy_event(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a = await start_server(tmp_path / "a")
    b = await start_server(tmp_path / "b")
    servers += [a, b]
    b.remote_membership.gap_check = False  # only the resident's fix is under test here
    alice = await Client.register(session, a, "alice")
    bob = await Client.register(session, b, "bob")
    room_id = await alice.create_room()
    await alice.send_text(room_id, "old news")

    async def message_in_the_gap(_room: str) -> None:
        await alice.send_text(room_id, "said during the handshake")

    b.remote_membership.before_send_join = message_in_the_gap
    await bob.ok("POST", f"/join/{room_id}", {}, server_name=a.server_name)

    async def joiner_has_it() -> bool:
        return "said during the handshake" in await bob.texts(room_id)

    took = await eventually(joiner_has_it, timeout=5)
    assert took < 1.0, f"the missed event took {took:.2f}s to reach the joiner"
    timeline = await bob.messages(room_id)
    order = [e["event_id"] for e in timeline]
    missed = next(e for e in timeline if e["content"].get("body") == "said during the handshake")
    join = next(e for e in timeline if e["type"] == "m.room.member" and e["state_key"] == bob.user_id)
    assert order.index(missed["event_id"]) < order.index(join["event_id"])
    # The dummy event tied the join and the missed event together on the resident.
    assert len(await a.storage.events.get_forward_extremities(room_id)) == 1


async def test_joiner_detects_the_gap_without_the_residents_fix(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a = await start_server(tmp_path / "a", join_gap_dummy_event=False)
    b = await start_server(tmp_path / "b")
    servers += [a, b]
    alice = await Client.register(session, a, "alice")
    bob = await Client.register(session, b, "bob")
    room_id = await alice.create_room()
    gap = [f"unreferenced by the join {i}" for i in range(3)]

    async def messages_in_the_gap(_room: str) -> None:
        for text in gap:
            await alice.send_text(room_id, text)

    b.remote_membership.before_send_join = messages_in_the_gap
    await bob.ok("POST", f"/join/{room_id}", {}, server_name=a.server_name)
    # The join returns once the gap check (MSC4370 extremities, then /get_missing_events) has run.
    timeline = await bob.messages(room_id)
    assert [e["content"].get("body") for e in timeline if e["type"] == "m.room.message"] == gap
    # /messages orders the missed events before the join that did not reference them ...
    ids = [e["event_id"] for e in timeline]
    join_index = next(
        i for i, e in enumerate(timeline) if e["type"] == "m.room.member" and e["state_key"] == bob.user_id
    )
    assert all(ids.index(e["event_id"]) < join_index for e in timeline if e["type"] == "m.room.message")
    # ... and /sync tells the client about them.
    sync = await bob.sync()
    synced = [e["content"].get("body") for e in sync["rooms"]["join"][room_id]["timeline"]["events"]]
    assert all(text in synced for text in gap)
    # The resident did not tie the extremities together: the gap was closed by the joiner alone.
    assert len(await a.storage.events.get_forward_extremities(room_id)) == 2


async def test_extremities_endpoint_msc4370(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a = await start_server(tmp_path / "a")
    b = await start_server(tmp_path / "b")
    servers += [a, b]
    alice = await Client.register(session, a, "alice")
    room_id = await alice.create_room()
    path = "/_matrix/federation/unstable/org.matrix.msc4370/extremities/"
    with pytest.raises(FederationError) as not_member:
        await b.federation_client.request("GET", a.server_name, path + room_id)
    assert not_member.value.status == 403
    with pytest.raises(FederationError) as unknown:
        await b.federation_client.request("GET", a.server_name, path + "!nope:" + a.server_name)
    assert unknown.value.status == 404
    bob = await Client.register(session, b, "bob")
    await bob.ok("POST", f"/join/{room_id}", {}, server_name=a.server_name)
    answer = await b.federation_client.request("GET", a.server_name, path + room_id)
    assert answer["prev_events"] == await a.storage.events.get_forward_extremities(room_id)


async def test_third_server_is_not_disturbed_by_a_gap_join(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a, b, c = [await start_server(tmp_path / n) for n in "abc"]
    servers += [a, b, c]
    alice = await Client.register(session, a, "alice")
    bob = await Client.register(session, b, "bob")
    carol = await Client.register(session, c, "carol")
    room_id = await alice.create_room()
    await carol.ok("POST", f"/join/{room_id}", {}, server_name=a.server_name)
    await carol.send_text(room_id, "carol was here first")

    async def message_in_the_gap(_room: str) -> None:
        await alice.send_text(room_id, "gap message")

    b.remote_membership.before_send_join = message_in_the_gap
    await bob.ok("POST", f"/join/{room_id}", {}, server_name=a.server_name)
    await eventually(lambda: _has(bob, room_id, "gap message"))
    await bob.send_text(room_id, "bob speaks")
    for client in (alice, carol):
        await eventually(lambda client=client: _has(client, room_id, "bob speaks"))
    carol_texts = await carol.texts(room_id)
    assert carol_texts.count("gap message") == 1
    assert carol_texts.index("carol was here first") < carol_texts.index("gap message")


async def test_pdus_arriving_during_a_slow_join_are_all_processed(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a = await start_server(tmp_path / "a")
    b = await start_server(tmp_path / "b")
    servers += [a, b]
    alice = await Client.register(session, a, "alice")
    bob = await Client.register(session, b, "bob")
    room_id = await alice.create_room()
    sent = [f"while joining {i}" for i in range(5)]

    async def slow_join(_room: str) -> None:
        # The resident has accepted the join: what Alice sends now is pushed to B before B has
        # persisted the join, and B must queue it rather than refuse it.
        for text in sent:
            await alice.send_text(room_id, text)

        async def queued() -> bool:
            return await b.storage.pending_join_pdus.count_for_room(room_id) >= len(sent)

        await eventually(queued)

    b.remote_membership.after_send_join = slow_join
    await bob.ok("POST", f"/join/{room_id}", {}, server_name=a.server_name)

    async def all_there() -> bool:
        texts = await bob.texts(room_id)
        return all(t in texts for t in sent)

    await eventually(all_there)
    assert await b.storage.pending_join_pdus.count_for_room(room_id) == 0


async def _has(client: Client, room_id: str, text: str) -> bool:
    return text in await client.texts(room_id)


@pytest.fixture(autouse=True)
def _quiet_loop_debug() -> None:
    asyncio.get_event_loop_policy()
