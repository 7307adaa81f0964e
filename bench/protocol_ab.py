"""Protocol-core A/B: received-PDU verification of another commit against the work tree, interleaved.

On a shared machine two runs of ``bench protocol`` minutes apart see different loads; this runs both
versions in one process, alternately on the same events, and times them by CPU time. The other commit's
``ranvier/protocol`` (a package of its own, with relative imports only) is extracted with ``git archive``
into a temporary directory and imported under another name.

Per round, each row times the same 500 events (per-event microseconds; min / median over the rounds):

- ``Pdu()``: construction alone (format checks, canonical JSON, redaction, event id);
- ``full``: what receiving costs, ``Pdu(...)``, ``check_content_hash``, ``check_signatures`` (one signature);
- ``nacl``: PyNaCl's ``VerifyKey.verify`` of the same bytes, the floor.

The last lines give full verification as a share of the floor, min-based and as the median of the rounds'
ratios (each round's full run against the same round's nacl run).

Usage: python3 -m bench protocol_ab [--against HEAD] [--version 12] [--rounds 30] [--events 500]
"""

from __future__ import annotations

import argparse
import importlib
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.protocol import KEY, SERVER, lookup, message_event
from ranvier.protocol import events as new_events
from ranvier.protocol import room_versions as new_room_versions
from ranvier.protocol.signing import decode_unpadded_base64

REPO = Path(__file__).resolve().parents[1]
OTHER = "ranvier_protocol_other"


def import_other(rev: str, into: Path) -> tuple[Any, Any]:
    """``rev``'s ranvier/protocol as the package OTHER: its (events, room_versions) modules."""
    archive = subprocess.run(
        ["git", "archive", rev, "ranvier/protocol"], cwd=REPO, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    (into / "ranvier" / "protocol").rename(into / OTHER)
    sys.path.insert(0, str(into))
    return importlib.import_module(f"{OTHER}.events"), importlib.import_module(f"{OTHER}.room_versions")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python3 -m bench protocol_ab", description=__doc__.split("\n")[0])
    parser.add_argument("--against", default="HEAD", help="the commit to compare with (default HEAD)")
    parser.add_argument("--version", default="12", help="room version (default 12)")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--events", type=int, default=500)
    args = parser.parse_args(argv)
    n = args.events
    version = new_room_versions.get_room_version(args.version)
    pdus = [message_event(version, i) for i in range(n)]
    wire = [p.json for p in pdus]
    signed = [(p._redacted_bytes, decode_unpadded_base64(p.signatures[SERVER][KEY.key_id])) for p in pdus]
    verify_key = KEY.verify_key

    with tempfile.TemporaryDirectory() as tmp:
        old_events, old_room_versions = import_other(args.against, Path(tmp))
        old_version = old_room_versions.get_room_version(args.version)

        def construct(pdu_type: Any, v: Any) -> Callable[[], None]:
            def run() -> None:
                for d in wire:
                    pdu_type(d, v)

            return run

        def verify(pdu_type: Any, v: Any) -> Callable[[], None]:
            def run() -> None:
                for d in wire:
                    pdu = pdu_type(d, v)
                    pdu.check_content_hash()
                    pdu.check_signatures(lookup)

            return run

        def nacl() -> None:
            for message, signature in signed:
                verify_key.verify(message, signature)

        rows: dict[str, Callable[[], None]] = {
            f"{args.against} Pdu()": construct(old_events.Pdu, old_version),
            "work tree Pdu()": construct(new_events.Pdu, version),
            f"{args.against} full": verify(old_events.Pdu, old_version),
            "work tree full": verify(new_events.Pdu, version),
            "nacl": nacl,
        }
        for run in rows.values():
            run()  # warm-up (and the old code's id caches)
        times: dict[str, list[float]] = {label: [] for label in rows}
        for _ in range(args.rounds):
            for label, run in rows.items():
                start = time.process_time()
                run()
                times[label].append((time.process_time() - start) / n * 1e6)

    print(f"room version {version.identifier}, {n} events x {args.rounds} rounds, CPU time per event (us)")
    for label, values in times.items():
        print(f"{label:<24} min {min(values):7.2f}   median {statistics.median(values):7.2f}")
    floor = times["nacl"]
    for label in (f"{args.against} full", "work tree full"):
        paired = statistics.median(f / v for f, v in zip(floor, times[label], strict=True))
        print(
            f"{label:<24} {min(floor) / min(times[label]):.1%} of the floor (min-based),"
            f" {paired:.1%} (median of paired rounds)"
        )
