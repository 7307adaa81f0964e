"""Replication between Ranvier servers: what one server's users do reaches every server in the room, a
server that was down catches up from the others' durable outboxes, and a forgery sent by one server is
refused by the others. (Forged PDUs of every kind from a test driver: test_inbound_send.py.)"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ranvier.app import Homeserver
from ranvier.protocol.events import build_event

from .servers import Client, eventually, fed_port_of, start_server


async def three_servers(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession, n: int = 3
) -> tuple[list[Client], str]:
    """Alice (a) made a room; Bob (b) and Carol (c) joined it through a. Returns the clients, room id."""
    for name in "abc"[:n]:
        servers.append(await start_server(tmp_path / name))
    names = ("alice", "bob", "carol")[:n]
    users = [await Client.register(session, hs, name) for hs, name in zip(servers, names, strict=True)]
    room_id = await users[0].create_room(name="Three")
    for user in users[1:]:
        await user.ok("POST", f"/join/{room_id}", {}, server_name=servers[0].server_name)
    await eventually(lambda: _all_joined(users, room_id))
    return users, room_id


async def _all_joined(users: list[Client], room_id: str) -> bool:
    want = {u.user_id for u in users}
    for user in users:
        status, body = await user.call("GET", f"/rooms/{room_id}/joined_members")
        if status != 200 or set(body["joined"]) != want:
            return False
    return True


async def timeline(client: Client, room_id: str) -> list[tuple[str, str, Any]]:
    """(event id, type, content) of the room's timeline as the client's server serves it."""
    return [(e["event_id"], e["type"], e["content"]) for e in await client.messages(room_id, limit=200)]


async def state_of(client: Client, room_id: str) -> dict[tuple[str, str], str]:
    events = await client.ok("GET", f"/rooms/{room_id}/state")
    return {(e["type"], e["state_key"]): e["event_id"] for e in events}


async def same_everywhere(users: list[Client], room_id: str, must_have: set[str]) -> bool:
    """Every server serves the same timeline (holding ``must_have``) and the same current state."""
    timelines = [await timeline(u, room_id) for u in users]
    if not must_have <= {e for e, _, _ in timelines[0]}:
        return False
    if any(sorted(t) != sorted(timelines[0]) for t in timelines[1:]):
        return False
    states = [await state_of(u, room_id) for u in users]
    return all(s == states[0] for s in states[1:])


@pytest.mark.parametrize("n", [2, 3])
async def test_messages_state_and_redactions_reach_every_server(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession, n: int
) -> None:
    users, room_id = await three_servers(tmp_path, servers, session, n)
    alice, bob, last = users[0], users[1], users[-1]
    sent = {await user.send_text(room_id, f"from {user.user_id}") for user in users}
    topic = await alice.ok("PUT", f"/rooms/{room_id}/state/m.room.topic", {"topic": "replicated"})
    levels = await alice.ok("GET", f"/rooms/{room_id}/state/m.room.power_levels")
    levels["users"][bob.user_id] = 50  # enough to redact others' events (redact defaults to 50)
    power = await alice.ok("PUT", f"/rooms/{room_id}/state/m.room.power_levels", levels)
    sent |= {topic["event_id"], power["event_id"]}
    await eventually(lambda: same_everywhere(users, room_id, sent), timeout=20)

    # Bob (b) redacts the last user's message (Carol's, of c, with three servers): the power check happens
    # on every server (v3+: when the redaction is applied). Alice redacts her own.
    def find(body: str) -> str:
        return next(e for e, _, c in timelines[0] if c.get("body") == body)

    timelines = [await timeline(alice, room_id)]
    lasts, alices = find(f"from {last.user_id}"), find(f"from {alice.user_id}")
    redaction = await bob.ok("PUT", f"/rooms/{room_id}/redact/{lasts}/r1", {"reason": "tidy"})
    own = await alice.ok("PUT", f"/rooms/{room_id}/redact/{alices}/r2", {})

    async def redacted_everywhere() -> bool:
        for user in users:
            contents = {e: c for e, _, c in await timeline(user, room_id)}
            if contents.get(lasts) != {} or contents.get(alices) != {}:
                return False
        return await same_everywhere(users, room_id, {redaction["event_id"], own["event_id"]})

    await eventually(redacted_everywhere, timeout=20)
    kept = {f"from {u.user_id}" for u in users[1:-1]}  # the messages nobody redacted
    for user in users:
        assert (await user.ok("GET", f"/rooms/{room_id}/state/m.room.topic")) == {"topic": "replicated"}
        pl = await user.ok("GET", f"/rooms/{room_id}/state/m.room.power_levels")
        assert pl["users"][bob.user_id] == 50
        texts = [c["body"] for _, t, c in await timeline(user, room_id) if t == "m.room.message" and c]
        assert sorted(texts) == sorted(kept)


async def test_a_server_that_was_down_catches_up_from_the_outboxes(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    (alice, bob, carol), room_id = await three_servers(tmp_path, servers, session)
    a, b, c = servers
    port = fed_port_of(c)
    await c.stop()

    sent = {await alice.send_text(room_id, f"while c was down {i}") for i in range(5)}
    sent.add(await bob.send_text(room_id, "b also spoke"))
    topic = await alice.ok("PUT", f"/rooms/{room_id}/state/m.room.topic", {"topic": "missed"})
    sent.add(topic["event_id"])

    async def failed_to_reach_c() -> bool:
        retries = [await hs.storage.outbox.get_retry(c.server_name) for hs in (a, b)]
        return all(r is not None for r in retries)

    await eventually(failed_to_reach_c, timeout=20)  # both are backing off; the events wait in the outboxes

    c2 = await start_server(tmp_path / "c", fed_port=port)
    servers.append(c2)
    carol.hs = c2
    carol.base = f"http://127.0.0.1:{c2.ports['client']}/_matrix/client/v3"

    # c shows it is up again by speaking: a and b, backing off towards it, take its transaction as the
    # sign to retry now (FederationSender.mark_reachable) instead of waiting out the back-off.
    sent.add(await carol.send_text(room_id, "c is back"))

    async def caught_up() -> bool:
        return await same_everywhere([alice, bob, carol], room_id, sent)

    await eventually(caught_up, timeout=30)
    assert (await carol.ok("GET", f"/rooms/{room_id}/state/m.room.topic")) == {"topic": "missed"}
    for hs in (a, b):
        await eventually(lambda hs=hs: _outbox_drained(hs, c.server_name))


async def _outbox_drained(hs: Homeserver, destination: str) -> bool:
    return bool(await hs.storage.outbox.pending_count(destination) == 0)


async def test_a_forgery_relayed_by_one_server_is_refused_by_the_others(
    tmp_path: Path, servers: list[Homeserver], session: aiohttp.ClientSession
) -> None:
    (alice, bob, carol), room_id = await three_servers(tmp_path, servers, session)
    a, b, c = servers
    last = await alice.send_text(room_id, "genuine")
    await eventually(lambda: same_everywhere([alice, bob, carol], room_id, {last}))

    # b makes an event in Alice's name (a's user), signed with b's key only: the wrong origin.
    rv = await b.storage.rooms.get_room_version(room_id)
    state = await b.storage.state.get_current_state_ids(room_id)
    auth = [state[k] for k in (("m.room.create", ""), ("m.room.power_levels", ""))]
    auth.append(state[("m.room.member", alice.user_id)])
    forged = build_event(
        room_version=rv,
        room_id=room_id,
        sender=alice.user_id,
        event_type="m.room.message",
        content={"msgtype": "m.text", "body": "forged"},
        prev_events=await b.storage.events.get_forward_extremities(room_id),
        auth_events=auth,
        depth=1000,
        origin_server_ts=int(time.time() * 1000),
        server_name=b.server_name,
        signing_key=b.signing_key,
    )
    for target in (a, c):
        answer = await b.federation_client.send_transaction(
            target.server_name,
            f"forge-{target.server_name}",
            origin_server_ts=forged.origin_server_ts,
            pdus=[forged.to_federation()],
            edus=[],
        )
        assert answer["pdus"][forged.event_id].get("error"), answer

    for user, hs in ((alice, a), (carol, c)):
        assert forged.event_id not in {e for e, _, _ in await timeline(user, room_id)}
        assert await hs.storage.events.get_event(forged.event_id, allow_rejected=True) is None
        status, _ = await user.call("GET", f"/rooms/{room_id}/event/{forged.event_id}")
        assert status == 404
    # And the room carries on.
    after = await carol.send_text(room_id, "still fine")
    await eventually(lambda: same_everywhere([alice, bob, carol], room_id, {after}))
