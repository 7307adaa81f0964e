"""State resolution benchmark: two forks of a big room, Ranvier and Synapse side by side.

    python3 -m bench state_res [--versions 11,12] [--state N --conflicts K ...] [--runs R] [--no-synapse]

Without options: room v11 and v12, 10,000 state events with 100 conflicted keys, and 1,000 with 10.
The room: create, creator join, power levels, public join rules, then joins and custom state events up to
N; then two forks off the same tip, each changing the same K keys differently (one power levels change by
the creator, the rest member name changes and custom state). Times ``resolve_state`` over the two forks'
states: one warm-up, then min/median/max of R runs, with a fresh ``AuthChainIndex`` per run ("cold") and
with one index kept across runs as a long-lived server would ("warm"). Each figure is given as wall-clock
time and as CPU time of the process (``time.process_time``): on a shared machine the CPU figure is the
steadier one.

Synapse (``tests/interop/synapse.py``'s version, installed into ``.venvs/`` if missing) resolves the same
events and state sets with its own resolver in a subprocess of its venv
(``tests/protocol/state_res/synapse_child.py``): one warm-up, then R timed runs in that process. Its store
answers the auth chain difference from memory after the warm-up, as Synapse answers it from its
precomputed chain cover index, so Synapse's figure is its resolver alone; compare it with Ranvier's warm
figure (auth chains memoised, the same footing). Both results are checked to be equal.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from ranvier.protocol.auth import auth_types_for_event
from ranvier.protocol.events import Pdu, StateKey, build_event
from ranvier.protocol.room_versions import RoomVersion, get_room_version
from ranvier.protocol.signing import SigningKey
from ranvier.protocol.state_res import AuthChainIndex, DictEventSource, resolve_state

SERVER = "bench.example"
KEY = SigningKey.from_seed("bench", b"\x11" * 32)
CREATOR = f"@alice:{SERVER}"


class _Builder:
    def __init__(self, room_version: RoomVersion) -> None:
        self.rv = room_version
        self.room_id: str | None = None if room_version.room_id_from_create_event else f"!bench:{SERVER}"
        self.source = DictEventSource()
        self.events: list[Pdu] = []
        self.ts = 0

    def add(
        self,
        state: dict[StateKey, str],
        prev: list[str],
        depth: int,
        event_type: str,
        sender: str,
        content: dict[str, Any],
        state_key: str,
    ) -> Pdu:
        keys = auth_types_for_event(self.rv, event_type, state_key, sender, content)
        self.ts += 1
        event = build_event(
            room_version=self.rv,
            room_id=self.room_id,
            sender=sender,
            event_type=event_type,
            content=content,
            prev_events=prev,
            auth_events=sorted(state[k] for k in keys if k in state),
            depth=depth,
            origin_server_ts=self.ts,
            server_name=SERVER,
            signing_key=KEY,
            state_key=state_key,
        )
        if self.room_id is None:
            self.room_id = event.room_id
        self.source.add(event)
        self.events.append(event)
        state[(event_type, state_key)] = event.event_id
        return event


def build_forks(
    room_version: RoomVersion, n_state: int, n_conflicts: int
) -> tuple[list[dict[StateKey, str]], DictEventSource]:
    forks, source, _ = build_forks_with_events(room_version, n_state, n_conflicts)
    return forks, source


def build_forks_with_events(
    room_version: RoomVersion, n_state: int, n_conflicts: int
) -> tuple[list[dict[StateKey, str]], DictEventSource, list[Pdu]]:
    b = _Builder(room_version)
    state: dict[StateKey, str] = {}
    last: list[str] = []
    depth = 0

    def step(event_type: str, sender: str, content: dict[str, Any], state_key: str) -> None:
        nonlocal last, depth
        depth += 1
        last = [b.add(state, last, depth, event_type, sender, content, state_key).event_id]

    step("m.room.create", CREATOR, {"room_version": room_version.identifier, "creator": CREATOR}, "")
    step("m.room.member", CREATOR, {"membership": "join"}, CREATOR)
    users = {} if room_version.privileged_creators else {CREATOR: 100}
    step("m.room.power_levels", CREATOR, {"users": users}, "")
    step("m.room.join_rules", CREATOR, {"join_rule": "public"}, "")
    n_members = (n_state - 4) * 9 // 10
    members = [f"@u{i}:{SERVER}" for i in range(n_members)]
    for m in members:
        step("m.room.member", m, {"membership": "join"}, m)
    for i in range(n_state - len(state)):
        step("m.bench.state", CREATOR, {"i": i}, f"k{i}")

    tip, tip_depth, base = last, depth, dict(state)
    forks = []
    for fork in ("a", "b"):
        state, last, depth = dict(base), list(tip), tip_depth
        step("m.room.power_levels", CREATOR, {"users": users, "events_default": 1 if fork == "a" else 2}, "")
        for i in range(n_conflicts - 1):
            if i % 2:
                step("m.bench.state", CREATOR, {"i": i, "fork": fork}, f"k{i}")
            else:
                m = members[i]
                step("m.room.member", m, {"membership": "join", "displayname": f"{m}-{fork}"}, m)
        forks.append(state)
    return forks, b.source, b.events


def _time(fn: Callable[[], object], runs: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU (this process) milliseconds of ``runs`` calls after one warm-up."""
    fn()  # warm-up
    wall, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        cpu.append((time.process_time() - start_cpu) * 1000)
        wall.append((time.perf_counter() - start) * 1000)
    return wall, cpu


