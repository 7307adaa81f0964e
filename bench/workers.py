"""Workers (issue 22): what several Ranvier processes on one PostgreSQL and Redis do next to one process.

For the single process and for 1, 2 and 4 worker processes besides main (split over roles as
``ranvier generate-config --workers N`` does: 1 = a client reader; 2 = reader + event persister;
4 = 2 readers, a persister and a federation sender), each a real deployment of subprocesses behind the
routing proxy of tests/workers/deployment.py (the single process behind the same proxy, so both pay its hop):

- client messages/s: ``--users`` users in ``--rooms`` rooms, each sending as fast as acknowledged while every
  user long-polls ``/sync`` through the proxy; a message counts once every member's ``/sync`` has seen it;
- inbound federation PDUs/s: ``--origins`` remote servers (the ingest driver of bench/ingest.py), each in a
  room of its own, each pushing transactions of 50 PDUs one after the other, as federation does;
- wake-up latency: a ``/sync`` long-poll parked on one process, a message sent on another (main, whose
  forward goes to the room's persister), the time from the send request to the ``/sync`` return (min/median
  of ``--wake`` trials; in the single process both are the same process);
- with ``--bus``: Redis pub/sub against PostgreSQL LISTEN/NOTIFY, publish to delivery on another
  connection (the raw wake-up path each would give).

The load average is printed with the figures (the machine is shared: the figures are noisy). Results also
go to bench/results/workers.json.

    python3 -m bench workers [--configs single,1,2,4,issue] [--parts client,federation,wake] [--users 8]
                             [--rooms 4] [--duration 10] [--origins 4] [--pdus 500] [--wake 5] [--bus]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.ingest import PER_TXN, start_driver
from ranvier.workers.layout import split_workers
from tests.workers.deployment import ISSUE_LAYOUT, PG_ADMIN_DSN, REDIS_URL, Deployment, services_problem

RESULTS = Path(__file__).parent / "results" / "workers.json"
V3 = "/_matrix/client/v3"


class User:
    def __init__(self, session: aiohttp.ClientSession, base: str, user_id: str, token: str) -> None:
        self.session, self.base, self.user_id, self.token = session, base, user_id, token

    @classmethod
    async def register(cls, session: aiohttp.ClientSession, base: str, name: str) -> User:
        body = {"username": name, "password": "pw-" + name * 2, "auth": {"type": "m.login.dummy"}}
        async with session.post(f"{base}{V3}/register", json=body) as resp:
            answer = await resp.json()
            if resp.status != 200:
                raise RuntimeError(f"register {name}: {resp.status} {answer}")
        return cls(session, base, answer["user_id"], answer["access_token"])

    def at(self, base: str) -> User:
        """The same user talking to another process directly."""
        return User(self.session, base, self.user_id, self.token)

    async def call(self, method: str, path: str, body: Any = None, **params: str) -> Any:
        async with self.session.request(
            method, f"{self.base}{V3}{path}", json=body, params=params or None,
            headers={"Authorization": f"Bearer {self.token}"},
        ) as resp:  # fmt: skip
            answer = await resp.json()
            if resp.status != 200:
                raise RuntimeError(f"{method} {path}: {resp.status} {answer}")
            return answer

    async def send(self, room_id: str, body: str) -> str:
        txn = secrets.token_hex(8)
        answer = await self.call(
            "PUT", f"/rooms/{room_id}/send/m.room.message/{txn}", {"msgtype": "m.text", "body": body}
        )
        return str(answer["event_id"])

    async def sync(self, since: str | None, timeout_ms: int) -> dict[str, Any]:
        params = {"timeout": str(timeout_ms)}
        if since:
            params["since"] = since
        return dict(await self.call("GET", "/sync", **params))


def _bodies(answer: dict[str, Any]) -> list[str]:
    out = []
    for room in answer.get("rooms", {}).get("join", {}).values():
        for event in room.get("timeline", {}).get("events", []):
            if event.get("type") == "m.room.message":
                out.append(str(event.get("content", {}).get("body", "")))
    return out


async def client_throughput(dep: Deployment, users: int, rooms: int, duration: float) -> dict[str, Any]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        people = [
            await User.register(session, dep.client_url, f"u{i}{secrets.token_hex(2)}") for i in range(users)
        ]
        public = {"preset": "public_chat"}
        room_ids = [(await people[0].call("POST", "/createRoom", public))["room_id"] for _ in range(rooms)]
        for person in people[1:]:
            for room_id in room_ids:
                await person.call("POST", f"/join/{room_id}", {})
        seen: dict[str, int] = {}  # body -> how many members' /sync returned it
        complete_at: dict[str, float] = {}
        stop = asyncio.Event()
        sent: dict[str, float] = {}

        async def sync_loop(person: User) -> None:
            since = (await person.sync(None, 0))["next_batch"]
            while not stop.is_set():
                answer = await person.sync(since, 2000)
                since = answer["next_batch"]
                now = time.perf_counter()
                for body in _bodies(answer):
                    if body in sent:
                        seen[body] = seen.get(body, 0) + 1
                        if seen[body] == users:
                            complete_at[body] = now

        async def send_loop(index: int, person: User, until: float) -> None:
            n = 0
            while time.perf_counter() < until:
                body = f"b{index}-{n}"
                sent[body] = time.perf_counter()
                await person.send(room_ids[index % rooms], body)
                n += 1

        syncs = [asyncio.create_task(sync_loop(p)) for p in people]
        await asyncio.sleep(1.0)  # every /sync parked
        start = time.perf_counter()
        await asyncio.gather(*(send_loop(i, p, start + duration) for i, p in enumerate(people)))
        acked = len(sent)
        sent_done = time.perf_counter()
        deadline = sent_done + 30
        while len(complete_at) < acked and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*syncs, return_exceptions=True)
        last = max(complete_at.values(), default=sent_done)
        return {
            "sent": acked,
            "sent_per_s": acked / (sent_done - start),
            "seen_by_all": len(complete_at),
            "seen_by_all_per_s": len(complete_at) / (last - start),
        }


async def federation_ingest(dep: Deployment, workdir: Path, origins: int, pdus: int) -> dict[str, Any]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        host = await User.register(session, dep.client_url, f"host{secrets.token_hex(2)}")
        drivers = [await start_driver(workdir / f"origin{i}") for i in range(origins)]
        try:
            rooms = []
            for driver in drivers:
                room_id = (await host.call("POST", "/createRoom", {"preset": "public_chat"}))["room_id"]
                rooms.append(await driver.join(dep.server_name, room_id))
            errors = 0

            async def push(driver: Any, room: Any) -> None:
                nonlocal errors
                for start in range(0, pdus, PER_TXN):
                    batch = [driver.message(room, f"f{start + i}") for i in range(min(PER_TXN, pdus - start))]
                    results = await driver.send(dep.server_name, batch)
                    errors += sum(1 for r in results.values() if "error" in r)

            began = time.perf_counter()
            await asyncio.gather(*(push(d, r) for d, r in zip(drivers, rooms, strict=True)))
            elapsed = time.perf_counter() - began
        finally:
            for driver in drivers:
                await driver.close()
    return {"pdus": origins * pdus, "errors": errors, "pdus_per_s": origins * pdus / elapsed}


async def wake_latency(dep: Deployment, trials: int) -> dict[str, Any]:
    readers = dep.names_of("client_reader")
    sync_on = dep.instance_url(readers[0]) if readers else dep.instance_url("main")
    send_on = dep.instance_url("main")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        alice = await User.register(session, dep.client_url, f"wa{secrets.token_hex(2)}")
        bob = await User.register(session, dep.client_url, f"wb{secrets.token_hex(2)}")
        room_id = (await alice.call("POST", "/createRoom", {"preset": "public_chat"}))["room_id"]
        await bob.call("POST", f"/join/{room_id}", {})
        watcher, writer = bob.at(sync_on), alice.at(send_on)
        since = (await watcher.sync(None, 0))["next_batch"]
        samples, after_ack = [], []
        for trial in range(trials):
            body = f"wake{trial}"
            poll = asyncio.create_task(_sync_until(watcher, since, body))
            await asyncio.sleep(0.3)  # parked on its process
            t0 = time.perf_counter()
            await writer.send(room_id, body)
            t_ack = time.perf_counter()
            since, t1 = await poll
            samples.append((t1 - t0) * 1000)
            after_ack.append((t1 - t_ack) * 1000)
    return {
        "sync_on": sync_on,
        "send_on": send_on,
        "send_to_sync_ms": samples,
        "ack_to_sync_ms": after_ack,
        "min_ms": min(samples),
        "median_ms": statistics.median(samples),
        "ack_min_ms": min(after_ack),
        "ack_median_ms": statistics.median(after_ack),
    }


async def _sync_until(user: User, since: str, body: str) -> tuple[str, float]:
    while True:
        answer = await user.sync(since, 20000)
        since = answer["next_batch"]
        if body in _bodies(answer):
            return since, time.perf_counter()


async def bus_latency(samples: int) -> dict[str, Any]:
    """Publish on one connection, receive on another: Redis pub/sub and PostgreSQL LISTEN/NOTIFY."""
    import asyncpg
    import redis.asyncio as aioredis

    out: dict[str, Any] = {}
    r_pub, r_sub = aioredis.from_url(REDIS_URL), aioredis.from_url(REDIS_URL)
    pubsub = r_sub.pubsub()
    channel = f"bench-wake-{secrets.token_hex(3)}"
    await pubsub.subscribe(channel)
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    redis_ms = []
    for i in range(samples):
        t0 = time.perf_counter()
        await r_pub.publish(channel, str(i))
        while (message := await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)) is None:
            pass
        redis_ms.append((time.perf_counter() - t0) * 1000)
        assert message["data"] == str(i).encode()
    await pubsub.aclose()
    await r_pub.aclose()
    await r_sub.aclose()

    listener, notifier = await asyncpg.connect(PG_ADMIN_DSN), await asyncpg.connect(PG_ADMIN_DSN)
    queue: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener(channel.replace("-", "_"), lambda *args: queue.put_nowait(args[3]))
    pg_ms = []
    for i in range(samples):
        t0 = time.perf_counter()
        await notifier.execute("SELECT pg_notify($1, $2)", channel.replace("-", "_"), str(i))
        assert await queue.get() == str(i)
        pg_ms.append((time.perf_counter() - t0) * 1000)
    await listener.close()
    await notifier.close()
    for name, values in (("redis_pubsub", redis_ms), ("postgres_notify", pg_ms)):
        out[name] = {"min_ms": min(values), "median_ms": statistics.median(values), "n": len(values)}
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    problem = await services_problem()
    if problem is not None:
        raise SystemExit(problem)
    results: dict[str, Any] = {"load_before": os.getloadavg(), "configs": {}}
    parts = set(args.parts.split(","))
    for config in args.configs.split(","):
        single = config == "single"
        counts = (
            {} if single else dict(ISSUE_LAYOUT) if config == "issue" else dict(split_workers(int(config)))
        )
        with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
            dep = await Deployment.start(Path(tmp), counts, single_process=single)
            try:
                entry: dict[str, Any] = {"processes": dep.layout.names, "load_start": os.getloadavg()}
                if "client" in parts:
                    entry["client"] = await client_throughput(dep, args.users, args.rooms, args.duration)
                if "federation" in parts:
                    entry["federation"] = await federation_ingest(dep, Path(tmp), args.origins, args.pdus)
                if "wake" in parts:
                    entry["wake"] = await wake_latency(dep, args.wake)
                entry["load_end"] = os.getloadavg()
            finally:
                await dep.stop()
        results["configs"][config] = entry
        _print_entry(config, entry)
    if args.bus:
        results["bus"] = await bus_latency(200)
        for name, figures in results["bus"].items():
            low, mid, n = figures["min_ms"], figures["median_ms"], figures["n"]
            print(f"bus {name}: min {low:.2f} ms, median {mid:.2f} ms (n={n})")
    results["load_after"] = os.getloadavg()
    return results


def _print_entry(config: str, entry: dict[str, Any]) -> None:
    load = " ".join(f"{x:.2f}" for x in entry["load_start"])
    lines = [
        f"{config:>6} ({len(entry['processes'])} processes: {', '.join(entry['processes'])}), load {load}"
    ]
    if (client := entry.get("client")) is not None:
        lines.append(
            f"  client: {client['sent_per_s']:.1f} sends/s acknowledged, "
            f"{client['seen_by_all_per_s']:.1f} msgs/s seen in every member's /sync "
            f"({client['seen_by_all']}/{client['sent']})"
        )
    if (fed := entry.get("federation")) is not None:
        lines.append(
            f"  federation: {fed['pdus_per_s']:.1f} PDUs/s ({fed['pdus']} PDUs, {fed['errors']} refused)"
        )
    if (wake := entry.get("wake")) is not None:
        lines.append(
            f"  wake-up (send on main, /sync on {wake['sync_on']}): send request to /sync return "
            f"min {wake['min_ms']:.1f} ms, median {wake['median_ms']:.1f} ms; "
            f"send acknowledged to /sync return min {wake['ack_min_ms']:.1f} ms, "
            f"median {wake['ack_median_ms']:.1f} ms"
        )
    print("\n".join(lines), flush=True)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python3 -m bench workers", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--configs",
        default="single,1,2,4",
        help="comma-separated: single, a worker count, or issue (2 readers, 2 persisters, 2 senders)",
    )
    parser.add_argument("--parts", default="client,federation,wake", help="what to measure (comma-separated)")
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--rooms", type=int, default=4)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--origins", type=int, default=4)
    parser.add_argument("--pdus", type=int, default=500, help="per origin")
    parser.add_argument("--wake", type=int, default=5, help="wake-up trials")
    parser.add_argument("--bus", action="store_true", help="also Redis pub/sub vs PostgreSQL NOTIFY")
    args = parser.parse_args(argv)
    results = asyncio.run(run(args))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1))
    print(f"wrote {RESULTS}")
