"""Ranvier vs Synapse on loopback: the same workloads, through the public APIs only, with the same client
code, against fresh servers of each kind (two per kind when a workload federates).

    python3 -m bench compare [--workloads join,ingest,latency,join_gap,client_load] [--sizes 10,1000,5000]
                             [--repeats 3] [--postgres] [--out bench/results]

Each workload starts its own servers (so that memory and CPU belong to that workload alone), runs its
repeats, and stops them; the kinds alternate workload by workload so that both see the same machine.
Results: ``compare-<time>.md`` (the table), ``compare-<time>.json`` and ``<time>-<workload>.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench.machine import describe_machine, finish, summary
from bench.servers import BenchServer, ResourceSampler, make_server
from bench.workloads import all_workloads
from bench.workloads.base import Options, Pair, Recorder, Workload
from bench.workloads.proxy import DelayProxy
from bench.workloads.report import chart, markdown
from tests.interop.synapse import DEFAULT_VERSION

DEFAULT_WORKLOADS = "join,ingest,latency,join_gap,client_load"
WORKLOAD_TIMEOUT = 3600.0  # a hard bound on one workload against one kind, setup included
console = Console(stderr=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python3 -m bench compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--workloads", default=DEFAULT_WORKLOADS, help=f"comma list (default {DEFAULT_WORKLOADS})")
    p.add_argument(
        "--sizes",
        default="10,1000,5000",
        help="state events of the rooms the join workload builds, comma list",
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ingest-pdus", type=int, default=2000, help="PDUs pushed per ingest repeat")
    p.add_argument("--latency-messages", type=int, default=200)
    p.add_argument("--load-clients", type=int, default=10)
    p.add_argument("--load-messages", type=int, default=30, help="messages per client per load repeat")
    p.add_argument("--kinds", default="ranvier,synapse", help="servers to compare (ranvier,synapse)")
    p.add_argument("--postgres", action="store_true", help="a fresh PostgreSQL database per server")
    p.add_argument(
        "--presence",
        choices=("on", "off"),
        default="on",
        help="presence on both kinds alike (default on, each server's default)",
    )
    p.add_argument("--synapse-version", default=DEFAULT_VERSION)
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    p.add_argument("--no-charts", action="store_true")
    p.add_argument("--render", type=Path, help="only redraw the table and charts of an earlier run's JSON")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    args.out = args.out.resolve()  # the servers run with their work directory as cwd
    return args


async def run_one(
    wl: Workload, kind: str, opts: Options, args: argparse.Namespace, workdir: Path, tick: Any
) -> dict[str, Any]:
    """Fresh servers of ``kind``, the workload's repeats, servers stopped; failures become results."""
    rec = Recorder(tick)
    proxy = DelayProxy(workdir / "proxy") if wl.proxied else None
    servers: list[BenchServer] = [
        make_server(
            kind,
            workdir / f"server{i}",
            postgres=args.postgres,
            synapse_version=args.synapse_version,
            name_port=proxy.port if proxy is not None and i == 0 else None,
            presence=args.presence == "on",
        )
        for i in range(wl.servers)
    ]
    started: list[BenchServer] = []
    error: str | None = None
    usage: dict[str, Any] = {}
    try:
        for server in servers:
            await asyncio.to_thread(server.start)
            started.append(server)
        if proxy is not None:
            await proxy.start(servers[0].federation_port)  # type: ignore[attr-defined]
        sampler = ResourceSampler({f"server{i}": s.pid for i, s in enumerate(servers)})
        with sampler:
            async with aiohttp.ClientSession() as session:
                pair = Pair(kind, servers, session, workdir, proxy)
                await asyncio.wait_for(wl.run(pair, opts, rec), WORKLOAD_TIMEOUT)
        usage = {label: dataclasses.asdict(u) for label, u in sampler.usage.items()}
        for i, server in enumerate(started):
            if server_exited(server):
                error = f"server{i} exited during the workload"
    except Exception as e:
        error = f"{type(e).__name__}: {e}"
        for i, server in enumerate(started):
            (workdir / f"server{i}-tail.log").write_text(server.tail_log(200))
    finally:
        # In parallel: a Ranvier with federation connections open waits up to its shutdown timeout (10 s).
        await asyncio.gather(*(asyncio.to_thread(s.stop) for s in started), return_exceptions=True)
        if proxy is not None:
            await proxy.close()
    return {"series": [s.as_json() for s in rec.series.values()], "usage": usage, "error": error}


