"""Federation work that writes a room's events, done by the room's persister whichever process starts it.

A remote join (make_join/send_join as the joining server), the invite of another server's user, the
rejection of an invite to a room we are not in, and backfill (``/messages`` paging past our oldest event on
a reader, the gap filler in the background process) all end in persisting events of the room. With
workers they run on ``RolePlan.persister_of(room)``: the process that starts them hands the operation over
on ``/_ranvier/replication/v1/remote_membership`` or ``/backfill`` and waits for the answer, which comes
after the commit. So the join gap's queue, the join's placement of late events, the partial-state resync
that a partial join starts, and the room lock all live in the one process that writes the room.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from ..protocol.errors import AuthRejected
from ..protocol.events import Pdu
from ..rooms.backfill import Backfiller
from ..rooms.knock import KnockService
from ..rooms.local_events import RoomNotFound
from ..rooms.membership import MembershipError, RemoteMembership
from ..storage.protocols.composite import HasEvents
from .replication_http import (
    PersisterUnavailable,
    ReplicationClient,
    bad_json,
    internal_body,
    not_owned,
    post_internal,
)
from .roles import RolePlan

logger = logging.getLogger(__name__)

REMOTE_MEMBERSHIP_PATH = "/_ranvier/replication/v1/remote_membership"
BACKFILL_PATH = "/_ranvier/replication/v1/backfill"
# A join of a big room may take minutes (the state is verified before the answer).
JOIN_TIMEOUT = 900.0


class ForwardingRemoteMembership:
    """``RemoteMembership`` whose operations on a room another process persists run in that process."""

    def __init__(
        self, local: RemoteMembership, plan: RolePlan, replication: ReplicationClient, storage: HasEvents
    ) -> None:
        self._local = local
        self._plan = plan
        self._replication = replication
        self._storage = storage

    def _owner_elsewhere(self, room_id: str) -> str | None:
        owner = self._plan.persister_of(room_id)
        return None if owner == self._plan.name else owner

    async def join(self, user_id: str, room_id: str, servers: list[str], content: dict[str, Any]) -> str:
        owner = self._owner_elsewhere(room_id)
        if owner is None:
            return await self._local.join(user_id, room_id, servers, content)
        body = {"op": "join", "user_id": user_id, "room_id": room_id, "servers": servers, "content": content}
        answer = await self._call(owner, body, JOIN_TIMEOUT)
        return str(answer.get("room_id", room_id))

    async def invite(self, sender: str, room_id: str, target: str, content: dict[str, Any]) -> Pdu:
        owner = self._owner_elsewhere(room_id)
        if owner is None:
            return await self._local.invite(sender, room_id, target, content)
        body = {"op": "invite", "user_id": sender, "room_id": room_id, "target": target, "content": content}
        answer = await self._call(owner, body, None)
        event_id = answer.get("event_id")
        pdu = await self._storage.events.get_event(event_id) if isinstance(event_id, str) else None
        if pdu is None:  # committed before the answer: only a bug gets here
            raise MembershipError("M_UNKNOWN", f"{owner} answered {event_id!r}, which is not stored", 500)
        return pdu

    async def reject_invite(self, user_id: str, room_id: str, content: dict[str, Any]) -> None:
        owner = self._owner_elsewhere(room_id)
        if owner is None:
            await self._local.reject_invite(user_id, room_id, content)
            return
        await self._call(
            owner, {"op": "reject", "user_id": user_id, "room_id": room_id, "content": content}, None
        )

    async def resolve_alias(self, alias: str) -> tuple[str, list[str]]:
        # A directory query writes nothing: asked from here.
        return await self._local.resolve_alias(alias)

    async def _call(self, owner: str, body: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        return await hand_to_owner(self._replication, owner, body, timeout)


async def hand_to_owner(
    replication: ReplicationClient, owner: str, body: dict[str, Any], timeout: float | None
) -> dict[str, Any]:
    """One operation of ``REMOTE_MEMBERSHIP_PATH`` run by ``owner``: its answer, or its error raised as the
    local call would have raised it."""
    try:
        status, answer = await post_internal(replication, owner, REMOTE_MEMBERSHIP_PATH, body, timeout)
    except PersisterUnavailable:
        raise MembershipError(
            "M_UNKNOWN", f"the room's writer ({owner}) is unavailable, try again", 503
        ) from None
    if status == 200:
        replication.counts["remote_membership"] += 1
        return answer
    kind = answer.get("kind")
    if kind == "auth":
        raise AuthRejected(str(answer.get("rule")), str(answer.get("reason")))
    if kind == "no_room":
        raise RoomNotFound(str(body["room_id"]))
    raise MembershipError(
        str(answer.get("errcode", "M_UNKNOWN")),
        str(answer.get("error", f"{owner} refused")),
        status if 400 <= status < 600 else 502,
        unreachable=bool(answer.get("unreachable")),
    )


def add_remote_membership_route(
    app: web.Application, secret: str, local: RemoteMembership, knocks: KnockService | None
) -> None:
    """The persister's side of ``ForwardingRemoteMembership`` and ``ForwardingKnockService``."""

    async def remote_membership(request: web.Request) -> web.Response:
        body = await internal_body(request, secret)
        if isinstance(body, web.Response):
            return body
        op, user_id, room_id, content = (
            body.get("op"),
            body.get("user_id"),
            body.get("room_id"),
            body.get("content"),
        )
        if not (isinstance(user_id, str) and isinstance(room_id, str) and isinstance(content, dict)):
            return bad_json("user_id, room_id and content are needed")
        try:
            if op == "join":
                servers = body.get("servers")
                if not isinstance(servers, list) or not all(isinstance(s, str) for s in servers):
                    return bad_json("servers must be a list of server names")
                return web.json_response({"room_id": await local.join(user_id, room_id, servers, content)})
            if op == "invite":
                target = body.get("target")
                if not isinstance(target, str):
                    return bad_json("target is needed")
                pdu = await local.invite(user_id, room_id, target, content)
                return web.json_response({"event_id": pdu.event_id})
            if op == "reject":
                await local.reject_invite(user_id, room_id, content)
                return web.json_response({})
            if op == "knock" and knocks is not None:
                servers, reason = body.get("servers"), body.get("reason")
                if not isinstance(servers, list) or not all(isinstance(s, str) for s in servers):
                    return bad_json("servers must be a list of server names")
                if reason is not None and not isinstance(reason, str):
                    return bad_json("reason must be a string")
                return web.json_response({"room_id": await knocks.knock(user_id, room_id, servers, reason)})
        except MembershipError as e:
            return web.json_response(
                {"errcode": e.errcode, "error": e.message, "unreachable": e.unreachable}, status=e.status
            )
        except AuthRejected as e:
            return web.json_response({"kind": "auth", "rule": e.rule, "reason": e.reason}, status=403)
        except RoomNotFound:
            return web.json_response({"kind": "no_room"}, status=404)
        return bad_json("unknown op")

    app.router.add_post(REMOTE_MEMBERSHIP_PATH, remote_membership)


