"""Inbound federation ingest (issue 6's figure): the driver of ``bench/ingest.py`` joins a fresh room of
server 0 each repeat and pushes a chain of message PDUs, 50 per transaction. Figures: PDUs/s acknowledged,
PDUs/s readable through ``/messages`` (kept / time until the last kept one was served), how many of the PDUs
the server kept, counted by paging ``/messages`` to the room's start (a server may fetch skipped events
back while a client pages: issue 21 found Synapse ends with all of them), and, apart from that, how many
one ``/messages`` read of the newest PDUs serves before any paging; and the server's own CPU time (process
and children) per PDU from the first transaction sent to the last acknowledged (the driver, in the bench's
process, is not counted)."""

from __future__ import annotations

import asyncio
import contextlib
import time

import psutil

from bench.ingest import PER_TXN, IngestDriver, start_driver
from bench.servers import BenchServer

from .base import Options, Pair, Recorder, describe
from .client import MxClient

READ_STALL = 20.0  # stop waiting for more to become readable after this long without progress
READ_MAX = 300.0


def _cpu_seconds(process: psutil.Process) -> float:
    """User and system CPU of ``process`` and its children (Synapse's workers, if any) so far."""
    total = 0.0
    for p in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = p.cpu_times()
            total += times.user + times.system
    return total


class Ingest:
    name = "ingest"
    title = "Inbound federation ingest (chain of PDUs, 50 per transaction)"
    servers = 1
    proxied = False

    def steps(self, opts: Options) -> int:
        return opts.repeats

    async def run(self, pair: Pair, opts: Options, rec: Recorder) -> None:
        target = pair.servers[0]
        label = f"{opts.ingest_pdus} PDUs"
        driver: IngestDriver | None = None
        try:
            driver = await start_driver(pair.workdir / "driver")
            owner = await MxClient.register(pair.session, target.client_url, "owner")
            for r in range(opts.repeats):
                try:
                    await self._once(driver, owner, target, opts.ingest_pdus, f"in{r}-", label, rec)
                except Exception as e:
                    rec.failure("accepted", "PDU/s", describe(e), label, "higher")
                rec.tick()
        finally:
            if driver is not None:
                await driver.close()

    async def _once(
        self, driver: IngestDriver, owner: MxClient, server: BenchServer, total: int, prefix: str,
        label: str, rec: Recorder,
    ) -> None:  # fmt: skip
        target = server.server_name
        room_id = await owner.create_room(name="ingest")
        room = await driver.join(target, room_id)
        pdus = [driver.message(room, f"{prefix}{i}") for i in range(total)]
        refused = 0
        process = psutil.Process(server.pid)
        cpu0 = _cpu_seconds(process)
        t0 = time.perf_counter()
        for i in range(0, total, PER_TXN):
            results = await driver.send(target, pdus[i : i + PER_TXN])
            refused += sum(1 for v in results.values() if isinstance(v, dict) and "error" in v)
        acked = time.perf_counter() - t0
        # The server's own CPU (its process and children, every thread) from the first transaction sent to
        # the last acknowledged, per PDU: the driver runs in this process, so none of its work is counted.
        rec.value("server CPU while sending", "us/PDU", (_cpu_seconds(process) - cpu0) / total * 1e6, label)
        # Readable: poll the newest few events (cheap, so that polling does not compete with the ingest)
        # until the last PDU is served or the newest stopped changing for READ_STALL; count once at the end.
        newest, last_change, readable_at = -1, time.perf_counter(), t0
        while True:
            texts = await owner.texts_back(room_id, 5)
            now_newest = max((int(t[len(prefix) :]) for t in texts if t.startswith(prefix)), default=-1)
            now = time.perf_counter()
            if now_newest != newest:
                newest, last_change, readable_at = now_newest, now, now
            if newest >= total - 1 or now - last_change > READ_STALL or now - t0 > READ_MAX:
                break
            await asyncio.sleep(0.1)
        first_read = sum(1 for t in await owner.texts_back(room_id, total) if t.startswith(prefix))
        kept = await owner.count_texts(room_id, prefix)
        rec.value("accepted", "PDU/s", total / acked, label, "higher")
        if kept:
            rec.value("readable via /messages", "PDU/s", kept / (readable_at - t0), label, "higher")
        else:
            rec.failure(
                "readable via /messages", "PDU/s", "none of the PDUs became readable", label, "higher"
            )
        rec.value("kept (paged to the start)", "PDUs", kept, label, "higher")
        rec.value("readable in the first /messages read", "PDUs", first_read, label, "higher")
        if refused:
            rec.note(
                "kept (paged to the start)", "PDUs", f"{refused} refused in /send answers", label, "higher"
            )