def server_exited(server: BenchServer) -> bool:
    process = getattr(server, "process", None)
    return process is not None and process.poll() is not None


async def run_all(args: argparse.Namespace) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    registry = all_workloads()
    names = [n.strip() for n in args.workloads.split(",") if n.strip()]
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise SystemExit(f"unknown workloads {unknown}; known: {', '.join(registry)}")
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    opts = Options(
        sizes=[int(s) for s in args.sizes.split(",") if s.strip()],
        repeats=args.repeats,
        ingest_pdus=args.ingest_pdus,
        latency_messages=args.latency_messages,
        load_clients=args.load_clients,
        load_messages=args.load_messages,
    )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results: dict[str, dict[str, Any]] = {}
    total = sum(registry[n].steps(opts) for n in names) * len(kinds)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("compare", total=total)
        for name in names:
            wl = registry[name]
            results[name] = {}
            for kind in kinds:
                progress.update(task, description=f"{name} on {kind}")
                workdir = args.out / "work" / stamp / f"{name}-{kind}"
                workdir.mkdir(parents=True, exist_ok=True)
                results[name][kind] = await run_one(
                    wl, kind, opts, args, workdir, lambda: progress.advance(task)
                )
                if results[name][kind]["error"]:
                    console.print(f"[red]{name} on {kind} failed: {results[name][kind]['error']}")
    return results, {n: registry[n].title for n in names}


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    machine: dict[str, Any] = {}
    if args.render:
        # The earlier run's own settings describe its figures, not this command line's.
        saved = json.loads(args.render.read_text())
        results = saved["results"]
        titles = saved.get("titles") or {n: w.title for n, w in all_workloads().items() if n in results}
        kinds = saved.get("kinds") or list(dict.fromkeys(k for r in results.values() for k in r))
        earlier = saved.get("args") or saved["meta"]["args"]  # the first runs kept only the meta strings
        args.synapse_version, args.repeats, args.sizes = (
            earlier["synapse_version"], earlier["repeats"], earlier["sizes"],
        )  # fmt: skip
        args.postgres = earlier["postgres"] in (True, "True")
        args.presence = earlier.get("presence", "unrecorded")
        machine = saved.get("machine", {})
    else:
        machine = describe_machine(args.synapse_version)
        results, titles = asyncio.run(run_all(args))
        machine = finish(machine)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    table = markdown(results, titles, kinds)
    header = (
        f"Ranvier vs Synapse {args.synapse_version}, {'PostgreSQL' if args.postgres else 'SQLite'}, "
        f"presence {args.presence} on both, {args.repeats} repeats, sizes {args.sizes}; "
        f"{platform.machine()}, "
        f"{time.strftime('%Y-%m-%d')}"
        + ("" if args.render else f"; took {time.monotonic() - started:.0f}s")
        + "\n\n"
        + (f"Machine: {summary(machine)}\n\n" if machine else "")
    )
    md_path = args.out / f"compare-{stamp}.md"
    md_path.write_text(header + table + "\n")
    saved_args = {"synapse_version": args.synapse_version, "postgres": args.postgres, "repeats": args.repeats,
                  "sizes": args.sizes, "presence": args.presence}  # fmt: skip
    meta = {"args": {k: str(v) for k, v in vars(args).items()}, "python": sys.version, "date": stamp}
    document = {
        "meta": meta,
        "args": saved_args,
        "machine": machine,
        "kinds": kinds,
        "titles": titles,
        "results": results,
    }
    (args.out / f"compare-{stamp}.json").write_text(json.dumps(document, indent=1))
    charts = []
    if not args.no_charts:
        for name, res in results.items():
            path = args.out / f"{stamp}-{name}.png"
            chart(name, titles[name], res, kinds, path)
            charts.append(path.name)
    print(header + table)
    print(f"\nwritten: {md_path}, {md_path.with_suffix('.json').name}, charts: {', '.join(charts) or 'none'}")
