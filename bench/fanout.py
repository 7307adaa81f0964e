"""Outbound fan-out (issue 21): one user's message in a room whose other members are on ``--peers`` remote
servers (default 100), and the time until every one of them has received it over ``/send``.

The remote servers are simulated in this process: each is a real federation listener on loopback (TLS, its
own signing key served at ``/_matrix/key/v2/server``) whose user joined the room through
``make_join``/``send_join`` like any server, and whose ``PUT /send/{txnId}`` records when each message
first arrived (``time.perf_counter``, the clock the sending client reads too). Presence is off on the
server under test so that the only traffic is the room's.

Scenarios, ``--repeats`` messages each (min / median of the time until the last healthy peer has it):

- all peers healthy;
- 5 slow: they answer ``/send`` only after 2 s;
- 5 hung: they accept the request and never answer (released at the scenario's end);
- 5 refused: their listeners are closed (connections refused).

In the degraded scenarios the other peers must not wait for the bad ones: a sender with per-destination
head-of-line blocking shows it as a time of 2 s or more for the healthy peers.

Usage: python3 -m bench fanout [--peers 100] [--degraded 5] [--repeats 5] [--servers ranvier[,synapse]]
       [--postgres] [--out bench/results]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.ingest import IngestDriver
from bench.machine import describe_machine, finish, summary
from bench.servers import make_server
from bench.workloads.client import MxClient
from ranvier.federation.keys import Keyring
from tests.federation.fedserver import start_fed_server
from tests.interop.synapse import DEFAULT_VERSION

MARK = "fanout-"
SLOW_SECONDS = 2.0
JOIN_CONCURRENCY = 4
ARRIVAL_TIMEOUT = 120.0  # for the healthy peers; the bench reports a failure past it
QUIET_SECONDS = 1.0  # no /send at any peer this long, none unanswered: the previous sends have drained


@dataclass
class Peer:
    """A simulated remote server: its federation listener, and when each message reached it."""

    driver: IngestDriver | None = None
    mode: str = "ok"  # ok | slow | hung | refused
    arrivals: dict[str, float] = field(default_factory=dict)  # message body -> perf_counter
    release: asyncio.Event = field(default_factory=asyncio.Event)
    last_request: float = 0.0
    in_flight: int = 0  # /send requests not answered yet

    @property
    def name(self) -> str:
        assert self.driver is not None
        return self.driver.server_name


@dataclass
class World:
    peers: list[Peer]

    def quiet_since(self) -> float:
        """When the last /send arrived; now while any is still unanswered (a slow peer's transaction in
        flight holds back that peer's next message: one transaction in flight per destination)."""
        if any(p.in_flight for p in self.peers):
            return time.perf_counter()
        return max([p.last_request for p in self.peers] or [0.0])


async def start_peer(certs: Path) -> Peer:
    peer = Peer()

    async def send(request: web.Request) -> web.Response:
        peer.in_flight += 1
        try:
            body = await request.json()
            now = time.perf_counter()
            peer.last_request = now
            for pdu in body.get("pdus", []):
                text = pdu.get("content", {}).get("body") if isinstance(pdu.get("content"), dict) else None
                if isinstance(text, str) and text.startswith(MARK):
                    peer.arrivals.setdefault(text, now)
            if peer.mode == "slow":
                await asyncio.sleep(SLOW_SECONDS)
            elif peer.mode == "hung":
                await peer.release.wait()
            return web.json_response({"pdus": {}})
        finally:
            peer.in_flight -= 1

    def routes(app: web.Application, keyring: Keyring) -> None:
        app.router.add_put("/_matrix/federation/v1/send/{txnId}", send)

    peer.driver = IngestDriver(await start_fed_server(certs, routes=routes))
    return peer


async def _wait(predicate: Any, timeout: float, poll: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(poll)
    return True


async def _quiet(world: World, timeout: float = 120.0) -> None:
    """Wait until no peer has had a /send for ``QUIET_SECONDS`` (the joins' own fan-out has drained)."""
    deadline = time.monotonic() + timeout
    while time.perf_counter() - world.quiet_since() < QUIET_SECONDS and time.monotonic() < deadline:
        await asyncio.sleep(0.1)


async def _one(owner: MxClient, room_id: str, world: World, marker: str) -> dict[str, Any]:
    """Send one message; the seconds until each healthy / degraded peer first had it."""
    healthy = [p for p in world.peers if p.mode == "ok"]
    degraded = [p for p in world.peers if p.mode == "slow"]
    t0 = time.perf_counter()
    await owner.send_text(room_id, marker)
    answered = time.perf_counter() - t0
    reached = await _wait(lambda: all(marker in p.arrivals for p in healthy), ARRIVAL_TIMEOUT)
    result: dict[str, Any] = {"client_answer_s": answered}
    times = sorted(p.arrivals[marker] - t0 for p in healthy if marker in p.arrivals)
    result["healthy_received"] = len(times)
    result["healthy_all_s"] = times[-1] if reached and times else None
    result["healthy_median_s"] = statistics.median(times) if times else None
    if degraded:
        await _wait(lambda: all(marker in p.arrivals for p in degraded), ARRIVAL_TIMEOUT)
        slow = [p.arrivals[marker] - t0 for p in degraded if marker in p.arrivals]
        result["slow_all_s"] = max(slow) if len(slow) == len(degraded) else None
    return result


async def _measure(
    client_url: str, peers: int, degraded: int, repeats: int, workdir: Path
) -> dict[str, list[dict[str, Any]]]:
    world = World([await start_peer(workdir) for _ in range(peers)])
    try:
        async with aiohttp.ClientSession() as session:
            owner = await MxClient.register(session, client_url, "fan")
            room_id = await owner.create_room(name="fan-out")
            server_name = await _server_name(owner)
            t0 = time.perf_counter()
            limit = asyncio.Semaphore(JOIN_CONCURRENCY)

            async def join(peer: Peer) -> None:
                assert peer.driver is not None
                async with limit:
                    await peer.driver.join(server_name, room_id)

            await asyncio.gather(*(join(p) for p in world.peers))
            print(f"  {peers} servers joined in {time.perf_counter() - t0:.1f} s", flush=True)
            warm = await _one(owner, room_id, world, f"{MARK}warm-up")
            if warm["healthy_all_s"] is None:
                raise RuntimeError(f"the warm-up message reached {warm['healthy_received']} of {peers}")
            await _quiet(world)
            results: dict[str, list[dict[str, Any]]] = {}
            bad = world.peers[: degraded * 3]
            slow, hung, refused = bad[:degraded], bad[degraded : 2 * degraded], bad[2 * degraded :]
            scenarios: list[tuple[str, list[Peer], str]] = [
                ("all healthy", [], "ok"),
                (f"{degraded} slow (answer after {SLOW_SECONDS:g} s)", slow, "slow"),
                (f"{degraded} hung (never answer)", hung, "hung"),
                (f"{degraded} refused (listener closed)", refused, "refused"),
            ]
            for label, chosen, mode in scenarios:
                for peer in chosen:
                    peer.mode = mode
                    if mode == "refused":
                        assert peer.driver is not None
                        await peer.driver.fed.stop_listening()
                runs = []
                for r in range(repeats):
                    runs.append(await _one(owner, room_id, world, f"{MARK}{mode}-{r}"))
                results[label] = runs
                _print_scenario(label, runs)
                if mode in ("slow", "hung"):
                    for peer in chosen:
                        peer.mode = "ok"
                        peer.release.set()
                    await _quiet(world)
            return results
    finally:
        for peer in world.peers:
            peer.release.set()
            if peer.driver is not None:
                with contextlib.suppress(Exception):
                    await peer.driver.close()


async def _server_name(client: MxClient) -> str:
    return client.user_id.split(":", 1)[1]


def _stats(values: list[float | None]) -> str:
    got = [v for v in values if v is not None]
    if not got:
        return "no run reached every peer"
    missing = f" ({len(values) - len(got)} runs missed a peer)" if len(got) < len(values) else ""
    return f"min {min(got) * 1000:8.1f} ms   median {statistics.median(got) * 1000:8.1f} ms{missing}"


def _print_scenario(label: str, runs: list[dict[str, Any]]) -> None:
    print(f"  {label}:", flush=True)
    print(f"    all healthy peers have it     {_stats([r['healthy_all_s'] for r in runs])}")
    print(f"    median healthy peer           {_stats([r['healthy_median_s'] for r in runs])}")
    print(f"    client's send answered        {_stats([r['client_answer_s'] for r in runs])}")
    if "slow_all_s" in runs[0]:
        print(f"    the slow peers have it        {_stats([r['slow_all_s'] for r in runs])}")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python3 -m bench fanout", description=__doc__.split("\n")[0])
    parser.add_argument("--peers", type=int, default=100)
    parser.add_argument("--degraded", type=int, default=5, help="peers per degraded scenario")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--servers", default="ranvier", help="comma-separated: ranvier, synapse")
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--synapse-version", default=DEFAULT_VERSION)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    if args.degraded * 3 >= args.peers:
        parser.error("--peers must exceed 3 x --degraded (three degraded sets and at least one healthy peer)")
    machine = describe_machine(args.synapse_version if "synapse" in args.servers else None)
    print(f"fan-out bench: {args.peers} remote servers, {args.repeats} messages per scenario")
    document: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "results": {}}
    for kind in args.servers.split(","):
        with tempfile.TemporaryDirectory(prefix=f"bench-fanout-{kind}-") as tmp:
            server = make_server(
                kind, Path(tmp) / "server", postgres=args.postgres, synapse_version=args.synapse_version,
                presence=False,
            )  # fmt: skip
            server.start()
            try:
                print(f"{kind} ({'PostgreSQL' if args.postgres else 'SQLite'}):", flush=True)
                peers_dir = Path(tmp) / "peers"
                peers_dir.mkdir()
                document["results"][kind] = asyncio.run(
                    _measure(server.client_url, args.peers, args.degraded, args.repeats, peers_dir)
                )
            finally:
                server.stop()
    document["machine"] = finish(machine)
    print(summary(document["machine"]))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"fanout-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(document, indent=2))
    print(f"written to {path}")
