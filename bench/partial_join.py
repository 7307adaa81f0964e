"""Partial-state ("faster") joins, side by side (issue 19): Ranvier joining Ranvier, Ranvier joining Synapse,
Synapse joining Synapse (and, with ``--pairs``, Synapse joining Ranvier), for rooms of several sizes.

For every joined room (a fresh room per repeat: the joining server has never seen it) three times are taken
from the client's ``POST /join``:

* ``sync``: the room shows up as joined in the joiner's long-polling ``/sync`` with a lazy-loading filter;
* ``send``: the first message sent right after ``/join`` answered has been accepted (``PUT /send`` answered);
* ``full``: ``GET /members?membership=join`` lists every member (the owner, the N members and the joiner).
  Both servers' ``/members`` wait for the full state of a partial-state room (Ranvier's for a bounded time:
  then it is polled every ``POLL`` seconds until complete).

``/join`` answered is reported too, and whether the join was partial, read from the joining server's log.
The ``send_join`` answer size with and without ``omit_members`` is measured once per size and resident by a
probe server (an in-process Ranvier) that joins the last room of the size with
``make_join`` + ``send_join`` v2 itself: bytes of the answer re-serialised as compact JSON (aiohttp hands the
client a parsed body; compact JSON is what both servers send, give or take key order and escapes).

Building the rooms: Ranvier's rooms are built in the resident's own database before its process starts
(``build_ranvier_rooms``): the room is created through the client API of an in-process server over the same
configuration, then N ``m.room.member`` joins of local users are built, signed and authorised like any local
event and written through storage's ``persist_events`` in batches, each citing the previous one. That skips
only the persister's per-batch resolution, which needs the full state map of every event of a batch (O(N^2)
for a linear chain of joins); the current state is handed over as it stands after each batch. Synapse's rooms
are built through its client API (users registered with the shared-secret admin API, bcrypt rounds lowered,
then ``/join`` each), which costs Synapse tens of milliseconds of CPU per member: sizes above a few thousand
are impractical on a small machine, hence ``--synapse-sizes`` apart from ``--sizes``. The building time of
every room is printed and saved.

``python3 -m bench partial_join [--sizes 10,1000,10000,50000] [--synapse-sizes 10,1000] [--repeats 5]
[--pairs rr,rs,ss] [--probe-sizes 10000,50000] [--workdir bench/results/partial_join]``; pair codes:
joiner then resident, ``r`` for Ranvier, ``s`` for Synapse (``sr``: Synapse joins Ranvier).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bench.machine import describe_machine, finish, summary
from bench.servers import BenchServer, RanvierServer, SynapseBenchServer
from bench.synapse_rooms import host_on_synapse
from bench.workloads.client import MxClient, SyncWatcher, q
from ranvier.app import Homeserver
from ranvier.config import load_config
from ranvier.federation.client import path_segment
from ranvier.protocol.auth.rules import check_auth_rules
from ranvier.protocol.auth.selection import auth_types_for_event
from ranvier.protocol.events import build_event
from ranvier.protocol.room_versions import KNOWN_ROOM_VERSIONS, get_room_version
from ranvier.rooms.local_events import depth_after
from ranvier.rooms.membership_template import sign_membership_template
from ranvier.storage.interfaces import EventToPersist
from tests.interop.synapse import DEFAULT_VERSION
from tests.scenarios.servers import start_server

BATCH = 1000  # joins per persist_events transaction while building
BUILD_CONCURRENCY = 4  # Synapse building: requests in flight
POLL = 0.1  # seconds between /members polls of a joiner that answers what it knows
STEP_TIMEOUT = 900.0
CREATE_KEY = ("m.room.create", "")


# -- building ---------------------------------------------------------------------------------------------


async def add_ranvier_members(hs: Homeserver, room_id: str, count: int) -> None:
    """``count`` local users join ``room_id`` (public) on the in-process ``hs``: real events, signed with
    the server's key, checked by the auth rules, persisted in order through storage."""
    rv = await hs.creator.room_version(room_id)
    async with hs.persister.room_lock(room_id):
        prev_ids, state = await hs.creator.tips_and_state(room_id, rv)
        if len(prev_ids) != 1:
            raise RuntimeError(f"expected one forward extremity in a fresh room, got {prev_ids}")
        depth = await hs.storage.events.get_max_depth_of(prev_ids)
        fixed_keys = {CREATE_KEY, ("m.room.join_rules", ""), ("m.room.power_levels", "")}
        fixed = await hs.state.load_state_events({k: v for k, v in state.items() if k in fixed_keys})
        done = 0
        while done < count:
            batch: list[EventToPersist] = []
            for i in range(done, min(count, done + BATCH)):
                user = f"@member{i}:{hs.server_name}"
                content = {"membership": "join", "displayname": f"Member {i}"}
                auth_keys = auth_types_for_event(rv, "m.room.member", user, user, content)
                depth = depth_after(rv, depth)
                pdu = build_event(
                    room_version=rv,
                    room_id=room_id,
                    sender=user,
                    event_type="m.room.member",
                    content=content,
                    state_key=user,
                    prev_events=prev_ids,
                    auth_events=sorted(e.event_id for k, e in fixed.items() if k in auth_keys),
                    depth=depth,
                    origin_server_ts=int(time.time() * 1000),
                    server_name=hs.server_name,
                    signing_key=hs.signing_key,
                )
                check_auth_rules(pdu, fixed)  # a new member: only create, join rules and power levels count
                batch.append(EventToPersist(pdu=pdu, state_before_is_after_prev=True))
                state[("m.room.member", user)] = pdu.event_id
                prev_ids = [pdu.event_id]
            await hs.storage.events.persist_events(room_id, batch, new_current_state=dict(state))
            done += len(batch)


