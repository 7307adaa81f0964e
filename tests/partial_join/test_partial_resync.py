"""The partial-state resync when the resident goes away: failover to another server of servers_in_room, and
a room whose every server is unreachable (stuck: shown in the admin API and the metrics, usable meanwhile,
completed once a server is back: the resync never gives up)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from ranvier.app import Homeserver
from tests.scenarios.servers import Client, eventually, fed_port_of, start_server

from .helpers import JOINER_ROOMS, ROOM_SIZE, Gate, fill_room, joined_count, lazy_sync

ADMIN_PATH = "/_ranvier/admin/v1/partial_state_rooms"


async def test_resident_gone_fails_over_to_another_server(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a = await start_server(tmp_path / "a", rate_limits={"enabled": False})
    c = await start_server(tmp_path / "c", rate_limits={"enabled": False}, partial_state_joins=False)
    b = await start_server(tmp_path / "b", rate_limits={"enabled": False}, **JOINER_ROOMS)
    servers += [a, b, c]
    alice = await Client.register(session, a, "alice")
    carol = await Client.register(session, c, "carol")
    bob = await Client.register(session, b, "bob")
    room_id = await alice.create_room(name="Failover")
    await fill_room(a, room_id, ROOM_SIZE)
    await carol.ok("POST", f"/join/{room_id}", {}, server_name=a.server_name)
    gate = Gate(b)
    await bob.ok("POST", f"/join/{room_id}", {}, server_name=a.server_name)
    assert await b.storage.partial_state.is_partial(room_id)
    await eventually(lambda: _joined_server(c, room_id, b.server_name))

    await a.stop()  # the resident we joined through is gone before the resync starts
    gate.open()
    await eventually(lambda: _complete(b, room_id), timeout=30)
    record = await b.storage.partial_state.get(room_id)
    assert record is not None and record.attempts == 1
    assert record.last_error is not None and record.last_error.startswith(a.server_name)
    assert await joined_count(b, room_id) == ROOM_SIZE + 3
    assert b.metrics.registry.get_sample_value("ranvier_partial_state_resync_failures_total") == 1
    await eventually(lambda: _gauge_is(b, 0))  # set just after the completion's commit


async def test_stuck_room_is_reported_and_completes_when_a_server_returns(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    a = await start_server(tmp_path / "a", rate_limits={"enabled": False})
    b = await start_server(tmp_path / "b", rate_limits={"enabled": False}, **JOINER_ROOMS)
    servers += [a, b]
    alice = await Client.register(session, a, "alice")
    bob = await Client.register(session, b, "bob")
    admin = await Client.register(session, b, "admin")
    await b.storage.users.set_admin(admin.user_id, True)
    room_id = await alice.create_room(name="Stuck")
    await fill_room(a, room_id, 30)
    gate = Gate(b)
    await bob.ok("POST", f"/join/{room_id}", {}, server_name=a.server_name)
    port = fed_port_of(a)
    await a.stop()
    gate.open()

    async def failed_twice() -> bool:
        record = await b.storage.partial_state.get(room_id)
        return record is not None and record.attempts >= 2

    await eventually(failed_twice, timeout=20)
    listed = await _admin_list(session, b, admin.token)
    assert [r["room_id"] for r in listed] == [room_id]
    entry = listed[0]
    assert entry["attempts"] >= 2 and entry["joined_via"] == a.server_name
    assert entry["last_error"].startswith(a.server_name) and entry["completed_ts"] is None
    assert entry["next_attempt_ts"] is not None and entry["servers_in_room"] == [a.server_name]
    assert b.metrics.registry.get_sample_value("ranvier_partial_state_rooms") == 1
    failures = b.metrics.registry.get_sample_value("ranvier_partial_state_resync_failures_total")
    assert failures is not None and failures >= 2
    # A non-admin may not look.
    async with session.get(_admin_url(b), headers={"Authorization": f"Bearer {bob.token}"}) as resp:
        assert resp.status == 403 and (await resp.json())["errcode"] == "M_FORBIDDEN"

    # Still usable: the room is in a lazy-loading /sync, and bob can send.
    assert room_id in (await lazy_sync(bob))["rooms"]["join"]
    await bob.send_text(room_id, "while stuck")

    # The resident comes back: the resync, still retrying, completes.
    a2 = await start_server(tmp_path / "a", fed_port=port, rate_limits={"enabled": False})
    servers.append(a2)
    await eventually(lambda: _complete(b, room_id), timeout=30)
    assert await joined_count(b, room_id) == 32
    assert await _admin_list(session, b, admin.token) == []
    await eventually(lambda: _gauge_is(b, 0))
    completed = await _admin_list(session, b, admin.token, include_completed="true")
    assert [r["room_id"] for r in completed] == [room_id] and completed[0]["completed_ts"] is not None
    await eventually(lambda: _has_text(alice, a2, room_id, "while stuck"), timeout=30)


def _admin_url(hs: Homeserver) -> str:
    return f"http://127.0.0.1:{hs.ports['client']}{ADMIN_PATH}"


async def _admin_list(
    session: aiohttp.ClientSession, hs: Homeserver, token: str, **params: str
) -> list[dict[str, Any]]:
    async with session.get(
        _admin_url(hs), params=params or None, headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        body = await resp.json()
        assert resp.status == 200, body
        assert body["total"] == len(body["rooms"])
        return list(body["rooms"])


async def _gauge_is(hs: Homeserver, value: float) -> bool:
    return hs.metrics.registry.get_sample_value("ranvier_partial_state_rooms") == value


async def _complete(hs: Homeserver, room_id: str) -> bool:
    record = await hs.storage.partial_state.get(room_id)
    return record is not None and record.complete


async def _joined_server(hs: Homeserver, room_id: str, server: str) -> bool:
    return server in await hs.storage.state.get_joined_servers(room_id)


async def _has_text(client: Client, hs: Homeserver, room_id: str, text: str) -> bool:
    client.hs = hs
    client.base = f"http://127.0.0.1:{hs.ports['client']}/_matrix/client/v3"
    return text in await client.texts(room_id)


async def test_keys_of_a_departed_server_come_from_a_notary(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    """The room's state holds events signed by a server that is gone (Synapse, measured here, gave up on
    such a room for good). Without a notary the room stays partial and says why; with one (here the
    resident) the keys come through it and the resync completes."""
    a = await start_server(tmp_path / "a", rate_limits={"enabled": False})
    c = await start_server(tmp_path / "c", rate_limits={"enabled": False}, partial_state_joins=False)
    servers += [a, c]
    alice = await Client.register(session, a, "alice")
    carol = await Client.register(session, c, "carol")
    room_id = await alice.create_room(name="Departed")
    await fill_room(a, room_id, 30)
    await carol.ok("POST", f"/join/{room_id}", {}, server_name=a.server_name)
    departed = c.server_name
    await c.stop()  # carol stays a member; her join is signed by C, which no longer answers

    joiners = []
    for name, notaries in (("lonely", []), ("helped", [a.server_name])):
        federation = {"verify_tls": False, "allow_loopback": True, "trusted_key_servers": notaries}
        b = await start_server(
            tmp_path / name, rate_limits={"enabled": False}, extra={"federation": federation}, **JOINER_ROOMS
        )
        servers.append(b)
        bob = await Client.register(session, b, "bob")
        await bob.ok("POST", f"/join/{room_id}", {}, server_name=a.server_name)
        joiners.append((b, bob))

    (lonely, _), (helped, bob) = joiners
    joined = (await bob.ok("GET", f"/rooms/{room_id}/joined_members"))["joined"]
    assert carol.user_id in joined and len(joined) == 34  # alice, 30, carol, both bobs
    record = await helped.storage.partial_state.get(room_id)
    assert record is not None and record.complete

    async def stuck_on_keys() -> bool:
        record = await lonely.storage.partial_state.get(room_id)
        return (
            record is not None
            and record.attempts >= 2
            and f"signing keys of {departed}" in (record.last_error or "")
        )

    await eventually(stuck_on_keys, timeout=20)
    record = await lonely.storage.partial_state.get(room_id)
    assert record is not None and not record.complete
