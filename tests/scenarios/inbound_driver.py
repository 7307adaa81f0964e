"""A real Ranvier homeserver in-process on loopback, and a *driver*: a tiny remote server (its own signing
key, TLS, the key routes, and whatever else a test serves) that builds signed PDUs and sends them to it."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from ranvier.app import Homeserver
from ranvier.config import parse_config
from ranvier.federation.keys import Keyring
from ranvier.protocol.auth import auth_types_for_event
from ranvier.protocol.events import Pdu, StateKey, build_event
from ranvier.protocol.room_versions import RoomVersion
from tests.federation.fedserver import FedServer, start_fed_server
from tests.ports import free_port


async def start_homeserver(data_dir: Path) -> Homeserver:
    # The federation port is part of the server name, so it is chosen before the config is built.
    fed_port = free_port()
    config = parse_config(
        {
            "server_name": f"127.0.0.1:{fed_port}",
            "data_dir": str(data_dir),
            "signing_key_path": str(data_dir / "signing.key"),
            "database": {"url": f"sqlite:///{data_dir / 'homeserver.db'}"},
            "listeners": {
                "client": {"bind": "127.0.0.1", "port": 0},
                "federation": {"bind": "127.0.0.1", "port": fed_port, "tls": True},
            },
            "federation": {"verify_tls": False, "allow_loopback": True},
            "registration": {"enabled": True},
        }
    )
    hs = Homeserver(config)
    await hs.start()
    return hs


@dataclass
class ClientUser:
    """A local user of the homeserver, talking to its client API."""

    session: aiohttp.ClientSession
    base: str
    user_id: str
    token: str

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self.session.request(method, self.base + path, json=body, headers=headers) as resp:
            return resp.status, await resp.json()

    async def messages(self, room_id: str, limit: int = 1000, direction: str = "f") -> list[dict[str, Any]]:
        """Every event of the room's /messages in that direction, following the pagination tokens."""
        out: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            query = f"?dir={direction}&limit={limit}" + (f"&from={token}" if token else "")
            status, body = await self.call("GET", f"/_matrix/client/v3/rooms/{room_id}/messages{query}")
            assert status == 200, body
            out += body["chunk"]
            if not body["chunk"] or "end" not in body:
                return out
            token = body["end"]


async def register(session: aiohttp.ClientSession, hs: Homeserver, name: str) -> ClientUser:
    base = f"http://127.0.0.1:{hs.ports['client']}"
    body = {"username": name, "password": "correct horse battery", "auth": {"type": "m.login.dummy"}}
    async with session.post(base + "/_matrix/client/v3/register", json=body) as resp:
        answer = await resp.json()
        assert resp.status == 200, answer
    return ClientUser(session, base, answer["user_id"], answer["access_token"])