class PrebuiltRanvier(RanvierServer):
    """A Ranvier resident whose configuration (and signing key) is written once: the rooms built in its
    database before it starts are signed with that key."""

    def configure(self) -> None:
        if not (self.workdir / "homeserver.yaml").exists():
            super().configure()


async def build_ranvier_rooms(
    server: PrebuiltRanvier, sizes: list[int], repeats: int
) -> dict[int, list[Room]]:
    server.configure()
    hs = Homeserver(load_config(server.workdir / "homeserver.yaml"))
    await hs.start()
    rooms: dict[int, list[Room]] = {}
    try:
        async with aiohttp.ClientSession() as session:
            owner = await MxClient.register(session, f"http://127.0.0.1:{hs.ports['client']}", "owner")
            for size in sizes:
                for i in range(repeats):
                    started = time.perf_counter()
                    room_id = await owner.create_room(name=f"partial {size} #{i}", topic="bench")
                    await add_ranvier_members(hs, room_id, size)
                    took = time.perf_counter() - started
                    rooms.setdefault(size, []).append(Room(room_id, size, took))
                    print(f"  built Ranvier room of {size} members in {took:.1f} s", flush=True)
    finally:
        await hs.stop()
    return rooms


async def build_synapse_rooms(
    server: SynapseBenchServer, session: aiohttp.ClientSession, sizes: list[int], repeats: int
) -> dict[int, list[Room]]:
    owner_id, owner_token = await asyncio.to_thread(server.register, "owner")
    owner = MxClient(session, server.client_url, owner_id, owner_token)
    members: list[MxClient] = []
    rooms: dict[int, list[Room]] = {}
    for size in sizes:
        started = time.perf_counter()
        todo = iter(range(len(members), size))

        async def register(todo: Iterator[int]) -> None:
            for i in todo:  # a shared iterator: each index once, BUILD_CONCURRENCY in flight
                user_id, token = await asyncio.to_thread(server.register, f"member{i}")
                members.append(MxClient(session, server.client_url, user_id, token))

        await asyncio.gather(*(register(todo) for _ in range(BUILD_CONCURRENCY)))
        registering = time.perf_counter() - started
        print(f"  registered {size} Synapse users in {registering:.1f} s (shared by the rooms)", flush=True)
        for i in range(repeats):
            started = time.perf_counter()
            room_id = await owner.create_room(name=f"partial {size} #{i}", topic="bench")
            joiners = iter(members[:size])

            async def join(joiners: Iterator[MxClient], room_id: str) -> None:
                for m in joiners:
                    await m.join(room_id, server.server_name)

            await asyncio.gather(*(join(joiners, room_id) for _ in range(BUILD_CONCURRENCY)))
            took = time.perf_counter() - started
            rooms.setdefault(size, []).append(Room(room_id, size, took))
            print(f"  built Synapse room of {size} members in {took:.1f} s", flush=True)
    return rooms


class SynapseForBench(SynapseBenchServer):
    """Synapse with cheap password hashing: the benchmark registers thousands of users."""

    def configure(self) -> None:
        super().configure()
        extra_path = self.workdir / "extra.yaml"
        extra = yaml.safe_load(extra_path.read_text())
        extra["bcrypt_rounds"] = 4
        extra_path.write_text(yaml.safe_dump(extra))


