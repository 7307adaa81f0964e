"""Events created outside a forwarded client request, persisted by the room's persister.

Client room writes reach the room's persister whole (``replication_http.forwarding_middleware``). Other
code paths create events too: profile changes update the member event in every room of the user, account
deactivation leaves rooms, joins by alias, admin actions, server notices, room upgrades' tombstones. On a
process that does not own the room, ``ForwardingCreator.send`` hands such an event to the owner over
``/_ranvier/replication/v1/send_event`` and returns the stored event once the owner has committed it, so a
room's events are still built on one process's view of the room.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..client_api.errors import MatrixError
from ..federation.errors import FederationRequestError
from ..federation.membership_routes import MembershipHandler
from ..protocol.errors import AuthRejected, ProtocolError, UnsupportedRoomVersion
from ..protocol.events import Pdu
from ..protocol.room_versions import RoomVersion, get_room_version
from ..rooms.local_events import LocalEventCreator, RoomNotFound
from ..rooms.persister import EventPersister, TxnHook
from ..rooms.state import StateIds
from ..storage.interfaces import EventToPersist
from .replication_http import (
    PersisterUnavailable,
    ReplicationClient,
    bad_json,
    internal_body,
    not_owned,
    post_internal,
)
from .roles import RolePlan

SEND_EVENT_PATH = "/_ranvier/replication/v1/send_event"


class ForwardingCreator(LocalEventCreator):
    """``LocalEventCreator`` whose ``send`` of a room owned by another process goes to that process."""

    plan: RolePlan | None = None
    replication: ReplicationClient | None = None

    async def send(
        self,
        room_id: str,
        sender: str,
        event_type: str,
        content: dict[str, Any],
        *,
        state_key: str | None = None,
        redacts: str | None = None,
        unsigned: dict[str, Any] | None = None,
        txn_hook: TxnHook | None = None,
        origin_server_ts: int | None = None,
    ) -> Pdu:
        plan, replication = self.plan, self.replication
        owner = plan.persister_of(room_id) if plan is not None else None
        # A transaction hook is a closure over this process's request (a client's transaction id): those
        # requests were forwarded whole, so one reaching here is served here.
        if plan is None or replication is None or owner == plan.name or txn_hook is not None:
            return await super().send(
                room_id,
                sender,
                event_type,
                content,
                state_key=state_key,
                redacts=redacts,
                unsigned=unsigned,
                txn_hook=txn_hook,
                origin_server_ts=origin_server_ts,
            )
        assert owner is not None
        body = {
            "room_id": room_id,
            "sender": sender,
            "type": event_type,
            "content": content,
            "state_key": state_key,
            "redacts": redacts,
            "unsigned": unsigned,
            "origin_server_ts": origin_server_ts,
        }
        event_id = await _post(replication, owner, body)
        pdu = await self._storage.events.get_event(event_id)
        if pdu is None:  # committed before the answer: only a bug gets here
            raise MatrixError(500, "M_UNKNOWN", f"{owner} answered {event_id}, which is not stored")
        return pdu

    def _owner_elsewhere(self, room_id: str) -> str | None:
        """The instance persisting ``room_id`` when it is not this one (None: this one, or no workers)."""
        plan = self.plan
        if plan is None or self.replication is None:
            return None
        owner = plan.persister_of(room_id)
        return None if owner == plan.name else owner

    async def persist_new_room(
        self, room_id: str, rv: RoomVersion, creator: str, batch: list[EventToPersist]
    ) -> None:
        """A room created here (createRoom, an upgrade's new room, a notices room): its id is chosen (before
        v12) or derived from the create event (v12), so its persister is known only now; the batch built
        and authorised here is stored by that persister, which answers after its commit."""
        owner = self._owner_elsewhere(room_id)
        if owner is None:
            await super().persist_new_room(room_id, rv, creator, batch)
            return
        await self._hand_over(owner, room_id, rv, batch, creator)

    async def persist_local(self, pdu: Pdu, state_before: StateIds, txn_hook: TxnHook | None = None) -> None:
        """An event built here outside ``send`` (an upgrade's tombstone before v12): persisted by the
        room's persister. A transaction hook is this process's own (see ``send``): persisted here."""
        owner = self._owner_elsewhere(pdu.room_id)
        if owner is None or txn_hook is not None:
            await super().persist_local(pdu, state_before, txn_hook)
            return
        item = EventToPersist(pdu=pdu, state_before=state_before)
        await self._hand_over(owner, pdu.room_id, pdu.room_version, [item], None)

    async def _hand_over(
        self, owner: str, room_id: str, rv: RoomVersion, batch: list[EventToPersist], creator: str | None
    ) -> None:
        assert self.replication is not None
        body = {
            "room_id": room_id,
            "room_version": rv.identifier,
            "creator": creator,
            "events": [
                {
                    "pdu": item.pdu.json,
                    "state_before": [[t, k, e] for (t, k), e in (item.state_before or {}).items()],
                }
                for item in batch
            ],
        }
        status, answer = await post_internal(self.replication, owner, PERSIST_BUILT_PATH, body)
        if status == 200:
            self.replication.counts["built"] += 1
            return
        if answer.get("kind") == "auth":
            raise AuthRejected(str(answer.get("rule")), str(answer.get("reason")))
        raise MatrixError(
            status if 400 <= status < 600 else 500,
            str(answer.get("errcode", "M_UNKNOWN")),
            str(answer.get("error", "the room's writer refused the events")),
        )


async def _post(replication: ReplicationClient, owner: str, body: dict[str, Any]) -> str:
    status, answer = await post_internal(replication, owner, SEND_EVENT_PATH, body)
    if status == 200 and isinstance(answer.get("event_id"), str):
        replication.counts["event"] += 1
        return str(answer["event_id"])
    kind = answer.get("kind")
    if kind == "auth":
        raise AuthRejected(str(answer.get("rule")), str(answer.get("reason")))
    if kind == "no_room":
        raise RoomNotFound(body["room_id"])
    raise MatrixError(
        status if 400 <= status < 600 else 500,
        str(answer.get("errcode", "M_UNKNOWN")),
        str(answer.get("error", "the room's writer refused the event")),
    )


def add_send_event_route(app: web.Application, secret: str, creator: LocalEventCreator) -> None:
    """The owner's side: build, authorise and persist the event here, answer after the commit."""

    async def send_event(request: web.Request) -> web.Response:
        body = await internal_body(request, secret)
        if isinstance(body, web.Response):
            return body
        fields = _fields(body)
        if fields is None:
            return web.json_response(
                {"errcode": "M_BAD_JSON", "error": "malformed event request"}, status=400
            )
        room_id, sender, event_type, content, extra = fields
        try:
            pdu = await creator.send(room_id, sender, event_type, content, **extra)
        except AuthRejected as e:
            return web.json_response({"kind": "auth", "rule": e.rule, "reason": e.reason}, status=403)
        except RoomNotFound:
            return web.json_response({"kind": "no_room"}, status=404)
        except MatrixError as e:
            return web.json_response(e.to_json(), status=e.status)
        except ProtocolError as e:
            return web.json_response({"errcode": e.errcode, "error": e.message}, status=400)
        return web.json_response({"event_id": pdu.event_id})

    app.router.add_post(SEND_EVENT_PATH, send_event)


PERSIST_BUILT_PATH = "/_ranvier/replication/v1/persist_built"


def add_persist_built_route(
    app: web.Application, secret: str, creator: ForwardingCreator, persister: EventPersister
) -> None:
    """The owner's side of ``ForwardingCreator.persist_new_room`` and ``persist_local``: events another of
    our processes built and authorised (signed with the server's key), stored here."""

    async def persist_built(request: web.Request) -> web.Response:
        body = await internal_body(request, secret)
        if isinstance(body, web.Response):
            return body
        room_id, version, owner_creator, raw = (
            body.get("room_id"),
            body.get("room_version"),
            body.get("creator"),
            body.get("events"),
        )
        if not (isinstance(room_id, str) and isinstance(version, str) and isinstance(raw, list) and raw):
            return bad_json("room_id, room_version and events are needed")
        if owner_creator is not None and not isinstance(owner_creator, str):
            return bad_json("creator must be a user id")
        if (refused := not_owned(creator.plan, room_id)) is not None:
            return refused
        try:
            rv = get_room_version(version)
            batch = [_built_item(entry, rv, room_id) for entry in raw]
        except (ProtocolError, UnsupportedRoomVersion, ValueError, TypeError) as e:
            return bad_json(f"malformed events: {e}")
        try:
            if owner_creator is not None:
                await creator.persist_new_room(room_id, rv, owner_creator, batch)
            else:
                async with persister.room_lock(room_id):
                    for item in batch:
                        assert item.state_before is not None
                        await creator.persist_local(item.pdu, dict(item.state_before))
        except AuthRejected as e:
            return web.json_response({"kind": "auth", "rule": e.rule, "reason": e.reason}, status=403)
        return web.json_response({})

    app.router.add_post(PERSIST_BUILT_PATH, persist_built)


def _built_item(entry: Any, rv: RoomVersion, room_id: str) -> EventToPersist:
    if not isinstance(entry, dict) or not isinstance(entry.get("pdu"), dict):
        raise ValueError("an event needs its pdu")
    pdu = Pdu(entry["pdu"], rv)
    if pdu.room_id != room_id:
        raise ValueError(f"{pdu.event_id} is not an event of {room_id}")
    state = entry.get("state_before")
    if not isinstance(state, list) or not all(
        isinstance(s, list) and len(s) == 3 and all(isinstance(x, str) for x in s) for s in state
    ):
        raise ValueError(f"{pdu.event_id}: state_before must be [type, state_key, event_id] triples")
    return EventToPersist(pdu=pdu, state_before={(t, k): e for t, k, e in state})


def _fields(body: Any) -> tuple[str, str, str, dict[str, Any], dict[str, Any]] | None:
    if not isinstance(body, dict):
        return None
    room_id, sender, event_type, content = (
        body.get("room_id"),
        body.get("sender"),
        body.get("type"),
        body.get("content"),
    )
    if not (isinstance(room_id, str) and isinstance(sender, str) and isinstance(event_type, str)):
        return None
    if not isinstance(content, dict):
        return None
    extra: dict[str, Any] = {}
    for key, kind in (("state_key", str), ("redacts", str), ("unsigned", dict), ("origin_server_ts", int)):
        value = body.get(key)
        if value is not None and not isinstance(value, kind):
            return None
        extra[key] = value
    return room_id, sender, event_type, content, extra


MEMBERSHIP_PATH = "/_ranvier/replication/v1/membership"


class ForwardingMembership:
    """The resident side of federation membership (send_join, send_leave, send_knock, invite) for rooms
    another process persists: handed to it after this process authenticated the request (X-Matrix)."""

    def __init__(self, local: MembershipHandler, plan: RolePlan, replication: ReplicationClient) -> None:
        self._local = local
        self._plan = plan
        self._replication = replication

    async def make_membership(
        self, origin: str, room_id: str, user_id: str, membership: str, supported_versions: list[str] | None
    ) -> dict[str, Any]:
        # A template only: nothing is written, any process can build it.
        return await self._local.make_membership(origin, room_id, user_id, membership, supported_versions)

    async def current_extremities(self, origin: str, room_id: str) -> dict[str, Any]:
        return await self._local.current_extremities(origin, room_id)

    async def send_membership(
        self,
        origin: str,
        room_id: str,
        event_id: str,
        pdu_json: Any,
        membership: str,
        omit_members: bool = False,
    ) -> dict[str, Any]:
        owner = self._plan.persister_of(room_id)
        if owner == self._plan.name:
            return await self._local.send_membership(
                origin, room_id, event_id, pdu_json, membership, omit_members
            )
        return await self._forward(
            owner,
            {
                "op": "send",
                "origin": origin,
                "room_id": room_id,
                "event_id": event_id,
                "pdu": pdu_json,
                "membership": membership,
                "omit_members": omit_members,
            },
        )

    async def on_invite(self, origin: str, room_id: str, event_id: str, body: Any) -> dict[str, Any]:
        owner = self._plan.persister_of(room_id)
        if owner == self._plan.name:
            return await self._local.on_invite(origin, room_id, event_id, body)
        return await self._forward(
            owner, {"op": "invite", "origin": origin, "room_id": room_id, "event_id": event_id, "pdu": body}
        )

    async def _forward(self, owner: str, body: dict[str, Any]) -> dict[str, Any]:
        replication = self._replication
        try:
            status, answer = await post_internal(replication, owner, MEMBERSHIP_PATH, body)
        except PersisterUnavailable:
            raise FederationRequestError(
                503, "M_UNKNOWN", f"the room's writer ({owner}) is unavailable"
            ) from None
        if status == 200 and isinstance(answer.get("result"), dict):
            replication.counts["membership"] += 1
            return dict(answer["result"])
        extra = {k: v for k, v in answer.items() if k not in ("errcode", "error")}
        raise FederationRequestError(
            status, str(answer.get("errcode", "M_UNKNOWN")), str(answer.get("error", "")), **extra
        )


def add_membership_route(app: web.Application, secret: str, local: MembershipHandler) -> None:
    """The owner's side of ``ForwardingMembership``."""

    async def membership(request: web.Request) -> web.Response:
        body = await internal_body(request, secret)
        if isinstance(body, web.Response):
            return body
        op, origin, room_id, event_id = (
            body.get("op"),
            body.get("origin"),
            body.get("room_id"),
            body.get("event_id"),
        )
        if not (isinstance(origin, str) and isinstance(room_id, str) and isinstance(event_id, str)):
            return web.json_response(
                {"errcode": "M_BAD_JSON", "error": "origin, room_id, event_id"}, status=400
            )
        try:
            if op == "send" and isinstance(body.get("membership"), str):
                result = await local.send_membership(
                    origin,
                    room_id,
                    event_id,
                    body.get("pdu"),
                    str(body["membership"]),
                    bool(body.get("omit_members")),
                )
            elif op == "invite":
                result = await local.on_invite(origin, room_id, event_id, body.get("pdu"))
            else:
                return web.json_response({"errcode": "M_BAD_JSON", "error": "unknown op"}, status=400)
        except FederationRequestError as e:
            return web.json_response(e.to_json(), status=e.status)
        return web.json_response({"result": result})

    app.router.add_post(MEMBERSHIP_PATH, membership)
