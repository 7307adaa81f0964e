"""rooms.encryption_enabled_by_default_for_room_type: which new rooms start end-to-end encrypted (Synapse's
key of the same name), and that a client's own m.room.encryption in initial_state is kept as it asked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from ranvier.app import Homeserver
from tests.scenarios.servers import Client, start_server


async def _encryption(alice: Client, body: dict[str, Any]) -> Any:
    status, answer = await alice.call("POST", "/createRoom", body)
    assert status == 200, answer
    status, content = await alice.call("GET", f"/rooms/{answer['room_id']}/state/m.room.encryption/")
    return content if status == 200 else None


async def _check(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession, setting: str
) -> dict[str, Any]:
    hs = await start_server(tmp_path / setting, encryption_enabled_by_default_for_room_type=setting)
    servers.append(hs)
    alice = await Client.register(session, hs, "alice")
    own = {
        "type": "m.room.encryption",
        "state_key": "",
        "content": {"algorithm": "m.megolm.v1.aes-sha2", "rotation_period_msgs": 7},
    }
    return {
        "private": await _encryption(alice, {"preset": "private_chat"}),
        "trusted": await _encryption(alice, {"preset": "trusted_private_chat"}),
        "public": await _encryption(alice, {"preset": "public_chat"}),
        "own": await _encryption(alice, {"preset": "public_chat", "initial_state": [own]}),
    }


MEGOLM = {"algorithm": "m.megolm.v1.aes-sha2"}
OWN = {"algorithm": "m.megolm.v1.aes-sha2", "rotation_period_msgs": 7}


async def test_off_leaves_it_to_the_client(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    got = await _check(tmp_path, servers, session, "off")
    assert got == {"private": None, "trusted": None, "public": None, "own": OWN}


async def test_invite_encrypts_the_private_presets(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    got = await _check(tmp_path, servers, session, "invite")
    assert got == {"private": MEGOLM, "trusted": MEGOLM, "public": None, "own": OWN}


async def test_all_encrypts_every_new_room(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    got = await _check(tmp_path, servers, session, "all")
    assert got == {"private": MEGOLM, "trusted": MEGOLM, "public": MEGOLM, "own": OWN}
