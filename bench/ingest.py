"""Inbound federation ingest: a driver acting as a remote server pushes a linear chain of signed message PDUs
into a room of the target server, in transactions of 50, each sent when the previous one is answered.

The driver is a real federation peer on loopback: its own signing key served at ``/_matrix/key/v2/server``
over TLS, joined to the room through ``make_join``/``send_join`` like any server (so it works against
Synapse as well as Ranvier), and it serves back the events it built if the target asks for them.

``python3 -m bench ingest [compare options]`` runs only this workload of ``bench/compare.py``.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from ranvier.federation.client import path_segment
from ranvier.federation.keys import Keyring
from ranvier.protocol.auth import auth_types_for_event
from ranvier.protocol.events import Pdu, StateKey, build_event
from ranvier.protocol.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion, get_room_version
from tests.federation.fedserver import FedServer, start_fed_server

PER_TXN = 50
TXN_TIMEOUT = 300.0


@dataclass
class DriverRoom:
    room_id: str
    rv: RoomVersion
    user: str
    state: dict[StateKey, str]  # (type, state_key) -> event id, as the send_join response gave it
    last: Pdu
    state_ids: list[str] = field(default_factory=list)  # the state after the driver's join


@dataclass
class IngestDriver:
    fed: FedServer
    events: dict[str, Pdu] = field(default_factory=dict)
    # What a real server would answer /state_ids and /event with: the state before each event it built
    # (ids) and the raw state events the send_join response gave it.
    state_before: dict[str, list[str]] = field(default_factory=dict)
    foreign: dict[str, dict[str, Any]] = field(default_factory=dict)
    served: Counter[str] = field(default_factory=Counter)
    txn_counter: int = 0

    @property
    def server_name(self) -> str:
        return self.fed.server_name

    async def close(self) -> None:
        await self.fed.close()

    def _build(self, room: DriverRoom, event_type: str, content: dict[str, Any], **kw: Any) -> Pdu:
        pdu = build_event(
            room_version=room.rv,
            room_id=room.room_id,
            sender=room.user,
            event_type=event_type,
            content=content,
            origin_server_ts=int(time.time() * 1000),
            server_name=self.server_name,
            signing_key=self.fed.keyring.signing_key,
            **kw,
        )
        self.events[pdu.event_id] = pdu
        return pdu

    async def join(self, target: str, room_id: str) -> DriverRoom:
        """Join a fresh user of the driver to ``room_id`` on ``target`` (S2S make_join, then send_join)."""
        user = f"@drv{secrets.token_hex(3)}:{self.server_name}"
        answer = await self.fed.client.make_join(target, room_id, user, list(KNOWN_ROOM_VERSIONS))
        rv = get_room_version(answer.get("room_version", "1"))
        template = answer["event"]

        def ids(value: Any) -> list[str]:
            return [v[0] if isinstance(v, list) else v for v in value or []]

        provisional = DriverRoom(room_id, rv, user, {}, None)  # type: ignore[arg-type]
        join = self._build(
            provisional,
            "m.room.member",
            {"membership": "join"},
            state_key=user,
            prev_events=ids(template.get("prev_events")),
            auth_events=ids(template.get("auth_events")),
            depth=int(template.get("depth", 1)),
        )
        response = await self.fed.client.send_join_v2(target, room_id, join.event_id, join.json)
        state: dict[StateKey, str] = {}
        for raw, event_id in _with_ids(response.get("state", []), rv):
            state[(raw["type"], raw["state_key"])] = event_id
            self.foreign[event_id] = raw
        self.state_before[join.event_id] = sorted(state.values())
        state[("m.room.member", user)] = join.event_id
        room = DriverRoom(room_id, rv, user, state, join)
        room.state_ids = sorted(state.values())
        return room

    def message(self, room: DriverRoom, body: str) -> Pdu:
        content = {"msgtype": "m.text", "body": body}
        keys = auth_types_for_event(room.rv, "m.room.message", None, room.user, content)
        pdu = self._build(
            room,
            "m.room.message",
            content,
            prev_events=[room.last.event_id],
            auth_events=sorted(room.state[k] for k in keys if k in room.state),
            depth=room.last.depth + 1,
        )
        # Messages change no state: one shared list serves /state_ids for all of them.
        self.state_before[pdu.event_id] = room.state_ids
        room.last = pdu
        return pdu

    async def send(self, target: str, pdus: list[Pdu]) -> dict[str, Any]:
        """One transaction; returns the per-PDU results (an ``error`` key marks a refused PDU)."""
        self.txn_counter += 1
        body = {
            "origin": self.server_name,
            "origin_server_ts": int(time.time() * 1000),
            "pdus": [p.json for p in pdus],
            "edus": [],
        }
        path = (
            f"/_matrix/federation/v1/send/{path_segment(f'ingest{self.txn_counter}-{secrets.token_hex(3)}')}"
        )
        answer = await self.fed.client.request("PUT", target, path, json_body=body, timeout=TXN_TIMEOUT)
        return dict(answer.get("pdus", {}))


def _with_ids(events: list[dict[str, Any]], rv: RoomVersion) -> list[tuple[dict[str, Any], str]]:
    """State events of a send_join response with their event ids (computed: v3+ events carry none)."""
    out = []
    for raw in events:
        if "state_key" not in raw:
            continue
        try:
            out.append((raw, Pdu(raw, rv).event_id))
        except Exception:  # an event we cannot parse is not one we will cite
            continue
    return out


async def start_driver(workdir: Path) -> IngestDriver:
    """The driver's TLS listener: key routes, a sink for the target's own transactions, and the read
    endpoints a server that falls behind asks for (``/event``, ``/get_missing_events``, ``/state_ids``,
    ``/state``, ``/backfill``; unauthenticated: a benchmark peer on loopback)."""
    holder: list[IngestDriver] = []

    @web.middleware
    async def count(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        parts = request.path.split("/")
        holder[0].served[parts[4] if len(parts) > 4 else request.path] += 1
        return await handler(request)

    async def sink(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"pdus": {}})

    def raw(event_id: str) -> dict[str, Any] | None:
        pdu = holder[0].events.get(event_id)
        return pdu.json if pdu is not None else holder[0].foreign.get(event_id)

    def not_found() -> web.Response:
        return web.json_response({"errcode": "M_NOT_FOUND", "error": "unknown event"}, status=404)

    async def get_event(request: web.Request) -> web.Response:
        event = raw(request.match_info["eventId"])
        if event is None:
            return not_found()
        return web.json_response({"origin": holder[0].server_name, "origin_server_ts": 0, "pdus": [event]})

    async def state_ids(request: web.Request) -> web.Response:
        state = holder[0].state_before.get(request.query.get("event_id", ""))
        if state is None:
            return not_found()
        return web.json_response({"pdu_ids": state, "auth_chain_ids": []})

    async def state(request: web.Request) -> web.Response:
        ids = holder[0].state_before.get(request.query.get("event_id", ""))
        if ids is None:
            return not_found()
        return web.json_response({"pdus": [e for i in ids if (e := raw(i)) is not None], "auth_chain": []})

    async def missing_events(request: web.Request) -> web.Response:
        body = await request.json()
        events, earliest = holder[0].events, set(body.get("earliest_events", []))
        found: list[Pdu] = []
        frontier = [p for e in body.get("latest_events", []) if e in events for p in events[e].prev_event_ids]
        limit = min(int(body.get("limit", 10)), 100)
        while frontier and len(found) < limit:
            event_id = frontier.pop(0)
            if event_id in earliest or event_id not in events:
                continue
            found.append(events[event_id])
            frontier.extend(events[event_id].prev_event_ids)
        found.sort(key=lambda p: p.depth)
        return web.json_response({"events": [p.json for p in found]})

    async def backfill(request: web.Request) -> web.Response:
        # Breadth-first back from the given events through prev_events, the given ones included.
        events = holder[0].events
        limit = min(int(request.query.get("limit", "10")), 1000)
        frontier = [v for v in request.query.getall("v", []) if v in events]
        seen, found = set(frontier), []
        while frontier and len(found) < limit:
            pdu = events[frontier.pop(0)]
            found.append(pdu.json)
            for p in pdu.prev_event_ids:
                if p in events and p not in seen:
                    seen.add(p)
                    frontier.append(p)
        body = {"origin": holder[0].server_name, "origin_server_ts": int(time.time() * 1000), "pdus": found}
        return web.json_response(body)

    def routes(app: web.Application, keyring: Keyring) -> None:
        app.middlewares.append(count)
        app.router.add_put("/_matrix/federation/v1/send/{txnId}", sink)
        app.router.add_get("/_matrix/federation/v1/event/{eventId}", get_event)
        app.router.add_get("/_matrix/federation/v1/state_ids/{roomId}", state_ids)
        app.router.add_get("/_matrix/federation/v1/state/{roomId}", state)
        app.router.add_get("/_matrix/federation/v1/backfill/{roomId}", backfill)
        app.router.add_post("/_matrix/federation/v1/get_missing_events/{roomId}", missing_events)

    workdir.mkdir(parents=True, exist_ok=True)
    driver = IngestDriver(await start_fed_server(workdir, routes=routes))
    holder.append(driver)
    return driver


def main(argv: list[str]) -> None:
    from bench import compare

    compare.main(["--workloads", "ingest", *argv])
