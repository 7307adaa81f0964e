"""What tracing costs (issue 25): inbound ``/send`` ingest and the latency from a client's send on one
server to the other server's user seeing it in ``/sync``, with tracing off and on.

"on" is OpenTelemetry as an operator runs it: ``OTEL_TRACES_EXPORTER=otlp`` over HTTP/protobuf to a
collector (here a sink on loopback that accepts and discards), every trace sampled
(``OTEL_TRACES_SAMPLER=traceidratio``, ratio 1.0), and the two servers listing each other as
``tracing.federation_peers`` so that one trace follows each message across both. "off" has no ``OTEL_*``
variable at all (the SDK is not even imported). Modes alternate run by run so that drift on a shared
machine hits both alike.

Usage: python3 -m bench tracing [--pdus 2000] [--per-txn 50] [--messages 100] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
from aiohttp import web

from bench.send_ingest import _one_run
from tests.ports import free_port
from tests.scenarios.servers import Client, eventually, start_server


@contextmanager
def tracing_env(endpoint: str | None) -> Iterator[None]:
    saved = {k: v for k, v in os.environ.items() if k.startswith("OTEL_")}
    for key in saved:
        del os.environ[key]
    if endpoint is not None:
        os.environ.update(
            {
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                "OTEL_TRACES_SAMPLER": "traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": "1.0",
            }
        )
    try:
        yield
    finally:
        for key in [k for k in os.environ if k.startswith("OTEL_")]:
            del os.environ[key]
        os.environ.update(saved)


async def start_sink() -> tuple[web.AppRunner, str, list[int]]:
    received: list[int] = []

    async def traces(request: web.Request) -> web.Response:
        received.append(len(await request.read()))
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application(client_max_size=64 * 2**20)
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}", received


async def send_to_sync_latency(tmp: Path, messages: int) -> list[float]:
    peers = {"tracing": {"federation_peers": ["127.0.0.1:*"]}}
    a = await start_server(tmp / "a", rate_limits={"enabled": False}, extra=peers)
    b = await start_server(tmp / "b", rate_limits={"enabled": False}, extra=peers)
    try:
        async with aiohttp.ClientSession() as session:
            alice = await Client.register(session, a, "alice")
            bob = await Client.register(session, b, "bob")
            room = await alice.create_room(preset="public_chat")
            await bob.ok("POST", f"/join/{room}", {}, server_name=a.server_name)
            await a.resident.wait_for_healing()

            async def quiet() -> bool:
                return b.server_name not in await a.storage.outbox.pending_counts()

            await eventually(quiet, timeout=30)
            await bob.sync()
            out: list[float] = []
            for i in range(messages):
                body = f"m{i}"
                waiting = asyncio.create_task(_sync_until(bob, room, body))
                await asyncio.sleep(0.01)  # Bob's long-poll is waiting, as a client's would be
                t0 = time.perf_counter()
                await alice.send_text(room, body)
                await asyncio.wait_for(waiting, 30)
                out.append((time.perf_counter() - t0) * 1000)
            return out
    finally:
        await b.stop()
        await a.stop()


async def _sync_until(client: Client, room: str, body: str) -> None:
    while True:
        answer = await client.sync(timeout_ms=30_000)
        events = answer.get("rooms", {}).get("join", {}).get(room, {}).get("timeline", {}).get("events", [])
        if any(e.get("content", {}).get("body") == body for e in events):
            return


def _fig(values: list[float], fmt: str = "{:.1f}") -> str:
    return f"{fmt.format(min(values))} / {fmt.format(statistics.median(values))}"


async def _main(args: argparse.Namespace) -> None:
    runner, endpoint, received = await start_sink()
    ingest: dict[str, list[float]] = {"off": [], "on": []}
    cpu: dict[str, list[float]] = {"off": [], "on": []}
    latency: dict[str, list[float]] = {"off": [], "on": []}
    try:
        for run in range(args.runs):
            for mode in ("off", "on") if run % 2 == 0 else ("on", "off"):
                with tracing_env(endpoint if mode == "on" else None), tempfile.TemporaryDirectory() as tmp:
                    url = f"sqlite:///{Path(tmp) / 'hs' / 'homeserver.db'}"
                    result = await _one_run(Path(tmp), url, 1, args.pdus, args.per_txn, None)
                    ingest[mode].append(result.accepted)
                    cpu[mode].append(result.cpu_us)
                    latency[mode] += await send_to_sync_latency(Path(tmp) / "lat", args.messages)
                print(f"run {run + 1} {mode}: ingest {result.accepted:.0f} PDU/s", flush=True)
    finally:
        await runner.cleanup()
    print(
        f"\ntracing: {args.pdus} PDUs ({args.per_txn} a transaction), "
        f"{args.messages} messages a run, {args.runs} runs"
    )
    head = f"{'ingest PDU/s min / median':>28} {'CPU us/PDU median':>18} {'send->/sync ms min / median':>28}"
    print(f"{'':<5} {head}")
    for mode in ("off", "on"):
        print(
            f"{mode:<5} {_fig(ingest[mode], '{:.0f}'):>28} {statistics.median(cpu[mode]):>18.0f}"
            f" {_fig(latency[mode]):>28}"
        )
    off, on = statistics.median(ingest["off"]), statistics.median(ingest["on"])
    lat_off, lat_on = statistics.median(latency["off"]), statistics.median(latency["on"])
    print(
        f"overhead with tracing on (ratio 1.0): ingest {100 * (off - on) / off:+.1f}% slower, "
        f"send->/sync median {lat_on - lat_off:+.2f} ms; {len(received)} exports, "
        f"{sum(received) / 2**20:.1f} MiB sent to the collector"
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python3 -m bench tracing", description=__doc__.split("\n")[0])
    parser.add_argument("--pdus", type=int, default=2000)
    parser.add_argument("--per-txn", type=int, default=50)
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    asyncio.run(_main(parser.parse_args(argv)))
