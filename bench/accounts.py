"""Account operations on a real server process (Ranvier, and Synapse with ``--servers ranvier,synapse``):
min / median in milliseconds over ``--runs`` repetitions.

- ``login``: ``POST /login`` with a password (a fresh device each time; dominated by the password hash);
- ``password change``: ``POST /account/password`` through its UIA (challenge, then the password stage),
  keeping the other devices;
- ``deactivate (N rooms)``: ``POST /account/deactivate`` through its UIA for a user joined to ``--rooms``
  rooms (default 20), each a fresh user. Ranvier leaves every room before answering; Synapse answers first
  and parts rooms in the background, so its figure is the request only;
- ``room initialSync``: ``GET /rooms/{roomId}/initialSync`` of a room with 200 messages (limit 20).

Usage: python3 -m bench accounts [--rooms 20] [--runs 10] [--servers ranvier] [--postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from bench.servers import make_server
from bench.workloads.client import MxClient, RequestFailed, q
from tests.interop.synapse import DEFAULT_VERSION


async def _register(session: aiohttp.ClientSession, base_url: str, prefix: str) -> tuple[MxClient, str]:
    """A new user and its password."""
    password = secrets.token_hex(12)
    body: dict[str, Any] = {"username": f"{prefix}{secrets.token_hex(4)}", "password": password}
    url = base_url.rstrip("/") + "/_matrix/client/v3/register"
    for _ in range(3):
        async with session.post(url, json=body) as resp:
            answer = await resp.json()
            if resp.status == 200:
                return MxClient(session, base_url, answer["user_id"], answer["access_token"]), password
            body["auth"] = {"type": "m.login.dummy", "session": answer.get("session")}
    raise RequestFailed("registration did not complete")


async def _with_uia(client: MxClient, path: str, body: dict[str, Any], password: str) -> None:
    status, challenge = await client.call("POST", path, body)
    if status != 401:
        raise RequestFailed(f"{path}: expected a UIA challenge, got {status} {challenge}")
    auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": client.user_id},
        "password": password,
        "session": challenge["session"],
    }
    await client.ok("POST", path, {**body, "auth": auth})


async def _samples(
    runs: int, setup: Callable[[], Awaitable[Any]], call: Callable[[Any], Awaitable[None]]
) -> list[float]:
    out = []
    for _ in range(runs):
        state = await setup()
        t0 = time.perf_counter()
        await call(state)
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def _measure(base_url: str, rooms: int, runs: int) -> dict[str, list[float]]:
    async with aiohttp.ClientSession() as session:
        host, _ = await _register(session, base_url, "acchost")
        room_ids = [await _create_room(host, f"bench {i}") for i in range(rooms)]
        figures: dict[str, list[float]] = {}

        user, password = await _register(session, base_url, "acclogin")

        async def login(_: Any) -> None:
            body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user.user_id}}
            async with session.post(user.base + "/login", json={**body, "password": password}) as resp:
                if resp.status != 200:
                    raise RequestFailed(f"login -> {resp.status}")

        figures["login"] = await _samples(runs, _nothing, login)

        async def change_password(_: Any) -> None:
            nonlocal password
            new = secrets.token_hex(12)
            await _with_uia(
                user, "/account/password", {"new_password": new, "logout_devices": False}, password
            )
            password = new

        figures["password change"] = await _samples(runs, _nothing, change_password)

        async def joined_user() -> tuple[MxClient, str]:
            member, member_password = await _register(session, base_url, "accgone")
            for room_id in room_ids:
                await member.ok("POST", f"/join/{q(room_id)}", {})
            return member, member_password

        async def deactivate(state: tuple[MxClient, str]) -> None:
            await _with_uia(state[0], "/account/deactivate", {}, state[1])

        figures[f"deactivate ({rooms} rooms)"] = await _samples(runs, joined_user, deactivate)

        for i in range(200):
            await host.send_text(room_ids[0], f"message {i}")

        async def initial_sync(_: Any) -> None:
            answer = await host.ok("GET", f"/rooms/{q(room_ids[0])}/initialSync", limit="20")
            assert len(answer["messages"]["chunk"]) == 20

        figures["room initialSync (limit 20)"] = await _samples(runs, _nothing, initial_sync)
        return figures


async def _create_room(client: MxClient, name: str) -> str:
    """A public room, waiting out Synapse's room-creation rate limit (rc_room_creation) if it answers 429."""
    for _ in range(100):
        status, answer = await client.call("POST", "/createRoom", {"preset": "public_chat", "name": name})
        if status == 200:
            return str(answer["room_id"])
        if status != 429:
            raise RequestFailed(f"createRoom -> {status} {answer}")
        await asyncio.sleep(answer.get("retry_after_ms", 1000) / 1000)
    raise RequestFailed("createRoom kept answering 429")


async def _nothing() -> None:
    return None


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python3 -m bench accounts", description=__doc__.split("\n")[0])
    parser.add_argument("--rooms", type=int, default=20)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--servers", default="ranvier", help="comma-separated: ranvier, synapse")
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--synapse-version", default=DEFAULT_VERSION)
    args = parser.parse_args(argv)
    print(f"accounts bench: {args.rooms} rooms per deactivated user, {args.runs} runs")
    for kind in args.servers.split(","):
        with tempfile.TemporaryDirectory(prefix=f"bench-acc-{kind}-") as tmp:
            server = make_server(
                kind, Path(tmp), postgres=args.postgres, synapse_version=args.synapse_version
            )
            server.start()
            try:
                print(f"{kind} ({'PostgreSQL' if args.postgres else 'SQLite'}):", flush=True)
                figures = asyncio.run(_measure(server.client_url, args.rooms, args.runs))
                for name, samples in figures.items():
                    low, median = min(samples), statistics.median(samples)
                    print(f"  {name:<32} min {low:8.1f} ms   median {median:8.1f} ms")
            finally:
                server.stop()
