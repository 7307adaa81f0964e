"""Server-side search figures, Ranvier and Synapse in the same run (issue 16): ``POST /search`` over N
messages (100,000 by default) spread over a few rooms, for a handful of query kinds, min and median of
repeated requests; and the rate at which the messages were sent (what indexing at persist time costs).

Both servers run as subprocesses on loopback with SQLite (``--postgres`` for PostgreSQL) and no rate limits
(bench.servers). The messages are the same for both: 8 to 16 words drawn from a 5,000-word pseudo-vocabulary
with Zipf frequencies (seeded), so a common word is in many messages and a rare one in few; the word
``zeppelin`` is planted in exactly ``--planted`` messages, so both servers' result counts can be checked
against a known number. Messages are sent concurrently (``--concurrency`` requests in flight).

Query kinds: a rare word ranked, a common word ranked and by recency, the second page of the latter
(``next_batch``), two words, the planted word with ``event_context`` (5 before, 5 after), and a word found
nowhere. Each is asked ``--repeat`` times, after one untimed warm-up request.

``python3 -m bench search [--messages 100000] [--rooms 10] [--repeat 10] [--only ranvier|synapse]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.servers import BenchServer, make_server
from tests.interop.synapse import DEFAULT_VERSION

VOCABULARY = 5000
PLANTED = "zeppelin"
ABSENT = "quixotically"
_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"] + ["an", "el", "or", "us", "ix"]


def vocabulary(rng: random.Random) -> list[str]:
    words: dict[str, None] = {}
    while len(words) < VOCABULARY:
        word = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))
        if word not in (PLANTED, ABSENT):
            words[word] = None
    return list(words)


def messages(n: int, planted: int, seed: int) -> list[str]:
    """``n`` message bodies; ``planted`` of them (spread evenly) contain the planted word."""
    rng = random.Random(seed)
    words = vocabulary(rng)
    weights = [1 / (rank + 1) for rank in range(len(words))]
    every = max(1, n // max(planted, 1))
    out = []
    for i in range(n):
        body = rng.choices(words, weights, k=rng.randint(8, 16))
        if planted and i % every == 0 and i // every < planted:
            body.insert(rng.randrange(len(body) + 1), PLANTED)
        out.append(" ".join(body))
    return out


@dataclass
class Query:
    label: str
    criteria: dict[str, Any]
    second_page: bool = False


def queries(words: list[str]) -> list[Query]:
    common, rare = words[0], words[-1]
    return [
        Query(f"rare word '{rare}', rank", {"search_term": rare}),
        Query(f"common word '{common}', rank", {"search_term": common}),
        Query(f"common word '{common}', recent", {"search_term": common, "order_by": "recent"}),
        Query("  same, second page (next_batch)", {"search_term": common, "order_by": "recent"}, True),
        Query(f"two words '{words[1]} {words[2]}', rank", {"search_term": f"{words[1]} {words[2]}"}),
        Query(
            f"planted '{PLANTED}', recent, event_context 5/5",
            {
                "search_term": PLANTED,
                "order_by": "recent",
                "event_context": {"before_limit": 5, "after_limit": 5},
            },
        ),
        Query(f"no match '{ABSENT}'", {"search_term": ABSENT}),
    ]


@dataclass
class Timing:
    label: str
    min_ms: float = 0.0
    median_ms: float = 0.0
    results: int = 0
    count: int | None = None


@dataclass
class Figures:
    server: str
    messages: int = 0
    send_s: float = 0.0
    send_per_s: float = 0.0
    planted_found: int = 0
    timings: list[Timing] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


async def _call(
    session: aiohttp.ClientSession, server: BenchServer, method: str, path: str, token: str | None, body: Any
) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.request(
        method, server.client_url + "/_matrix/client/v3" + path, json=body, headers=headers
    ) as resp:
        answer = await resp.json()
        if resp.status != 200:
            raise RuntimeError(f"{server.kind}: {method} {path} -> {resp.status} {answer}")
        return answer


async def _search(
    session: aiohttp.ClientSession,
    server: BenchServer,
    token: str,
    criteria: dict[str, Any],
    batch: str | None,
) -> dict[str, Any]:
    path = "/search" + (f"?next_batch={batch}" if batch else "")
    answer = await _call(
        session, server, "POST", path, token, {"search_categories": {"room_events": criteria}}
    )
    return dict(answer["search_categories"]["room_events"])


async def seed(
    session: aiohttp.ClientSession,
    server: BenchServer,
    token: str,
    bodies: list[str],
    rooms: int,
    concurrency: int,
) -> float:
    """Send every body (round-robin over ``rooms`` new rooms); returns the seconds it took."""
    room_ids = []
    for i in range(rooms):
        created = await _call(session, server, "POST", "/createRoom", token, {"name": f"bench room {i}"})
        room_ids.append(created["room_id"])
    queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
    for item in enumerate(bodies):
        queue.put_nowait(item)
    done = 0
    started = time.perf_counter()

    async def worker() -> None:
        nonlocal done
        while not queue.empty():
            i, body = queue.get_nowait()
            room = room_ids[i % rooms]
            await _call(session, server, "PUT", f"/rooms/{room}/send/m.room.message/b{i}", token,
                        {"msgtype": "m.text", "body": body})  # fmt: skip
            done += 1
            if done % 10_000 == 0:
                rate = done / (time.perf_counter() - started)
                print(f"  {server.kind}: {done} messages sent ({rate:.0f}/s)", flush=True)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def measure(
    server: BenchServer, bodies: list[str], words: list[str], args: argparse.Namespace
) -> Figures:
    fig = Figures(server.kind, messages=len(bodies))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        registered = await _call(session, server, "POST", "/register", None,
                                 {"username": "bench", "password": "bench password 1",
                                  "auth": {"type": "m.login.dummy"}})  # fmt: skip
        token = registered["access_token"]
        fig.send_s = await seed(session, server, token, bodies, args.rooms, args.concurrency)
        fig.send_per_s = len(bodies) / fig.send_s
        print(f"  {server.kind}: {len(bodies)} messages in {fig.send_s:.0f} s ({fig.send_per_s:.0f}/s)")
        # The planted word's results, paged to the end: a known number.
        batch = None
        while True:
            page = await _search(
                session, server, token, {"search_term": PLANTED, "order_by": "recent"}, batch
            )
            fig.planted_found += len(page["results"])
            batch = page.get("next_batch")
            if not batch or not page["results"]:
                break
        # The floor: an authenticated request that reads almost nothing, under the same load.
        times = []
        for _ in range(args.repeat + 1):
            t0 = time.perf_counter()
            await _call(session, server, "GET", "/account/whoami", token, None)
            times.append((time.perf_counter() - t0) * 1000)
        fig.timings.append(
            Timing("baseline: GET /account/whoami", min(times[1:]), statistics.median(times[1:]))
        )
        for query in queries(words):
            batch = None
            if query.second_page:
                batch = (await _search(session, server, token, query.criteria, None)).get("next_batch")
                if batch is None:
                    fig.notes.append(f"{query.label}: no next_batch")
                    continue
            answer = await _search(session, server, token, query.criteria, batch)  # warm-up
            times = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                answer = await _search(session, server, token, query.criteria, batch)
                times.append((time.perf_counter() - t0) * 1000)
            fig.timings.append(
                Timing(
                    query.label,
                    min(times),
                    statistics.median(times),
                    len(answer["results"]),
                    answer.get("count"),
                )
            )
    return fig


def _table(figures: list[Figures]) -> str:
    labels = [t.label for t in figures[0].timings]
    width = max([len(label) for label in labels] + [32])
    head = f"{'':{width}}  " + "  ".join(f"{f.server + ' min/median ms':>28}" for f in figures)
    lines = [head]
    lines.append(
        f"{'messages sent per second':{width}}  " + "  ".join(f"{f.send_per_s:>28.0f}" for f in figures)
    )
    lines.append(
        f"{f'{PLANTED!r} results (paged to the end)':{width}}  "
        + "  ".join(f"{f.planted_found:>28}" for f in figures)
    )
    for label in labels:
        cells = []
        for f in figures:
            t = next((t for t in f.timings if t.label == label), None)
            cells.append(
                f"{'-':>28}"
                if t is None
                else f"{f'{t.min_ms:.1f} / {t.median_ms:.1f} ({t.results}, n={t.count})':>28}"
            )
        lines.append(f"{label:{width}}  " + "  ".join(cells))
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python3 -m bench search", description=__doc__)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--planted", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--only", choices=("ranvier", "synapse"))
    parser.add_argument("--synapse-version", default=DEFAULT_VERSION)
    parser.add_argument("--workdir", type=Path, default=Path("bench/results/search"))
    args = parser.parse_args(argv)
    workdir = args.workdir.resolve()
    bodies = messages(args.messages, args.planted, args.seed)
    words = vocabulary(random.Random(args.seed))
    figures = []
    for kind in ("ranvier", "synapse"):
        if args.only and kind != args.only:
            continue
        server = make_server(
            kind,
            workdir / f"{kind}-{int(time.time())}",
            postgres=args.postgres,
            synapse_version=args.synapse_version,
        )
        server.start()
        try:
            figures.append(asyncio.run(measure(server, bodies, words, args)))
        finally:
            server.stop()
        print(f"{kind}: done", flush=True)
    print(f"{args.messages} messages in {args.rooms} rooms, {args.repeat} requests per query; "
          "cells: min / median ms (results returned, count reported)")  # fmt: skip
    print(_table(figures))
    for f in figures:
        for note in f.notes:
            print(f"{f.server}: {note}")
    out = workdir / "search.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps([asdict(f) for f in figures], indent=2))
    print(f"written {out}")
