"""Protocol-core throughput: building (hash + sign) and verifying a typical message event.

Prints events/s as min / median / max of several timed runs after a warm-up:

- build: ``build_event`` of a ~500-byte m.room.message (canonical JSON, content hash, redaction, ed25519
  signature, and the Pdu construction that ends it);
- verify: what receiving does per PDU: ``Pdu(...)`` (format checks, redaction, event id), the content hash
  and one signature;
- nacl floor: PyNaCl's ed25519 verify of the same bytes alone, the bound on ``verify``;
- verify x2 threads: ``verify`` spread over a ThreadPoolExecutor of 2 workers (PyNaCl releases the GIL
  during verification; the Python parts still hold it).

The last line gives full verification as a share of the floor: the median, over the runs, of the ratio
of one "verify" run to the "nacl" run made right after it (paired, so a change of load between the rows
moves both). ``--clock cpu`` times the one-thread rows by the process's CPU time instead of the wall
clock: on a shared machine, time spent waiting for a core is not counted (the x2 row stays wall time).

Usage: python3 -m bench protocol [--version 12] [--events 2000] [--runs 5] [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ranvier.protocol.canonical_json import encode_canonical_json
from ranvier.protocol.events import Pdu, VerifyKeyInfo, build_event
from ranvier.protocol.room_versions import RoomVersion, get_room_version
from ranvier.protocol.signing import SigningKey, decode_unpadded_base64

SERVER = "bench.example.org"
KEY = SigningKey.from_seed("bench", bytes(range(32)))
INFO = VerifyKeyInfo(KEY.verify_key, None)


def lookup(server: str, key_id: str) -> VerifyKeyInfo | None:
    return INFO if server == SERVER and key_id == KEY.key_id else None


def message_event(version: RoomVersion, n: int) -> Pdu:
    """A typical message (~500 bytes of canonical JSON): a text body, one prev event, two auth events.

    Two auth events is what a v12 message lists (power levels and the sender's membership; the create
    event is implicit since v12).
    """
    room_id = "!" + "R" * 43 if version.room_id_from_create_event else f"!abcdefghijklmnop:{SERVER}"
    if version.identifier in ("1", "2"):
        refs: list[str] = [f"$event{i}:{SERVER}" for i in range(3)]
    else:
        refs = [f"$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Z{i}" for i in range(3)]
    return build_event(
        room_version=version,
        room_id=room_id,
        sender=f"@alice:{SERVER}",
        event_type="m.room.message",
        content={
            "msgtype": "m.text",
            "body": f"message {n}: " + "The quick brown fox jumps over the lazy dog.",
        },
        prev_events=refs[:1],
        auth_events=refs[1:],
        depth=1000 + n,
        origin_server_ts=1_700_000_000_000 + n,
        server_name=SERVER,
        signing_key=KEY,
    )


def verify(pdu_json: dict[str, Any], version: RoomVersion) -> Pdu:
    pdu = Pdu(pdu_json, version)
    pdu.check_content_hash()
    pdu.check_signatures(lookup)
    return pdu


def measure(
    label: str, batch: Callable[[], int], runs: int, clock: Callable[[], float] = time.perf_counter
) -> list[float]:
    batch()  # warm-up
    rates = []
    for _ in range(runs):
        start = clock()
        count = batch()
        rates.append(count / (clock() - start))
    print(
        f"{label:<22} {min(rates):>10,.0f} {statistics.median(rates):>10,.0f} {max(rates):>10,.0f}",
        flush=True,
    )
    return rates


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python3 -m bench protocol", description=__doc__.split("\n")[0])
    parser.add_argument("--version", default="12", help="room version (default 12)")
    parser.add_argument("--events", type=int, default=2000, help="events per timed run")
    parser.add_argument("--runs", type=int, default=5, help="timed runs after the warm-up")
    parser.add_argument(
        "--clock", choices=("wall", "cpu"), default="wall", help="time one-thread rows by wall or CPU time"
    )
    args = parser.parse_args(argv)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    version = get_room_version(args.version)
    n = args.events

    pdus = [message_event(version, i) for i in range(n)]
    wire = [p.to_federation() for p in pdus]
    signed_bytes = [p._redacted_bytes for p in pdus]
    signatures = [p.json["signatures"][SERVER][KEY.key_id] for p in pdus]
    raw_signatures = [decode_unpadded_base64(s) for s in signatures]
    size = len(encode_canonical_json(wire[0]))
    print(
        f"room version {version.identifier}, event of {size} bytes of canonical JSON, {n} events per run,"
        f" {args.clock} clock"
    )
    print(f"{'events/s':<22} {'min':>10} {'median':>10} {'max':>10}")

    def build_batch() -> int:
        for i in range(n):
            message_event(version, i)
        return n

    def verify_batch() -> int:
        for d in wire:
            verify(d, version)
        return n

    verify_key = KEY.verify_key

    def nacl_batch() -> int:
        for message, signature in zip(signed_bytes, raw_signatures, strict=True):
            verify_key.verify(message, signature)
        return n

    chunks = [wire[i : i + 100] for i in range(0, n, 100)]

    def verify_chunk(chunk: list[dict[str, Any]]) -> int:
        for d in chunk:
            verify(d, version)
        return len(chunk)

    # A worker thread, not the event loop: this is how bulk verification should run in the server.
    with ThreadPoolExecutor(max_workers=2) as pool:

        def parallel_batch() -> int:
            return sum(pool.map(verify_chunk, chunks))

        measure("build (hash + sign)", build_batch, args.runs, clock)
        full = measure("verify (full)", verify_batch, args.runs, clock)
        floor = measure("nacl verify (floor)", nacl_batch, args.runs, clock)
        measure("verify x2 threads", parallel_batch, args.runs)
        # Paired: each verify run against the nacl run right after it.
        ratios = []
        for _ in range(args.runs):
            ratios.append(measure_once(verify_batch, clock) / measure_once(nacl_batch, clock))
    ratio = statistics.median(ratios)
    print(
        f"full verification runs at {ratio:.0%} of the PyNaCl floor (median of {args.runs} paired runs;"
        f" {statistics.median(full) / statistics.median(floor):.0%} from the rows' medians)"
    )


def measure_once(batch: Callable[[], int], clock: Callable[[], float]) -> float:
    start = clock()
    count = batch()
    return count / (clock() - start)
