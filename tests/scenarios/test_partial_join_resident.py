"""The resident side of partial-state joins (S2S send_join v2 with omit_members, MSC3706/MSC3943): the
answer carries the non-member state, the heroes' member events in a nameless room, the servers in the
room, and an auth chain that leaves out what the state already carries yet is complete for it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ranvier.app import Homeserver
from ranvier.protocol.events import Pdu, build_event
from ranvier.protocol.room_versions import RoomVersion, get_room_version
from tests.scenarios.inbound_driver import Driver, start_driver

from .servers import Client, start_server

MEMBERS = 7  # the five heroes and two more


async def _room_with_members(tmp_path: Path, name: str | None) -> tuple[Homeserver, Driver, str, list[str]]:
    hs = await start_server(tmp_path / "hs", rate_limits={"enabled": False})
    driver = await start_driver(tmp_path)
    async with aiohttp.ClientSession() as session:
        alice = await Client.register(session, hs, "alice")
        body: dict[str, Any] = {"preset": "public_chat"}
        if name is not None:
            body["name"] = name
        room_id = await alice.create_room(**body)
        members = [alice.user_id]
        for i in range(MEMBERS - 1):
            user = await Client.register(session, hs, f"member{i}")
            await user.ok("POST", f"/join/{room_id}", {})
            members.append(user.user_id)
    return hs, driver, room_id, members


async def _send_join(
    hs: Homeserver, driver: Driver, room_id: str, omit: bool, localpart: str
) -> tuple[dict[str, Any], RoomVersion]:
    user = driver.user(localpart)
    client = driver.fed.client
    template = await client.make_join(hs.server_name, room_id, user, [str(v) for v in range(1, 13)])
    rv = get_room_version(template["room_version"])
    t = template["event"]
    join = build_event(
        room_version=rv,
        room_id=room_id,
        sender=user,
        event_type="m.room.member",
        content={"membership": "join"},
        prev_events=t["prev_events"],
        auth_events=t["auth_events"],
        depth=t["depth"],
        origin_server_ts=t["origin_server_ts"],
        server_name=driver.server_name,
        signing_key=driver.fed.keyring.signing_key,
        state_key=user,
    )
    answer = await client.send_join_v2(hs.server_name, room_id, join.event_id, join.json, omit_members=omit)
    return answer, rv


@pytest.mark.parametrize("name", [None, "Named room"])
async def test_omit_members_answer(tmp_path: Path, name: str | None) -> None:
    hs, driver, room_id, members = await _room_with_members(tmp_path, name)
    try:
        partial, rv = await _send_join(hs, driver, room_id, omit=True, localpart="partial")
        assert partial["members_omitted"] is True
        assert partial["servers_in_room"] == [hs.server_name]
        state_types = sorted((e["type"], e["state_key"]) for e in partial["state"])
        member_keys = [k for t, k in state_types if t == "m.room.member"]
        if name is None:
            # MSC3943: the heroes (the first five other members, in the order they joined).
            assert member_keys == sorted(members[:5])
        else:
            assert member_keys == []
        assert ("m.room.create", "") in state_types and ("m.room.power_levels", "") in state_types
        # The auth chain leaves out what is in state, and together they hold every auth event of both.
        state_ids = {_id(e, rv) for e in partial["state"]}
        chain_ids = {_id(e, rv) for e in partial["auth_chain"]}
        assert not state_ids & chain_ids
        held = state_ids | chain_ids
        for event in [*partial["state"], *partial["auth_chain"], partial["event"]]:
            assert set(event["auth_events"]) <= held

        # Another user of the same server asking for the full state gets every member (the first joiner
        # included) and a bigger answer.
        full, _ = await _send_join(hs, driver, room_id, omit=False, localpart="full")
        assert full["members_omitted"] is False
        assert sum(1 for e in full["state"] if e["type"] == "m.room.member") == MEMBERS + 1
        assert len(str(partial)) < len(str(full))
    finally:
        await driver.close()
        await hs.stop()


def _id(event: dict[str, Any], rv: RoomVersion) -> str:
    return Pdu(event, rv).event_id
