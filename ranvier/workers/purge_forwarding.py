"""A room's purge (the admin API's room deletion) runs in the process that persists the room.

The purge deletes every row of the room in one transaction. Run where the admin request arrives, it could
interleave with the room's persister writing an event of that room (an inbound PDU, a leave of the
shutdown) and leave rows behind, and only the purging process's caches would forget the room. So the purge
is handed to the room's persister, which runs it under the room's lock (no event of the room is being
computed or persisted meanwhile), then tells every other process over the bus to forget what it caches of
the room (its current state, its version, its events), as a state change announced by the persister would.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..rooms.persister import EventPersister
from ..storage.sql.engine import Database
from ..storage.sql.purge import purge_room
from .replication_http import ReplicationClient, bad_json, internal_body, not_owned, post_internal
from .roles import RolePlan

if TYPE_CHECKING:
    from ..storage.sql.purge import PurgeStorage
    from .bus import Bus  # redis-py: imported only where a process runs the bus (tests/test_idle_imports.py)

logger = logging.getLogger(__name__)

PURGE_PATH = "/_ranvier/replication/v1/purge_room"
# Above this many events the bus message names only the room and every process empties its event cache:
# a purge is a rare admin action, a message with a big room's every event id is not worth it.
MAX_ANNOUNCED_EVENTS = 2000

Purge = Callable[[str], Awaitable[int]]


class PurgeRefusedByOwner(Exception):
    """The room's persister answered the purge with an error (its message is in the exception)."""


def owner_purge(db: Database, storage: PurgeStorage, persister: EventPersister, bus: Bus | None) -> Purge:
    """The purge as the room's persister runs it: under the room's lock, then announced on the bus."""

    async def purge(room_id: str) -> int:
        async with persister.room_lock(room_id):
            event_ids = await purge_room(db, storage, room_id)
        if bus is not None:
            body: dict[str, Any] = {"r": room_id}
            if len(event_ids) <= MAX_ANNOUNCED_EVENTS:
                body["e"] = event_ids
            bus.publish("purged", body)
        return len(event_ids)

    return purge


def forwarding_purge(plan: RolePlan, replication: ReplicationClient, local: Purge) -> Purge:
    """The purge as any process asks for it: run here if this process persists the room, else by its
    persister (answered after its commit)."""

    async def purge(room_id: str) -> int:
        owner = plan.persister_of(room_id)
        if owner == plan.name:
            return await local(room_id)
        replication.counts["purge"] += 1
        # A big room's purge takes a while: the default replication timeout is for single requests.
        status, answer = await post_internal(
            replication, owner, PURGE_PATH, {"room_id": room_id}, timeout=600
        )
        purged = answer.get("purged")
        if status != 200 or not isinstance(purged, int) or isinstance(purged, bool):
            raise PurgeRefusedByOwner(f"{owner} did not purge {room_id}: {answer.get('error', answer)}")
        return purged

    return purge


def add_purge_route(app: web.Application, secret: str, plan: RolePlan, local: Purge) -> None:
    """The persister's side of ``forwarding_purge``."""

    async def purge(request: web.Request) -> web.Response:
        body = await internal_body(request, secret)
        if isinstance(body, web.Response):
            return body
        room_id = body.get("room_id")
        if not isinstance(room_id, str) or not room_id.startswith("!"):
            return bad_json("room_id is needed")
        if (refused := not_owned(plan, room_id)) is not None:
            return refused
        purged = await local(room_id)
        logger.info("purged room %s for another process (%d events)", room_id, purged)
        return web.json_response({"purged": purged})

    app.router.add_post(PURGE_PATH, purge)
