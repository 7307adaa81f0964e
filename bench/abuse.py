"""Resource abuse against a real Ranvier process with its default limits (issue 12 defects 5 and 6, issue 13
item 4); prints figures, asserts nothing.

``python3 -m bench abuse [slowloris|bodies|deadkey|keyrecovery ...]`` (all four by default):

* slowloris: N sockets (5,000) each sending one more header line every 10 s; how many the server still
  holds open after 75 s, and how long /versions takes meanwhile.
* bodies: the server's RSS before, during and after 40 unauthenticated federation /send bodies of 7.9 MB
  left unfinished (each connection sends 7.9 MB of an 8,000,000-byte body and stops).
* deadkey: how long a /send signed by a server whose key server accepts TCP and never answers is held.
* keyrecovery: after a failed fetch of a server's key (connection refused), how long until a request
  signed by that server is accepted once its key server is back.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil  # type: ignore[import-untyped]
import yaml
from aiohttp import web

from bench.servers import RanvierServer
from ranvier.federation.key_routes import add_key_routes
from ranvier.federation.keys import Keyring
from ranvier.federation.tls import generate_self_signed_cert, server_ssl_context
from ranvier.federation.x_matrix import sign_request
from ranvier.protocol.signing import SigningKey
from tests.ports import free_port


@dataclass
class AbuseServer(RanvierServer):
    extra: dict[str, Any] | None = None

    def configure(self) -> None:
        super().configure()
        path = self.workdir / "homeserver.yaml"
        data = yaml.safe_load(path.read_text())
        data["log_level"] = "WARNING"
        for key, value in (self.extra or {}).items():
            data[key] = value
        path.write_text(yaml.safe_dump(data))


def rss_mb(pid: int) -> float:
    return float(psutil.Process(pid).memory_info().rss) / 1e6


def established(port: int) -> int:
    count = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            if parts[3] == "01" and int(parts[1].split(":")[1], 16) == port:
                count += 1
    return count


def no_verify() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def time_versions(url: str) -> float:
    start = time.perf_counter()
    async with (
        aiohttp.ClientSession() as s,
        s.get(url + "/_matrix/client/versions", timeout=aiohttp.ClientTimeout(total=30)) as r,
    ):
        await r.read()
        assert r.status == 200, r.status
    return time.perf_counter() - start


# -- slowloris -----------------------------------------------------------------------------------------


async def slowloris(server: AbuseServer, sockets: int, interval: float, observe: float) -> None:
    port = server.client_port
    writers: list[asyncio.StreamWriter] = []
    for i in range(sockets):
        try:
            _r, w = await asyncio.open_connection("127.0.0.1", port)
        except OSError as e:
            print(f"  connection {i} failed: {e}")
            break
        w.write(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n")
        writers.append(w)
        if i % 500 == 499:
            await asyncio.sleep(0)
    start = time.monotonic()
    print(f"slowloris: {len(writers)} sockets open, one header line each every {interval:g} s")
    latencies: list[float] = []
    n = 0
    while time.monotonic() - start < observe:
        n += 1
        for w in writers:
            if not w.is_closing():
                w.write(f"X-Slow-{n}: a\r\n".encode())
        latencies.append(await time_versions(server.client_url))
        held = established(port)
        at = time.monotonic() - start
        print(f"  t={at:5.1f}s server holds {held} connections; /versions {latencies[-1]:.3f}s")
        await asyncio.sleep(interval)
    held, at = established(port), time.monotonic() - start
    print(
        f"slowloris result: {held} of {len(writers)} sockets still open after {at:.0f} s; "
        f"/versions median {statistics.median(latencies):.3f}s max {max(latencies):.3f}s"
    )
    for w in writers:
        w.transport.abort()


# -- unfinished bodies ---------------------------------------------------------------------------------


async def unfinished_bodies(server: AbuseServer, count: int, declared: int, sent: int) -> None:
    port = server.federation_port
    await asyncio.sleep(2)
    before = rss_mb(server.pid)
    forged = SigningKey.generate("x")
    writers = []
    answers: dict[int, int] = {}

    async def one(i: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=no_verify())
        writers.append(writer)
        path = f"/_matrix/federation/v1/send/abuse{i}"
        auth = sign_request("PUT", path, "evil.example", server.server_name, {}, forged)
        head = (
            f"PUT {path} HTTP/1.1\r\nHost: {server.server_name}\r\nContent-Type: application/json\r\n"
            f"Authorization: {auth}\r\nContent-Length: {declared}\r\n\r\n"
        )
        writer.write(head.encode())
        chunk = b" " * 65536
        left = sent
        try:
            while left > 0:
                writer.write(chunk[: min(left, len(chunk))])
                left -= min(left, len(chunk))
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        try:
            line = await asyncio.wait_for(reader.readline(), 90)
            answers[i] = int(line.split()[1]) if line else 0
        except (TimeoutError, ConnectionError, IndexError, ValueError):
            answers[i] = 0

    tasks = [asyncio.create_task(one(i)) for i in range(count)]
    await asyncio.sleep(10)
    during = rss_mb(server.pid)
    vers = await time_versions(server.client_url)
    print(f"bodies: {count} unfinished bodies of {sent / 1e6:.1f} MB (declared {declared}) sent")
    print(f"  RSS before {before:.0f} MB, 10 s into the attack {during:.0f} MB; /versions {vers:.3f}s")
    await asyncio.gather(*tasks)
    after = rss_mb(server.pid)
    statuses: dict[int, int] = {}
    for s in answers.values():
        statuses[s] = statuses.get(s, 0) + 1
    print(f"  answers by status: {dict(sorted(statuses.items()))} (0: closed without an answer)")
    print(f"  RSS after the server answered/closed all of them: {after:.0f} MB")
    for w in writers:
        w.transport.abort()


# -- keys ----------------------------------------------------------------------------------------------


async def signed_send(server: AbuseServer, origin: str, key: SigningKey) -> tuple[int, dict[str, Any], float]:
    path = f"/_matrix/federation/v1/send/k{time.monotonic_ns()}"
    body = {"origin": origin, "origin_server_ts": int(time.time() * 1000), "pdus": [], "edus": []}
    header = sign_request("PUT", path, origin, server.server_name, body, key)
    start = time.perf_counter()
    async with (
        aiohttp.ClientSession() as s,
        s.put(
            f"https://127.0.0.1:{server.federation_port}{path}",
            json=body,
            headers={"Authorization": header},
            ssl=False,
            timeout=aiohttp.ClientTimeout(total=120),
        ) as r,
    ):
        answer = await r.json()
        return r.status, answer, time.perf_counter() - start


async def dead_key_server(server: AbuseServer) -> None:
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # accepted by the kernel, never read nor answered
    origin = f"127.0.0.1:{sock.getsockname()[1]}"
    try:
        status, answer, took = await signed_send(server, origin, SigningKey.generate("d"))
        print(f"deadkey: /send from {origin} (key server accepts TCP, never answers) held {took:.2f} s")
        print(f"  answer {status} {answer}")
    finally:
        sock.close()


async def key_recovery(server: AbuseServer, workdir: Path) -> None:
    port = free_port()
    origin = f"127.0.0.1:{port}"
    key = SigningKey.generate("r")
    cert, keyfile = workdir / "origin.crt", workdir / "origin.key"
    generate_self_signed_cert(cert, keyfile)
    # Nothing listens on the origin's port yet: the first fetch is refused.
    status, answer, _ = await signed_send(server, origin, key)
    failed_at = time.monotonic()
    print(f"keyrecovery: first request while the key server is down: {status} {answer.get('error')}")
    app = web.Application()
    add_key_routes(app, Keyring(origin, [key]), origin)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=server_ssl_context(cert, keyfile)).start()
    try:
        tries = 0
        while True:
            tries += 1
            status, answer, _ = await signed_send(server, origin, key)
            if status == 200:
                break
            await asyncio.sleep(0.1)
        took = time.monotonic() - failed_at
        print(
            f"  key server back at once: the origin's requests are accepted {took:.2f} s "
            f"after the failed fetch ({tries} tries, 100 ms apart)"
        )
    finally:
        await runner.cleanup()


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="ranvier-abuse-") as tmp:
        workdir = Path(tmp)
        extra: dict[str, Any] = {}
        if args.budget_mb is not None:
            extra["request_limits"] = {"max_unauthenticated_body_bytes": args.budget_mb * 1024 * 1024}
        server = AbuseServer(workdir / "hs", extra=extra)
        server.start()
        try:
            for what in args.what:
                if what == "slowloris":
                    await slowloris(server, args.sockets, args.interval, args.observe)
                elif what == "bodies":
                    await unfinished_bodies(server, args.bodies, 8_000_000, 7_900_000)
                elif what == "deadkey":
                    await dead_key_server(server)
                elif what == "keyrecovery":
                    await key_recovery(server, workdir)
        finally:
            server.stop()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python3 -m bench abuse")
    parser.add_argument(
        "what", nargs="*", default=["slowloris", "bodies", "deadkey", "keyrecovery"],
        choices=["slowloris", "bodies", "deadkey", "keyrecovery"],
    )  # fmt: skip
    parser.add_argument("--sockets", type=int, default=5000)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--observe", type=float, default=75.0)
    parser.add_argument("--bodies", type=int, default=40)
    parser.add_argument("--budget-mb", type=int, help="request_limits.max_unauthenticated_body_bytes, in MiB")
    args = parser.parse_args(argv)
    if not args.what:
        args.what = ["slowloris", "bodies", "deadkey", "keyrecovery"]
    asyncio.run(run(args))
