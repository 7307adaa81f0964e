"""Shared pieces of the partial-state join tests (Ranvier joining Ranvier with ``omit_members``)."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from ranvier.app import Homeserver
from ranvier.clock import now_ms
from ranvier.protocol.auth import check_auth_rules
from ranvier.protocol.auth.selection import auth_types_for_event
from ranvier.protocol.events import build_event
from ranvier.storage.interfaces import EventToPersist, StateDelta
from tests.scenarios.servers import Client

# Members of the resident's room: 200 by default, 5,000 with RANVIER_LONG=1.
ROOM_SIZE = 5000 if os.environ.get("RANVIER_LONG") == "1" else 200
BATCH = 500  # join events persisted per transaction by fill_room
LAZY_FILTER = json.dumps({"room": {"state": {"lazy_load_members": True}}})
# Fast retries and a short wait of an initial non-lazy /sync, so the tests see both behaviours quickly.
JOINER_ROOMS: dict[str, Any] = {"partial_state_retry_initial": 0.2, "partial_state_retry_max": 1.0}


async def fill_room(hs: Homeserver, room_id: str, count: int, prefix: str = "m") -> list[str]:
    """``count`` members of ``hs`` join ``room_id``: real join events (built, hashed and signed with the
    server's key, each authorised against the state before it, a chain of prev events), persisted through
    storage in batches with the current-state delta. Far faster than one client /join each (5,000 members
    in seconds); the users need no account. The room is new: no other server is told."""
    rv = await hs.storage.rooms.get_room_version(room_id)
    assert rv is not None
    users = [f"@{prefix}{i}:{hs.server_name}" for i in range(count)]
    async with hs.persister.room_lock(room_id):
        current = await hs.storage.state.get_current_state_ids(room_id)
        (tip,) = await hs.storage.events.get_forward_extremities(room_id)
        depth = await hs.storage.events.get_max_depth_of([tip])
        for start in range(0, count, BATCH):
            batch: list[EventToPersist] = []
            for user in users[start : start + BATCH]:
                content = {"membership": "join", "displayname": f"M {user[len(prefix) + 1 :].split(':')[0]}"}
                keys = auth_types_for_event(rv, "m.room.member", user, user, content)
                auth = sorted(current[k] for k in keys if k in current)
                depth += 1
                pdu = build_event(
                    room_version=rv,
                    room_id=room_id,
                    sender=user,
                    event_type="m.room.member",
                    content=content,
                    prev_events=[tip],
                    auth_events=auth,
                    depth=depth,
                    origin_server_ts=now_ms(),
                    server_name=hs.server_name,
                    signing_key=hs.signing_key,
                    state_key=user,
                )
                # The rules see the create event in every version (v12 no longer cites it).
                wanted = [k for k in keys | {("m.room.create", "")} if k in current]
                loaded = await hs.storage.events.get_events([current[k] for k in wanted])
                check_auth_rules(pdu, {k: loaded[current[k]] for k in wanted})
                batch.append(EventToPersist(pdu=pdu, state_before_is_after_prev=True))
                current[("m.room.member", user)] = pdu.event_id
                tip = pdu.event_id
            changed = {("m.room.member", item.pdu.sender): item.pdu.event_id for item in batch}
            await hs.storage.events.persist_events(
                room_id, batch, new_current_state=StateDelta(changed=changed)
            )
    return users


class Gate:
    """Holds a server's partial-state resync before each attempt until opened."""

    def __init__(self, hs: Homeserver) -> None:
        self.opened = asyncio.Event()
        self.reached = asyncio.Event()
        hs.partial_resync.before_attempt = self._wait

    async def _wait(self, room_id: str, server: str) -> None:
        self.reached.set()
        await self.opened.wait()

    def open(self) -> None:
        self.opened.set()


async def lazy_sync(client: Client, since: str | None = None) -> dict[str, Any]:
    params = {"timeout": "0", "filter": LAZY_FILTER}
    if since is not None:
        params["since"] = since
    return dict(await client.ok("GET", "/sync", **params))


async def plain_sync(client: Client, since: str | None = None) -> dict[str, Any]:
    params = {"timeout": "0"}
    if since is not None:
        params["since"] = since
    return dict(await client.ok("GET", "/sync", **params))


async def joined_count(hs: Homeserver, room_id: str) -> int:
    return len(await hs.storage.state.get_joined_users(room_id))
