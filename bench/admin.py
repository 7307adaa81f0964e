"""Admin API latency on a real server process (Ranvier, and Synapse with ``--servers ranvier,synapse``).

The world: ``--rooms`` named public rooms (default 300) made by one user, the first 50 with a second
member, and ``--users`` users (default 200). Measured over ``--runs`` repetitions, min / median in
milliseconds, as a server admin registered with the shared secret:

- ``GET /_synapse/admin/v1/rooms?limit=100`` (ordered by name, every room summarised to sort them);
- the same ordered by ``joined_members``;
- ``GET /_synapse/admin/v1/rooms/{roomId}`` and ``.../members`` of one room;
- ``GET /_synapse/admin/v2/users?limit=100``.

Usage: python3 -m bench admin [--rooms 300] [--users 200] [--runs 20] [--servers ranvier] [--postgres]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import time
from typing import Any

import aiohttp
import yaml

from bench.servers import BenchServer
from bench.timing import Figures, get_json, run_on_servers, setup_call, timed
from bench.workloads.client import MxClient, q
from tests.interop.synapse import DEFAULT_VERSION


async def _admin(session: aiohttp.ClientSession, base_url: str, secret: str) -> MxClient:
    """An admin registered with the shared-secret API (/_synapse/admin/v1/register)."""
    async with session.get(base_url + "/_synapse/admin/v1/register") as resp:
        nonce = (await resp.json())["nonce"]
    password = "bench-admin-password"
    mac = hmac.new(
        secret.encode(),
        b"\x00".join([nonce.encode(), b"benchadmin", password.encode(), b"admin"]),
        hashlib.sha1,
    ).hexdigest()
    body = {"nonce": nonce, "username": "benchadmin", "password": password, "admin": True, "mac": mac}
    async with session.post(base_url + "/_synapse/admin/v1/register", json=body) as resp:
        answer = await resp.json()
        if resp.status != 200:
            raise RuntimeError(f"admin registration failed: {resp.status} {answer}")
    return MxClient(session, base_url, answer["user_id"], answer["access_token"])


async def _measure(base_url: str, secret: str, rooms: int, users: int, runs: int) -> Figures:
    async with aiohttp.ClientSession() as session:
        admin = await _admin(session, base_url, secret)
        owner = await MxClient.register(session, base_url, "owner")
        guest = await MxClient.register(session, base_url, "guest")
        # Synapse limits room creation per user (rc_room_creation): the builders' limits are lifted through
        # the admin API's override, which both servers have.
        for builder in (owner, guest):
            async with session.post(
                f"{base_url}/_synapse/admin/v1/users/{q(builder.user_id)}/override_ratelimit",
                json={"messages_per_second": 0, "burst_count": 0},
                headers={"Authorization": f"Bearer {admin.token}"},
            ) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"override_ratelimit -> {resp.status} {await resp.text()}")
        t0 = time.perf_counter()
        room_ids = []
        for i in range(rooms):
            room = await setup_call(
                owner, "POST", "/createRoom", {"preset": "public_chat", "name": f"room {i:04d}"}
            )
            room_ids.append(room["room_id"])
            if i < 50:
                await setup_call(guest, "POST", f"/rooms/{q(room['room_id'])}/join", {})
        for _ in range(users):
            await MxClient.register(session, base_url, "user")
        print(f"  built {rooms} rooms and {users + 3} users in {time.perf_counter() - t0:.1f} s", flush=True)
        one = room_ids[0]

        async def rooms_by_name() -> None:
            body = await get_json(admin, "/_synapse/admin/v1/rooms", limit="100")
            assert len(body["rooms"]) == min(100, rooms)

        async def rooms_by_size() -> None:
            body = await get_json(admin, "/_synapse/admin/v1/rooms", limit="100", order_by="joined_members")
            assert body["rooms"][0]["joined_members"] == 2

        async def details() -> None:
            assert (await get_json(admin, f"/_synapse/admin/v1/rooms/{q(one)}"))["joined_members"] == 2

        async def members() -> None:
            assert (await get_json(admin, f"/_synapse/admin/v1/rooms/{q(one)}/members"))["total"] == 2

        async def users_page() -> None:
            body = await get_json(admin, "/_synapse/admin/v2/users", limit="100")
            assert len(body["users"]) == min(100, users + 3)

        return {
            f"rooms list by name (100 of {rooms})": await timed(runs, rooms_by_name),
            f"rooms list by joined_members (100 of {rooms})": await timed(runs, rooms_by_size),
            "room details": await timed(runs, details),
            "room members": await timed(runs, members),
            f"users list (100 of {users + 3})": await timed(runs, users_page),
        }


def _secret(server: Any) -> str:
    secret = getattr(server, "shared_secret", None)
    if secret:
        return str(secret)
    return str(yaml.safe_load((server.workdir / "homeserver.yaml").read_text())["registration_shared_secret"])


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python3 -m bench admin", description=__doc__.split("\n")[0])
    parser.add_argument("--rooms", type=int, default=300)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--servers", default="ranvier", help="comma-separated: ranvier, synapse")
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--synapse-version", default=DEFAULT_VERSION)
    args = parser.parse_args(argv)
    print(f"admin bench: {args.rooms} rooms, {args.users} users, {args.runs} runs")

    async def measure(server: BenchServer) -> Figures:
        return await _measure(server.client_url, _secret(server), args.rooms, args.users, args.runs)

    run_on_servers(
        args.servers, postgres=args.postgres, synapse_version=args.synapse_version, prefix="bench-admin",
        measure=measure,
    )  # fmt: skip