# -- timing -----------------------------------------------------------------------------------------------


@dataclass
class Room:
    room_id: str
    size: int
    build_s: float
    # Joined members besides the owner and the N members: the Synapse host user of a room built through
    # federation (``--synapse-build federated``).
    extra_members: int = 0


@dataclass
class Join:
    join_answered_s: float
    sync_s: float
    send_s: float
    full_s: float
    partial_seen: bool


@dataclass
class Figures:
    pair: str
    size: int
    joins: list[Join] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    build_s: list[float] = field(default_factory=list)


async def joined_members(client: MxClient, room_id: str) -> int:
    answer = await client.ok(
        "GET", f"/rooms/{q(room_id)}/members", http_timeout=STEP_TIMEOUT, membership="join"
    )
    return sum(1 for e in answer.get("chunk", []) if e.get("content", {}).get("membership") == "join")


def joined_partially(server: BenchServer, room_id: str) -> bool:
    """Whether the joining server's log says it joined ``room_id`` with partial state (Ranvier: its join
    line names the servers in the room; Synapse: it starts "Syncing state" for the room). /members cannot
    tell: both servers make it wait for the full state."""
    if isinstance(server, RanvierServer):
        path = server.workdir / "stdout.log"
        needles: tuple[str, ...] = (f"joined {room_id} via", "partial state (")
    else:
        assert isinstance(server, SynapseBenchServer)
        path, needles = server.log_path, (f"Syncing state for room {room_id}",)
    if not path.exists():
        return False
    return any(all(n in line for n in needles) for line in path.read_text(errors="replace").splitlines())


async def time_join(joiner: MxClient, room: Room, via: str) -> Join:
    expected = room.size + 2 + room.extra_members  # the owner, the members, the joiner (and a host user)
    watcher = SyncWatcher(joiner)
    await watcher.start()
    try:
        t0 = time.perf_counter()
        await joiner.ok("POST", f"/join/{q(room.room_id)}", {}, http_timeout=STEP_TIMEOUT, server_name=via)
        answered = time.perf_counter() - t0
        await joiner.send_text(room.room_id, "first message")
        sent = time.perf_counter() - t0
        # Both servers' /members wait (bounded) for the full state; poll in case the bound is reached.
        while (count := await joined_members(joiner, room.room_id)) < expected:
            if time.perf_counter() - t0 > STEP_TIMEOUT:
                raise TimeoutError(f"/members at {count} of {expected} after {STEP_TIMEOUT:.0f} s")
            await asyncio.sleep(POLL)
        full = time.perf_counter() - t0
        seen = await watcher.wait_joined(room.room_id, STEP_TIMEOUT) - t0
        return Join(answered, seen, sent, full, False)
    finally:
        await watcher.stop()


async def send_join_sizes(prober: Homeserver, resident: str, room_id: str) -> dict[str, int]:
    """Bytes of the resident's send_join v2 answer, full and with omit_members, for two probe users."""
    sizes: dict[str, int] = {}
    client = prober.federation_client
    for omit in (False, True):
        user = f"@probe_{'omit' if omit else 'full'}:{prober.server_name}"
        template = await client.make_join(resident, room_id, user, list(KNOWN_ROOM_VERSIONS))
        rv = get_room_version(template.get("room_version", "1"))
        pdu = sign_membership_template(
            rv,
            template["event"],
            room_id=room_id,
            user_id=user,
            content={"membership": "join"},
            server_name=prober.server_name,
            signing_key=prober.signing_key,
        )
        # request() rather than send_join_v2(): the full answer of a big room takes longer than the client's
        # default timeout to build.
        path = f"/_matrix/federation/v2/send_join/{path_segment(room_id)}/{path_segment(pdu.event_id)}"
        started = time.perf_counter()
        answer = await client.request(
            "PUT",
            resident,
            path,
            {"omit_members": True} if omit else None,
            pdu.json,
            timeout=STEP_TIMEOUT,
            strict_json=False,
        )
        key = "omit_members" if omit else "full"
        sizes[f"{key}_ms"] = round((time.perf_counter() - started) * 1000)
        sizes[key] = len(json.dumps(answer, separators=(",", ":"), ensure_ascii=False).encode())
        sizes[f"{key}_state_events"] = len(answer.get("state", []))
        sizes[f"{key}_auth_chain_events"] = len(answer.get("auth_chain", []))
    return sizes


