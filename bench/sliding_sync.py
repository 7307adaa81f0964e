"""Simplified sliding sync (MSC4186): Ranvier and Synapse side by side, each a subprocess on loopback
(bench/servers.py, SQLite unless ``--postgres``).

A user in N rooms (default 500; each created by the user with a name, then one message): the time of

- an initial response (no ``pos``) with one list over every room (``ranges [[0, N-1]]``), each room with
  ``timeline_limit`` 1 and ``required_state`` name, avatar, encryption and the user's own membership, the
  e2ee extension on;
- an incremental response (the same request, with the previous ``pos``) after one new message in one room.

Prints min / median of ``--runs`` (default 5) for each, per server. Setup (creating the rooms) is not timed;
it goes through the client API of each server, eight requests at a time.

Usage: python3 -m bench sliding_sync [--rooms 500] [--runs 5] [--only ranvier|synapse] [--postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.interop.synapse import DEFAULT_VERSION

from .servers import BenchServer, SynapseBenchServer, make_server

PATH = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"


def request_body(rooms: int) -> dict[str, Any]:
    return {
        "lists": {
            "all": {
                "ranges": [[0, rooms - 1]],
                "required_state": [
                    ["m.room.name", ""],
                    ["m.room.avatar", ""],
                    ["m.room.encryption", ""],
                    ["m.room.member", "$ME"],
                ],
                "timeline_limit": 1,
            }
        },
        "extensions": {"e2ee": {"enabled": True}},
    }


class SynapseManyRooms(SynapseBenchServer):
    """Synapse with its room-creation rate limit (rc_room_creation) relaxed: the setup creates hundreds."""

    def configure(self) -> None:
        super().configure()
        extra_path = self.workdir / "extra.yaml"
        extra = yaml.safe_load(extra_path.read_text())
        extra["rc_room_creation"] = {"per_second": 1000, "burst_count": 1000}
        extra_path.write_text(yaml.safe_dump(extra))


class Session:
    def __init__(self, http: aiohttp.ClientSession, base: str, token: str) -> None:
        self.http = http
        self.base = base
        self.headers = {"Authorization": f"Bearer {token}"}
        self.txn = 0

    async def call(self, method: str, path: str, body: Any = None, **params: str) -> Any:
        async with self.http.request(
            method, self.base + path, json=body, params=params or None, headers=self.headers
        ) as resp:
            answer = await resp.json()
            if resp.status != 200:
                raise RuntimeError(f"{method} {path}: {resp.status} {answer}")
            return answer

    async def send(self, room_id: str, body: str) -> None:
        self.txn += 1
        await self.call(
            "PUT",
            f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/b{self.txn}",
            {"msgtype": "m.text", "body": body},
        )


async def login(http: aiohttp.ClientSession, server: BenchServer, localpart: str) -> Session:
    if server.kind == "synapse":
        _, token = await asyncio.to_thread(server.register, localpart)  # type: ignore[attr-defined]
        return Session(http, server.client_url, token)
    async with http.post(
        server.client_url + "/_matrix/client/v3/register",
        json={"username": localpart, "password": "pw-" + localpart, "auth": {"type": "m.login.dummy"}},
    ) as resp:
        body = await resp.json()
    return Session(http, server.client_url, body["access_token"])


async def populate(session: Session, rooms: int) -> list[str]:
    gate = asyncio.Semaphore(8)

    async def one(i: int) -> str:
        async with gate:
            answer = await session.call("POST", "/_matrix/client/v3/createRoom", {"name": f"Room {i}"})
            await session.send(answer["room_id"], f"first message in room {i}")
            return str(answer["room_id"])

    return list(await asyncio.gather(*(one(i) for i in range(rooms))))


async def measure(server: BenchServer, rooms: int, runs: int) -> dict[str, list[float]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as http:
        session = await login(http, server, "bench_ss")
        started = time.perf_counter()
        room_ids = await populate(session, rooms)
        print(f"  {server.kind}: {rooms} rooms created in {time.perf_counter() - started:.1f} s", flush=True)
        body = request_body(rooms)
        initial: list[float] = []
        incremental: list[float] = []
        for run in range(runs):
            t0 = time.perf_counter()
            answer = await session.call("POST", PATH, body, timeout="0")
            initial.append(time.perf_counter() - t0)
            missing = set(room_ids) - set(answer["rooms"])
            assert not missing, (answer["lists"]["all"]["count"], sorted(missing))
            await session.send(room_ids[run % rooms], f"incremental {run}")
            t0 = time.perf_counter()
            later = await session.call("POST", PATH, body, timeout="0", pos=answer["pos"])
            incremental.append(time.perf_counter() - t0)
            assert list(later["rooms"]) == [room_ids[run % rooms]], list(later["rooms"])
        return {"initial": initial, "incremental": incremental}


def report(kind: str, results: dict[str, list[float]]) -> None:
    for name, values in results.items():
        ms = [v * 1000 for v in values]
        median = statistics.median(ms)
        print(f"{kind:8} {name:12} min {min(ms):8.1f} ms   median {median:8.1f} ms   (n={len(ms)})")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python3 -m bench sliding_sync")
    parser.add_argument("--rooms", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", choices=("ranvier", "synapse"))
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--synapse-version", default=DEFAULT_VERSION)
    args = parser.parse_args(argv)
    kinds = [args.only] if args.only else ["ranvier", "synapse"]
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-sliding-") as tmp:
        for kind in kinds:
            workdir = Path(tmp) / kind
            server: BenchServer = (
                SynapseManyRooms(workdir, args.synapse_version, postgres=args.postgres)
                if kind == "synapse"
                else make_server(kind, workdir, postgres=args.postgres, synapse_version=args.synapse_version)
            )
            server.start()
            try:
                results[kind] = asyncio.run(measure(server, args.rooms, args.runs))
            finally:
                server.stop()
    database = "PostgreSQL" if args.postgres else "SQLite"
    print(f"\nsimplified sliding sync, a user in {args.rooms} rooms ({database}):")
    for kind, result in results.items():
        report(kind, result)