def _fmt(samples: list[float]) -> str:
    return f"min {min(samples):7.2f} median {statistics.median(samples):7.2f} max {max(samples):7.2f} ms"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python3 -m bench state_res")
    parser.add_argument("--versions", default="11,12")
    parser.add_argument("--state", type=int, action="append")
    parser.add_argument("--conflicts", type=int, action="append")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-synapse", action="store_true", help="Ranvier only")
    args = parser.parse_args(argv)
    shapes = list(zip(args.state or [10_000, 1_000], args.conflicts or [100, 10], strict=True))
    synapse = None if args.no_synapse else _start_synapse()
    try:
        for version in args.versions.split(","):
            for n_state, n_conflicts in shapes:
                _run_shape(get_room_version(version), n_state, n_conflicts, args.runs, synapse)
    finally:
        if synapse is not None:
            synapse.close()


def _start_synapse() -> Any:
    from tests.interop.synapse import ensure_synapse
    from tests.protocol.state_res.synapse_diff import SynapseResolver

    return SynapseResolver(ensure_synapse())


def _run_shape(rv: RoomVersion, n_state: int, n_conflicts: int, runs: int, synapse: Any) -> None:
    start = time.perf_counter()
    forks, source, events = build_forks_with_events(rv, n_state, n_conflicts)
    built = time.perf_counter() - start
    kept = AuthChainIndex()
    resolved = resolve_state(rv, forks, source, index=kept)
    assert len(resolved) >= n_state, "resolution lost state"
    cold, cold_cpu = _time(lambda: resolve_state(rv, forks, source, index=AuthChainIndex()), runs)
    warm, warm_cpu = _time(lambda: resolve_state(rv, forks, source, index=kept), runs)
    print(
        f"room v{rv.identifier:<3} {n_state:>6} state / {n_conflicts:>3} conflicted "
        f"({len(source)} events, built in {built:.1f} s)"
    )
    print(f"  ranvier cold index: wall {_fmt(cold)} | cpu {_fmt(cold_cpu)}")
    print(f"  ranvier warm index: wall {_fmt(warm)} | cpu {_fmt(warm_cpu)}")
    if synapse is None:
        return
    answer = synapse.call(
        {
            "id": 0,
            "bench": True,
            "runs": runs,
            "room_version": rv.identifier,
            "room_id": events[-1].room_id,
            "events": [[e.json, False] for e in events],
            "state_sets": [[[t, k, e] for (t, k), e in s.items()] for s in forks],
        }
    )
    if "error" in answer:
        print(f"  synapse failed: {answer['error']}")
        return
    theirs = {(t, k): e for t, k, e in answer["state"]}
    times, times_cpu = answer["times_ms"], answer["cpu_ms"]
    agree = "same result" if theirs == resolved else "DIFFERENT RESULT"
    print(f"  synapse (resolver): wall {_fmt(times)} | cpu {_fmt(times_cpu)}  ({agree})")
    for label, (w, c), base in (("wall", (warm, cold), times), ("cpu", (warm_cpu, cold_cpu), times_cpu)):
        print(f"  ranvier/synapse ({label}): warm {_ratio(w, base)};  cold {_ratio(c, base)}")


def _ratio(ours: list[float], theirs: list[float]) -> str:
    median = statistics.median(ours) / statistics.median(theirs)
    return f"min {min(ours) / min(theirs):.2f} median {median:.2f}"