# -- the run ----------------------------------------------------------------------------------------------

KINDS = {"r": "Ranvier", "s": "Synapse"}


def pair_label(code: str) -> str:
    return f"{KINDS[code[0]]} joins {KINDS[code[1]]}"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir: Path = args.workdir
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = workdir / stamp
    pairs: list[str] = args.pairs
    residents = {p[1] for p in pairs}
    joiners = {p[0] for p in pairs}
    servers: dict[str, BenchServer] = {}
    figures: dict[tuple[str, int], Figures] = {}
    sizes_out: dict[str, dict[int, dict[str, int]]] = {}
    machine = describe_machine(args.synapse_version)
    async with aiohttp.ClientSession() as session:
        try:
            rooms: dict[str, dict[int, list[Room]]] = {}
            federated = "s" in residents and args.synapse_build == "federated"
            if "r" in residents or federated:
                print("building Ranvier rooms", flush=True)
                r_res = PrebuiltRanvier(base / "ranvier-resident", presence=False)
                if "r" in residents:
                    rooms["r"] = await build_ranvier_rooms(r_res, args.sizes, args.repeats)
                # Rooms that a Synapse resident will host, built here first (see bench/synapse_rooms.py).
                for_synapse = (
                    await build_ranvier_rooms(r_res, args.synapse_sizes, args.repeats) if federated else {}
                )
                # Rooms only for the send_join size (too slow to time joins into at some sizes).
                probe_only = [n for n in args.probe_sizes if n not in args.sizes and "r" in residents]
                extra = await build_ranvier_rooms(r_res, probe_only, 1) if probe_only else {}
                r_res.start()
                servers["r_res"] = r_res
            else:
                extra, for_synapse = {}, {}
            if "s" in residents:
                print("building Synapse rooms", flush=True)
                s_res = SynapseForBench(base / "synapse-resident", args.synapse_version, presence=False)
                await asyncio.to_thread(s_res.start)
                servers["s_res"] = s_res
                if federated:
                    rooms["s"] = {}
                    for size, built in for_synapse.items():
                        hosting = await host_on_synapse(
                            session,
                            s_res,
                            [r.room_id for r in built],
                            r_res.server_name,
                            [size + 1] * len(built),
                            host=f"host{size}",
                        )
                        rooms["s"][size] = [
                            Room(r.room_id, size, r.build_s + h, extra_members=1)
                            for r, h in zip(built, hosting, strict=True)
                        ]
                else:
                    rooms["s"] = await build_synapse_rooms(s_res, session, args.synapse_sizes, args.repeats)
            if "r" in joiners:
                r_join = RanvierServer(base / "ranvier-joiner", presence=False)
                await asyncio.to_thread(r_join.start)
                servers["r_join"] = r_join
            if "s" in joiners:
                s_join = SynapseForBench(base / "synapse-joiner", args.synapse_version, presence=False)
                await asyncio.to_thread(s_join.start)
                servers["s_join"] = s_join
            for pair in pairs:
                joiner_server = servers[f"{pair[0]}_join"]
                resident = servers[f"{pair[1]}_res"]
                for size, built in rooms[pair[1]].items():
                    fig = figures.setdefault((pair, size), Figures(pair_label(pair), size))
                    fig.build_s = [r.build_s for r in built]
                    for room in built:
                        try:
                            joiner = await MxClient.register(session, joiner_server.client_url, "joiner")
                            j = await time_join(joiner, room, resident.server_name)
                            j.partial_seen = joined_partially(joiner_server, room.room_id)
                            fig.joins.append(j)
                            print(
                                f"  {fig.pair} {size}: sync {j.sync_s:.3f} s, send {j.send_s:.3f} s, "
                                f"full {j.full_s:.3f} s (partial seen: {j.partial_seen})",
                                flush=True,
                            )
                        except Exception as e:  # a failed join is a figure too
                            fig.failures.append(f"{type(e).__name__}: {e}"[:300])
                            print(f"  {fig.pair} {size}: FAILED {fig.failures[-1]}", flush=True)
            if not args.no_sizes:
                prober = await start_server(base / "prober")
                try:
                    for code in sorted(residents):
                        resident = servers[f"{code}_res"]
                        probed = {**rooms[code], **(extra if code == "r" else {})}
                        for size, built in sorted(probed.items()):
                            try:
                                got = await send_join_sizes(prober, resident.server_name, built[-1].room_id)
                            except Exception as e:
                                print(f"  send_join size {KINDS[code]} {size}: FAILED {e}", flush=True)
                                continue
                            sizes_out.setdefault(KINDS[code], {})[size] = got
                            print(f"  send_join {KINDS[code]} {size}: {got}", flush=True)
                finally:
                    await prober.stop()
        finally:
            for server in servers.values():
                await asyncio.to_thread(server.stop)
    return {
        "machine": finish(machine),
        "synapse_build": args.synapse_build,
        "figures": [{**asdict(f), "joins": [asdict(j) for j in f.joins]} for f in figures.values()],
        "send_join_bytes": sizes_out,
    }


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{min(values) * 1000:.0f} / {statistics.median(values) * 1000:.0f}"


