"""Room check (ranvier/rooms/room_check.py): a room compared with every server in it; divergent state,
events we lack and events they lack are reported, and healed when asked; the `ranvier room-check` command
prints the same report."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ranvier import cli
from ranvier.app import Homeserver
from tests.scenarios.inbound_driver import auth_events_for
from tests.scenarios.servers import Client, eventually, start_server
from tests.scenarios.test_inbound_send import Room, room  # noqa: F401 - the fixture


async def _check(base: str, token: str, room_id: str, heal: bool = False) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{base}/_ranvier/admin/v1/rooms/{room_id}/check",
            json={"heal": heal},
            headers={"Authorization": f"Bearer {token}"},
        ) as resp,
    ):
        return resp.status, await resp.json()


async def test_divergent_state_and_an_event_we_lack_are_found_and_healed(room: Room) -> None:  # noqa: F811
    status, body = await _check(room.alice.base, room.alice.token, room.room_id)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    await room.hs.storage.users.set_admin(room.alice.user_id, True)
    status, body = await _check(room.alice.base, room.alice.token, "!unknown:nowhere")
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"

    last = room.message("the newest event")
    assert await room.send([last]) == {last.event_id: {}}
    status, report = await _check(room.alice.base, room.alice.token, room.room_id)
    assert status == 200, report
    assert report["our_extremities"] == [last.event_id]
    (server,) = report["servers"]
    assert server["server"] == room.driver.server_name
    assert server["extremities"] is None  # the driver serves no MSC4370 endpoint
    assert report["agrees"] is True and server["divergent_state"] == {last.event_id: []}

    # The driver now claims another state before our newest event: no join rules, and a display name
    # change of Bob's that we never received (it serves that event, so its key is learnt).
    ours = await room.hs.storage.state.get_state_ids_before(last.event_id)
    join_rules, bobs_join = ours[("m.room.join_rules", "")], ours[("m.room.member", room.bob)]
    content = {"membership": "join", "displayname": "Bob only the driver knows"}
    rename = room.driver.build(
        room.rv,
        room.room_id,
        room.bob,
        "m.room.member",
        content,
        [last],
        auth_events_for(room.rv, room.state, "m.room.member", room.bob, content, room.bob),
        state_key=room.bob,
    )
    room.driver.state_before[rename.event_id] = list(ours.values())
    room.driver.state_before[last.event_id] = [
        *(e for e in ours.values() if e not in (join_rules, bobs_join)),
        rename.event_id,
    ]
    status, report = await _check(room.alice.base, room.alice.token, room.room_id)
    (server,) = report["servers"]
    assert report["agrees"] is False
    assert sorted(
        (d["type"], d["state_key"], d["ours"], d["theirs"]) for d in server["divergent_state"][last.event_id]
    ) == [
        ("m.room.join_rules", "", join_rules, None),
        ("m.room.member", room.bob, bobs_join, rename.event_id),
    ]
    assert server["events_we_lack"] == [rename.event_id]

    # Healing fetches the rename from the driver and runs it through the inbound pipeline.
    status, report = await _check(room.alice.base, room.alice.token, room.room_id, heal=True)
    (server,) = report["servers"]
    assert server["healed"]["fetched"] == {rename.event_id: "taken"}
    member = await room.hs.storage.state.get_current_state_event(room.room_id, "m.room.member", room.bob)
    assert member is not None and member.content["displayname"] == "Bob only the driver knows"


async def _pair(tmp_path: Path, session: aiohttp.ClientSession) -> tuple[Homeserver, Homeserver, Client, str]:
    a = await start_server(tmp_path / "a")
    b = await start_server(tmp_path / "b")
    alice = await Client.register(session, a, "alice")
    bob = await Client.register(session, b, "bob")
    room_id = await alice.create_room(preset="public_chat")
    await bob.ok("POST", f"/join/{room_id}", {}, server_name=a.server_name)
    await a.storage.users.set_admin(alice.user_id, True)
    return a, b, bob, room_id


async def test_two_ranvier_servers_events_either_side_lacks(tmp_path: Path, capsys: Any) -> None:
    async with aiohttp.ClientSession() as session:
        a, b, bob, room_id = await _pair(tmp_path, session)
        try:
            alice_token = (await Client.register(session, a, "admin")).token
            await a.storage.users.set_admin(f"@admin:{a.server_name}", True)
            base = f"http://127.0.0.1:{a.ports['client']}"

            async def agrees() -> bool:
                return bool((await _check(base, alice_token, room_id))[1]["agrees"])

            await eventually(agrees, timeout=20)

            # B's sender stops: B's next message never reaches A; A's check finds it through B's newest
            # events (MSC4370) and heals by fetching it.
            await b.federation_sender.stop()
            missed = await bob.send_text(room_id, "sent while B could not send")
            _, report = await _check(base, alice_token, room_id)
            (server,) = report["servers"]
            assert server["extremities"] == [missed] and server["events_we_lack"] == [missed]
            # The command prints the same report and exits 1 (something differs).
            code = await asyncio.to_thread(
                cli.main, ["room-check", room_id, "--url", base, "--access-token", alice_token]
            )
            out = capsys.readouterr().out
            assert code == 1 and f"we lack {missed}" in out and "DIFFERS" in out
            code = await asyncio.to_thread(
                cli.main, ["room-check", room_id, "--url", base, "--access-token", alice_token, "--heal"]
            )
            assert code == 1 and "healed" in capsys.readouterr().out
            assert await a.storage.events.get_event(missed) is not None

            # A's sender stops: A's next message is an event B lacks; healing queues it for B.
            await a.federation_sender.stop()
            alice = Client(session, a, f"@admin:{a.server_name}", alice_token)
            await alice.ok("POST", f"/join/{room_id}", {})
            _, report = await _check(base, alice_token, room_id)
            (server,) = report["servers"]
            lacking = server["events_they_lack"]
            assert lacking == sorted(await a.storage.events.get_forward_extremities(room_id))
            _, report = await _check(base, alice_token, room_id, heal=True)
            assert report["servers"][0]["healed"]["queued_for_them"] == lacking
            pending = await a.storage.outbox.pending_counts()
            assert pending[b.server_name][0] >= 1
        finally:
            await b.stop()
            await a.stop()


@pytest.mark.parametrize("args", [["room-check", "!r:x"], ["room-check", "!r:x", "--access-token", "t"]])
def test_the_command_needs_a_token_and_an_address(args: list[str], monkeypatch: Any) -> None:
    monkeypatch.delenv("RANVIER_ADMIN_TOKEN", raising=False)
    assert cli.main(args) == 2
