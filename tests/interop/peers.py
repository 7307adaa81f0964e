"""Helpers shared by the Ranvier <-> Synapse federation tests: a client for Synapse's client API with
the same surface as the scenario ``Client`` (so a test can drive either server alike), a ``/sync`` reader
that accumulates what each room's timeline showed, and a Ranvier fixture helper."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from ranvier.app import Homeserver
from ranvier.config import parse_config
from tests.scenarios.servers import Client, free_port

from .synapse import SynapseServer


class SynapseClient(Client):
    """The scenario ``Client`` pointed at Synapse's client API."""

    def __init__(self, session: aiohttp.ClientSession, synapse: SynapseServer, user_id: str, token: str):
        self.session = session
        self.synapse = synapse
        self.user_id = user_id
        self.token = token
        self.base = f"{synapse.client_url}/_matrix/client/v3"
        self.since: str | None = None

    @classmethod
    async def register_on(
        cls, session: aiohttp.ClientSession, synapse: SynapseServer, localpart: str
    ) -> SynapseClient:
        user_id, token = await asyncio.to_thread(synapse.register, localpart)
        return cls(session, synapse, user_id, token)


class SyncReader:
    """Incremental ``/sync`` for one client, remembering every timeline event and membership section a
    room appeared in. A lazy-loading filter is optional: Synapse hides rooms it joined with partial state
    from a non-lazy-loading sync until their state is complete (SYNAPSE.md)."""

    def __init__(self, client: Client, *, lazy_load_members: bool = False) -> None:
        self.client = client
        self.since: str | None = None
        self.timeline: dict[str, list[dict[str, Any]]] = {}
        self.invites: dict[str, list[dict[str, Any]]] = {}
        self.left: set[str] = set()
        self.filter: str | None = None
        if lazy_load_members:
            self.filter = '{"room":{"state":{"lazy_load_members":true}}}'

    async def poll(self) -> dict[str, Any]:
        params = {"timeout": "0"}
        if self.since is not None:
            params["since"] = self.since
        if self.filter is not None:
            params["filter"] = self.filter
        answer = await self.client.ok("GET", "/sync", **params)
        self.since = answer["next_batch"]
        rooms = answer.get("rooms", {})
        for room_id, room in rooms.get("join", {}).items():
            self.left.discard(room_id)
            seen = self.timeline.setdefault(room_id, [])
            known = {e["event_id"] for e in seen}
            seen.extend(e for e in room.get("timeline", {}).get("events", []) if e["event_id"] not in known)
        for room_id, room in rooms.get("invite", {}).items():
            self.invites[room_id] = room.get("invite_state", {}).get("events", [])
        for room_id in rooms.get("leave", {}):
            self.left.add(room_id)
            self.invites.pop(room_id, None)
        return dict(answer)

    def texts(self, room_id: str) -> list[str]:
        return [
            e["content"].get("body") for e in self.timeline.get(room_id, []) if e["type"] == "m.room.message"
        ]

    async def has_text(self, room_id: str, text: str) -> bool:
        await self.poll()
        return text in self.texts(room_id)

    async def is_joined(self, room_id: str) -> bool:
        await self.poll()
        return room_id in self.timeline and room_id not in self.left

    async def is_invited(self, room_id: str) -> bool:
        await self.poll()
        return room_id in self.invites

    async def has_left(self, room_id: str) -> bool:
        await self.poll()
        return room_id in self.left


async def start_ranvier_behind(data_dir: Path, server_name: str, **rooms: Any) -> Homeserver:
    """An in-process Ranvier named ``server_name`` (a proxy's address) whose federation listener is on a
    port of its own; otherwise configured like ``tests.scenarios.servers.start_server``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    config = parse_config(
        {
            "server_name": server_name,
            "data_dir": str(data_dir),
            "signing_key_path": str(data_dir / "signing.key"),
            "database": {"url": f"sqlite:///{data_dir / 'homeserver.db'}"},
            "listeners": {
                "client": {"bind": "127.0.0.1", "port": 0},
                "federation": {
                    "bind": "127.0.0.1",
                    "port": free_port(),
                    "tls": True,
                    "tls_certificate_path": str(data_dir / "tls.crt"),
                    "tls_private_key_path": str(data_dir / "tls.key"),
                },
            },
            "registration": {"enabled": True},
            "federation": {"verify_tls": False, "allow_loopback": True},
            "rooms": rooms,
        }
    )
    hs = Homeserver(config)
    await hs.start()
    return hs