def report(result: dict[str, Any]) -> str:
    lines = [summary(result["machine"]), "", "cells: min / median ms over the repeats (n)"]
    if result.get("synapse_build") == "federated":
        lines.append(
            "Synapse-resident rooms built on a Ranvier server, then joined by a Synapse user until Synapse "
            "had their full state (bench/synapse_rooms.py): two servers each; build s includes both steps"
        )
    lines.append("")
    header = (
        f"{'pair':22} {'members':>8} {'n':>2} {'/join':>13} {'in /sync':>13} {'sent':>13} {'full':>15}"
        "  partial  build s"
    )
    lines.append(header)
    for f in result["figures"]:
        joins = f["joins"]
        partial = sum(1 for j in joins if j["partial_seen"])
        build = f"{min(f['build_s']):.1f}-{max(f['build_s']):.1f}" if f["build_s"] else "-"
        lines.append(
            f"{f['pair']:22} {f['size']:>8} {len(joins):>2} "
            f"{_cell([j['join_answered_s'] for j in joins]):>13} {_cell([j['sync_s'] for j in joins]):>13} "
            f"{_cell([j['send_s'] for j in joins]):>13} {_cell([j['full_s'] for j in joins]):>15}  "
            f"{partial}/{len(joins):<5}  {build}"
        )
        for failure in f["failures"]:
            lines.append(f"    failed: {failure}")
    if result["send_join_bytes"]:
        lines += ["", "send_join v2 answer, bytes (state events, auth chain events): full vs omit_members"]
        for kind, by_size in result["send_join_bytes"].items():
            for size, s in sorted(by_size.items()):
                lines.append(
                    f"  {kind:8} {size:>7} members: {s['full']:>11,} ({s['full_state_events']}, "
                    f"{s['full_auth_chain_events']})  vs  {s['omit_members']:>9,} "
                    f"({s['omit_members_state_events']}, {s['omit_members_auth_chain_events']}); answered in "
                    f"{s.get('full_ms', '?')} vs {s.get('omit_members_ms', '?')} ms"
                )
    return "\n".join(lines)


def _sizes(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python3 -m bench partial_join", description=__doc__)
    parser.add_argument("--sizes", type=_sizes, default=[10, 1000, 10000, 50000], help="Ranvier rooms")
    parser.add_argument("--synapse-sizes", type=_sizes, default=[10, 1000], help="Synapse rooms")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pairs", type=lambda s: s.split(","), default=["rr", "rs", "ss"])
    parser.add_argument("--no-sizes", action="store_true", help="skip the send_join size probe")
    parser.add_argument(
        "--probe-sizes",
        type=_sizes,
        default=[],
        help="more Ranvier rooms (one each) built for the send_join size only, no timed joins",
    )
    parser.add_argument(
        "--synapse-build",
        choices=["client", "federated"],
        default="client",
        help="build Synapse's rooms through its client API (one server) or on a Ranvier server and then "
        "joined by Synapse (two servers; sizes above a few thousand in reasonable time)",
    )
    parser.add_argument("--synapse-version", default=DEFAULT_VERSION)
    parser.add_argument("--workdir", type=Path, default=Path("bench/results/partial_join"))
    args = parser.parse_args(argv)
    args.workdir = args.workdir.resolve()  # Synapse runs with its work directory as cwd
    for pair in args.pairs:
        if len(pair) != 2 or any(c not in KINDS for c in pair):
            parser.error(f"unknown pair {pair!r}: two letters of r (Ranvier) and s (Synapse)")
    result = asyncio.run(run(args))
    text = report(result)
    print("\n" + text)
    args.workdir.mkdir(parents=True, exist_ok=True)
    out = args.workdir / f"partial_join-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"\nsaved {out}")