class ForwardingKnockService(KnockService):
    """``KnockService`` whose knocks on a room another process persists are made there: a knock on a room
    we are not in (make_knock/send_knock) is kept as an out-of-band membership of the room, and one on a
    room we are in is a room event. The alias is resolved here, the room's owner is asked with its id."""

    plan: RolePlan | None = None
    replication: ReplicationClient | None = None

    async def knock(
        self, user_id: str, room_id_or_alias: str, via: list[str], reason: str | None = None
    ) -> str:
        plan, replication = self.plan, self.replication
        if plan is None or replication is None:
            return await super().knock(user_id, room_id_or_alias, via, reason)
        room_id, alias_servers = await self._membership.resolve_room(room_id_or_alias)
        owner = plan.persister_of(room_id)
        if owner == plan.name:
            return await super().knock(user_id, room_id, [*via, *alias_servers], reason)
        body: dict[str, Any] = {
            "op": "knock",
            "user_id": user_id,
            "room_id": room_id,
            "content": {},
            "servers": [*via, *alias_servers],
            "reason": reason,
        }
        answer = await hand_to_owner(replication, owner, body, JOIN_TIMEOUT)
        return str(answer.get("room_id", room_id))


class ForwardingBackfiller(Backfiller):
    """``Backfiller`` whose rounds for a room another process persists run in that process (the fetched
    events are judged against, and persisted with, the owner's view of the room)."""

    plan: RolePlan | None = None
    replication: ReplicationClient | None = None

    def _owner_elsewhere(self, room_id: str) -> str | None:
        plan = self.plan
        if plan is None or self.replication is None:
            return None
        owner = plan.persister_of(room_id)
        return None if owner == plan.name else owner

    async def backfill(self, room_id: str, limit: int, extremities: Sequence[str] | None = None) -> bool:
        owner = self._owner_elsewhere(room_id)
        if owner is None:
            return await super().backfill(room_id, limit, extremities)
        body = {"op": "backfill", "room_id": room_id, "limit": limit, "extremities": extremities}
        answer = await self._handed_over(owner, body)
        return bool(answer.get("added")) if answer is not None else False

    async def fill_from(self, room_id: str, extremities: Sequence[str], limit: int) -> int:
        owner = self._owner_elsewhere(room_id)
        if owner is None:
            return await super().fill_from(room_id, extremities, limit)
        body = {"op": "fill", "room_id": room_id, "limit": limit, "extremities": list(extremities)}
        answer = await self._handed_over(owner, body)
        added = answer.get("added") if answer is not None else 0
        return added if isinstance(added, int) and not isinstance(added, bool) else 0

    async def _handed_over(self, owner: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """The owner's answer; None when it could not be had (the page is answered with what is held, and
        the gap filler tries again later, as after a fruitless round)."""
        assert self.replication is not None
        try:
            status, answer = await post_internal(self.replication, owner, BACKFILL_PATH, body)
        except PersisterUnavailable:
            return None
        if status != 200:
            logger.warning("%s refused the backfill of %s: %s", owner, body["room_id"], answer)
            return None
        self.replication.counts["backfill"] += 1
        return answer


def add_backfill_route(app: web.Application, secret: str, local: Backfiller) -> None:
    """The persister's side of ``ForwardingBackfiller``."""

    async def backfill(request: web.Request) -> web.Response:
        body = await internal_body(request, secret)
        if isinstance(body, web.Response):
            return body
        op, room_id, limit, extremities = (
            body.get("op"),
            body.get("room_id"),
            body.get("limit"),
            body.get("extremities"),
        )
        if not isinstance(room_id, str) or not isinstance(limit, int) or isinstance(limit, bool):
            return bad_json("room_id and limit are needed")
        if extremities is not None and (
            not isinstance(extremities, list) or not all(isinstance(e, str) for e in extremities)
        ):
            return bad_json("extremities must be a list of event ids")
        plan = local.plan if isinstance(local, ForwardingBackfiller) else None
        if (refused := not_owned(plan, room_id)) is not None:
            return refused
        if op == "backfill":
            return web.json_response({"added": await local.backfill(room_id, limit, extremities)})
        if op == "fill" and extremities is not None:
            return web.json_response({"added": await local.fill_from(room_id, extremities, limit)})
        return bad_json("unknown op")

    app.router.add_post(BACKFILL_PATH, backfill)