@dataclass
class Driver:
    """The remote server: builds events as its users, sends transactions, counts the requests it serves."""

    fed: FedServer
    served: Counter[str] = field(default_factory=Counter)
    events: dict[str, Pdu] = field(default_factory=dict)
    # The state before each event the driver built (ids), for /state_ids; tests record it.
    state_before: dict[str, list[str]] = field(default_factory=dict)
    txn_counter: int = 0

    @property
    def server_name(self) -> str:
        return self.fed.server_name

    def user(self, localpart: str) -> str:
        return f"@{localpart}:{self.server_name}"

    def build(
        self,
        rv: RoomVersion,
        room_id: str,
        sender: str,
        event_type: str,
        content: dict[str, Any],
        prev: list[Pdu],
        auth: list[Pdu],
        state_key: str | None = None,
        depth: int | None = None,
    ) -> Pdu:
        pdu = build_event(
            room_version=rv,
            room_id=room_id,
            sender=sender,
            event_type=event_type,
            content=content,
            prev_events=[p.event_id for p in prev],
            auth_events=sorted(p.event_id for p in auth),
            depth=depth if depth is not None else max((p.depth for p in prev), default=0) + 1,
            origin_server_ts=int(time.time() * 1000),
            server_name=self.server_name,
            signing_key=self.fed.keyring.signing_key,
            state_key=state_key,
        )
        self.events[pdu.event_id] = pdu
        return pdu

    async def send(
        self,
        destination: str,
        pdus: list[Pdu],
        txn_id: str | None = None,
        edus: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        if txn_id is None:
            self.txn_counter += 1
            txn_id = f"txn{self.txn_counter}"
        return await self.fed.client.send_transaction(
            destination,
            txn_id,
            origin_server_ts=int(time.time() * 1000),
            pdus=[p.json for p in pdus],
            edus=edus or [],
        )

    async def close(self) -> None:
        await self.fed.close()


async def start_driver(tmp_path: Path) -> Driver:
    """The driver's server: key routes, plus ``/event`` and ``/get_missing_events`` over the events it built
    (requests are not authenticated: this is a test peer). Every request served is counted by endpoint."""
    holder: list[Driver] = []

    @web.middleware
    async def count(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        parts = request.path.split("/")
        holder[0].served[parts[4] if len(parts) > 4 else request.path] += 1
        return await handler(request)

    async def get_event(request: web.Request) -> web.Response:
        pdu = holder[0].events.get(request.match_info["eventId"])
        if pdu is None:
            return web.json_response({"errcode": "M_NOT_FOUND", "error": "no such event"}, status=404)
        return web.json_response({"origin": holder[0].server_name, "origin_server_ts": 0, "pdus": [pdu.json]})

    async def missing_events(request: web.Request) -> web.Response:
        body = await request.json()
        events, earliest = holder[0].events, set(body["earliest_events"])
        found: list[Pdu] = []
        frontier = [p for e in body["latest_events"] if e in events for p in events[e].prev_event_ids]
        seen = set(frontier) | earliest
        while frontier and len(found) < body.get("limit", 10):
            event_id = frontier.pop(0)
            if event_id in earliest or event_id not in events:
                continue
            found.append(events[event_id])
            for p in events[event_id].prev_event_ids:
                if p not in seen:
                    seen.add(p)
                    frontier.append(p)
        found.sort(key=lambda p: p.depth)
        return web.json_response({"events": [p.json for p in found]})

    async def state_ids(request: web.Request) -> web.Response:
        state = holder[0].state_before.get(request.query["event_id"])
        if state is None:
            return web.json_response({"errcode": "M_NOT_FOUND", "error": "no state there"}, status=404)
        return web.json_response({"pdu_ids": state, "auth_chain_ids": []})

    def routes(app: web.Application, keyring: Keyring) -> None:
        app.middlewares.append(count)
        app.router.add_get("/_matrix/federation/v1/state_ids/{roomId}", state_ids)
        app.router.add_get("/_matrix/federation/v1/event/{eventId}", get_event)
        app.router.add_post("/_matrix/federation/v1/get_missing_events/{roomId}", missing_events)

    directory = tmp_path / "driver"
    directory.mkdir(parents=True, exist_ok=True)
    driver = Driver(await start_fed_server(directory, routes=routes))
    holder.append(driver)
    return driver


def auth_events_for(
    rv: RoomVersion,
    state: dict[StateKey, Pdu],
    event_type: str,
    sender: str,
    content: dict[str, Any],
    state_key: str | None = None,
) -> list[Pdu]:
    """The auth events selection (S2S) from a state map of events."""
    keys = auth_types_for_event(rv, event_type, state_key, sender, content)
    return [state[k] for k in sorted(keys) if k in state]


async def current_state_events(hs: Homeserver, room_id: str) -> dict[StateKey, Pdu]:
    ids = await hs.storage.state.get_current_state_ids(room_id)
    events = await hs.storage.events.get_events(list(ids.values()))
    return {k: events[v] for k, v in ids.items()}
