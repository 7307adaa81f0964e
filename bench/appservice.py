"""Appservice push figures (issue 24): the time from an event's send to its arrival at the appservice
(min/median/p90 over N sends, each sent after the previous arrived), and how long 1,000 events queued
while the appservice was down take to arrive, in order, once it is back: without it pinging (Ranvier's
retry back-off is capped at 4 s, so the figure includes up to that wait), and with a ping on its return
(the back-off ends at once: the time to drain the backlog).

Ranvier runs in-process (SQLite) with one registration; the appservice is a bare aiohttp listener that
records each transaction's arrival, so its own overhead is negligible. Events are sent by a puppet
(as_token + ?user_id=, rate_limited: false) in a room whose members include the puppet.

``python3 -m bench appservice [--latency-n 100] [--backlog 1000]``
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
from aiohttp import web

from tests.appservice.harness import AS_TOKEN, HS_TOKEN, start_homeserver, write_config


class Receiver:
    """The appservice: PUT /_matrix/app/v1/transactions/{txnId}, recording (arrival time, event id)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.arrivals: dict[str, float] = {}
        self.order: list[str] = []
        self.txn_ids: set[str] = set()
        self.waiters: dict[str, asyncio.Future[float]] = {}
        self._runner: web.AppRunner | None = None

    async def _txn(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {HS_TOKEN}":
            return web.json_response({"errcode": "M_FORBIDDEN"}, status=403)
        now = time.perf_counter()
        txn_id = request.match_info["txn"]
        body: dict[str, Any] = await request.json()
        if txn_id not in self.txn_ids:
            self.txn_ids.add(txn_id)
            for event in body.get("events", []):
                event_id = event["event_id"]
                self.arrivals[event_id] = now
                self.order.append(event_id)
                waiter = self.waiters.pop(event_id, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(now)
        return web.json_response({})

    async def _ping(self, request: web.Request) -> web.Response:
        ok = request.headers.get("Authorization") == f"Bearer {HS_TOKEN}"
        return web.json_response({}, status=200 if ok else 403)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_put("/_matrix/app/v1/transactions/{txn}", self._txn)
        app.router.add_post("/_matrix/app/v1/ping", self._ping)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def run(latency_n: int, backlog: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        config, as_port = write_config(Path(tmp), rate_limited=False, ephemeral=False)
        hs = await start_homeserver(config)
        receiver = Receiver(as_port)
        await receiver.start()
        base = f"http://127.0.0.1:{hs.ports['client']}"
        headers = {"Authorization": f"Bearer {AS_TOKEN}"}
        puppet = f"@bridge_bench:{hs.server_name}"
        try:
            async with aiohttp.ClientSession() as http:

                async def call(method: str, path: str, body: Any, **params: str) -> Any:
                    async with http.request(
                        method, base + path, json=body, headers=headers, params=params
                    ) as r:
                        data = await r.json()
                        assert r.status == 200, data
                        return data

                await call(
                    "POST",
                    "/_matrix/client/v3/register",
                    {
                        "type": "m.login.application_service",
                        "username": "bridge_bench",
                        "inhibit_login": True,
                    },
                )
                room = (await call("POST", "/_matrix/client/v3/createRoom", {}, user_id=puppet))["room_id"]
                send_path = f"/_matrix/client/v3/rooms/{room}/send/m.room.message/"

                async def send(i: int, tag: str) -> tuple[str, float]:
                    start = time.perf_counter()
                    event = await call(
                        "PUT", f"{send_path}{tag}{i}", {"msgtype": "m.text", "body": str(i)}, user_id=puppet
                    )
                    return event["event_id"], start

                # 1. Send -> push latency, one at a time.
                latencies: list[float] = []
                send_ms: list[float] = []
                for i in range(latency_n):
                    loop = asyncio.get_running_loop()
                    start = time.perf_counter()
                    body = {"msgtype": "m.text", "body": str(i)}
                    task = asyncio.ensure_future(call("PUT", f"{send_path}l{i}", body, user_id=puppet))
                    event_id = (await task)["event_id"]
                    send_ms.append((time.perf_counter() - start) * 1000)
                    if event_id in receiver.arrivals:
                        arrived = receiver.arrivals[event_id]
                    else:
                        fut: asyncio.Future[float] = loop.create_future()
                        receiver.waiters[event_id] = fut
                        arrived = await asyncio.wait_for(fut, 30)
                    latencies.append((arrived - start) * 1000)

                # 2. A backlog queued while the appservice is down, delivered after it returns.
                await receiver.stop()
                queued = []
                for i in range(backlog):
                    queued.append((await send(i, "q"))[0])
                worker = hs.appservice_pusher.workers["bridge"]
                while worker.failures == 0:
                    await asyncio.sleep(0.05)
                receiver.order.clear()
                back = time.perf_counter()
                await receiver.start()
                last = queued[-1]
                while last not in receiver.arrivals or receiver.arrivals[last] < back:
                    await asyncio.sleep(0.01)
                backlog_s = receiver.arrivals[last] - back
                in_order = [e for e in receiver.order if e in set(queued)] == queued

                # 3. The same, but the appservice pings when it is back (mautrix bridges do at start):
                # the back-off ends at once, so this is the time to drain the backlog.
                await receiver.stop()
                failures = worker.failures
                queued2 = [(await send(i, "p"))[0] for i in range(backlog)]
                while worker.failures == failures:
                    await asyncio.sleep(0.05)
                await receiver.start()
                back = time.perf_counter()
                await call("POST", "/_matrix/client/v1/appservice/bridge/ping", {})
                while queued2[-1] not in receiver.arrivals:
                    await asyncio.sleep(0.01)
                drain_s = receiver.arrivals[queued2[-1]] - back
        finally:
            await receiver.stop()
            await hs.stop()
    latencies.sort()
    return {
        "latency_ms_min": round(latencies[0], 2),
        "latency_ms_median": round(statistics.median(latencies), 2),
        "latency_ms_p90": round(latencies[int(len(latencies) * 0.9) - 1], 2),
        "send_request_ms_median": round(statistics.median(send_ms), 2),
        "backlog_events": backlog,
        "backlog_delivered_s_after_return": round(backlog_s, 2),
        "backlog_in_order_once": in_order and len(receiver.order) == len(set(receiver.order)),
        "backlog_delivered_s_after_return_with_ping": round(drain_s, 2),
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python3 -m bench appservice")
    parser.add_argument("--latency-n", type=int, default=100)
    parser.add_argument("--backlog", type=int, default=1000)
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.latency_n, args.backlog))
    for key, value in result.items():
        print(f"{key:36} {value}")
