"""Differential state resolution: random forked rooms resolved by Ranvier and by Synapse's own resolver.

Used by ``test_synapse_diff.py`` (a CI-sized run) and ``python3 -m bench state_res_diff`` (the long run).

A room is a *program* (``RoomProgram``): a seed, a room version, the set-up (creator, members, power levels,
v12 additional creators), a shared trunk, then 2-4 forks of random operations interleaved in time (power
level changes, joins, leaves, kicks, bans and unbans, of power users too, invites, knocks, restricted joins,
join rules of every kind, topics, names, custom state, merges of two forks). ``build`` turns it into events
with ``tests.protocol.dag.Dag``, which marks the events the authorization rules refuse as rejected, as a
server would. Sometimes one fork's state set holds events that we rejected but that passed their own auth
events: the view of a server whose state before them differed ("accepted elsewhere").

Both resolvers get identical events (with their rejected flags) and identical state sets. A divergence is
shrunk by deleting operations while it persists, and printed as a ``Dag`` program: a fixture to paste into
``tests/protocol/state_res/``.
"""

from __future__ import annotations

import itertools
import json
import queue
import random
import secrets
import subprocess
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from unittest import mock

from ranvier.protocol.auth import check_auth_rules
from ranvier.protocol.errors import ProtocolError
from ranvier.protocol.events import StateKey
from ranvier.protocol.state_res import AuthChainIndex, resolve_state
from ranvier.protocol.state_res.auth_chain import auth_event_ids
from tests.protocol.dag import Dag, user

CHILD = Path(__file__).with_name("synapse_child.py")
VERSIONS = ["1", "2", "10", "11", "12"]
USERS = ["alice", "bob", "charlie", "dave", "eve", "zara"]
LEVELS = [0, 0, 25, 50, 50, 75, 100]

# -- the room programs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    """One event: ``kind`` on ``fork`` (-1: the trunk) by ``sender``; ``arg`` is kind-specific JSON."""

    fork: int
    kind: str
    sender: str
    target: str = ""
    arg: Any = None
    ts: int | None = None  # origin_server_ts; None: one more than the last event's


@dataclass(frozen=True)
class RoomProgram:
    seed: int
    version: str
    members: tuple[str, ...]
    levels: tuple[tuple[str, int], ...]
    additional_creators: tuple[str, ...]
    join_rule: str
    bases: tuple[int, ...]  # per fork: index into the events before forking (set-up and trunk)
    ops: tuple[Op, ...]
    accepted_elsewhere: int  # a fork whose state set takes its self-consistent rejected events, or -1
    lagging: int = -1  # add the state after this event (by position) as one more state set, or -1
    dropped: int = -1  # the first state set lacks one member key (number ``dropped`` modulo), or -1


def _version_at_least(version: str, n: int) -> bool:
    return int(version) >= n


def _join_rules(version: str) -> list[str]:
    rules = ["public", "public", "invite"]
    if _version_at_least(version, 7):
        rules.append("knock")
    if _version_at_least(version, 8):
        rules.append("restricted")
    if _version_at_least(version, 10):
        rules.append("knock_restricted")
    return rules


def _random_levels(rng: random.Random, version: str, creators: set[str]) -> dict[str, Any]:
    users = {u: rng.choice(LEVELS) for u in ("bob", "charlie", "dave", "eve") if rng.random() < 0.8}
    if version != "12":
        users["alice"] = 100 if rng.random() < 0.9 else rng.choice([50, 75])
    for c in creators:  # since v12 creators may not be listed (MSC4289)
        users.pop(c, None)
    content: dict[str, Any] = {"users": users}
    for name in ("ban", "kick", "invite", "state_default", "events_default"):
        if rng.random() < 0.15:
            content[name] = rng.choice([0, 25, 50, 75, 100])
    if rng.random() < 0.2:
        content["events"] = {
            "m.room.topic": rng.choice([0, 50]),
            "m.room.power_levels": rng.choice([50, 100]),
        }
    return content


OP_WEIGHTS = {
    "power_levels": 6,
    "topic": 2,
    "name": 1,
    "join": 2,
    "leave": 1,
    "kick": 2,
    "ban": 2,
    "unban": 1,
    "invite": 1,
    "knock": 1,
    "join_rules": 2,
    "restricted_join": 1,
    "custom": 1,
    "merge": 1,
}
_KINDS = list(OP_WEIGHTS)
_WEIGHTS = list(OP_WEIGHTS.values())


def generate(seed: int, version: str | None = None) -> RoomProgram:
    """Room ``seed``: every other seed the rich generator, else the classic one (that of
    ``test_properties.py``: small forks off the first events of a public room)."""
    version = version or VERSIONS[seed % len(VERSIONS)]
    if (seed // len(VERSIONS)) % 2:
        return generate_classic(seed, version)
    return generate_rich(seed, version)


CLASSIC_OPS = ["topic", "power_levels", "join", "leave", "kick", "ban", "join_rules", "name"]


def generate_classic(seed: int, version: str) -> RoomProgram:
    """Alice (creator), Bob (50) and Charlie joined; 2-3 forks of 1-5 events off IJR, IMB or IMC, by
    random senders among five users, and now and then Alice's topic merging the fork with an earlier one."""
    rng = random.Random(seed)
    users = USERS[:5]
    n_forks = rng.randint(2, 3)
    ops: list[Op] = []
    for fork in range(n_forks):
        for _ in range(rng.randint(1, 5)):
            kind = rng.choice(CLASSIC_OPS)
            sender, target = rng.choice(users), rng.choice(users)
            arg: Any = None
            if kind == "power_levels":
                levels = {u: rng.choice([0, 50, 100]) for u in ("bob", "charlie", "dave")}
                arg = {"users": levels if version == "12" else {"alice": 100, **levels}}
            elif kind == "join_rules":
                arg = rng.choice(["public", "invite"])
            ops.append(Op(fork, kind, sender, target, arg))
            if fork > 0 and rng.random() < 0.25:
                ops.append(Op(fork, "merge", "alice", "", rng.randrange(fork)))
    levels = {"bob": 50} if version == "12" else {"alice": 100, "bob": 50}
    return RoomProgram(
        seed=seed,
        version=version,
        members=("bob", "charlie"),
        levels=tuple(sorted(levels.items())),
        additional_creators=(),
        join_rule="public",
        bases=tuple(rng.choice([3, 4, 5]) for _ in range(n_forks)),
        ops=tuple(ops),
        accepted_elsewhere=-1,
    )


def generate_rich(seed: int, version: str) -> RoomProgram:
    rng = random.Random(seed)
    extra_creators: tuple[str, ...] = ()
    if version == "12" and rng.random() < 0.35:
        extra_creators = (rng.choice(["bob", "charlie"]),)
    members = tuple(u for u in ("bob", "charlie", "dave", "eve") if u == "bob" or rng.random() < 0.7)
    levels = _random_levels(rng, version, {"alice", *extra_creators})["users"]
    join_rule = "public" if rng.random() < 0.85 else rng.choice(_join_rules(version))
    n_trunk = rng.randint(0, 4)
    n_before = 4 + len(members) + n_trunk
    n_forks = rng.choice([2, 2, 2, 3, 3, 4])
    bases = tuple(rng.randint(3, n_before - 1) for _ in range(n_forks))
    ops: list[Op] = [_random_op(rng, version, -1, n_forks, extra_creators) for _ in range(n_trunk)]
    budget = {f: rng.randint(1, 8) for f in range(n_forks)}
    while any(budget.values()):
        f = rng.choice([f for f, n in budget.items() if n])
        budget[f] -= 1
        ops.append(_random_op(rng, version, f, n_forks, extra_creators))
    if rng.random() < 0.3:
        # Clock skew: timestamps from a small range, so that ties (broken by event id) and timestamps
        # that go backwards along a branch occur.
        ops = [replace(op, ts=rng.randint(1, 12)) for op in ops]
    accepted_elsewhere = rng.randrange(n_forks) if rng.random() < 0.2 else -1
    lagging = rng.randrange(3, n_before + len(ops) - n_trunk) if rng.random() < 0.3 else -1
    dropped = rng.randrange(1000) if rng.random() < 0.3 else -1
    return RoomProgram(
        seed=seed,
        version=version,
        members=members,
        levels=tuple(sorted(levels.items())),
        additional_creators=extra_creators,
        join_rule=join_rule,
        bases=bases,
        ops=tuple(ops),
        accepted_elsewhere=accepted_elsewhere,
        lagging=lagging,
        dropped=dropped,
    )


def _random_op(rng: random.Random, version: str, fork: int, n_forks: int, creators: tuple[str, ...]) -> Op:
    kind = rng.choices(_KINDS, _WEIGHTS)[0]
    if fork < 0 and kind == "merge":
        kind = "topic"
    # Power users act more often: alice (creator) and bob.
    sender = rng.choice(["alice", "alice", "bob", "bob", "charlie", "dave", "eve", "zara"])
    target = rng.choice(USERS)
    arg: Any = None
    if kind == "power_levels":
        arg = _random_levels(rng, version, {"alice", *creators})
    elif kind == "join_rules":
        arg = rng.choice(_join_rules(version))
    elif kind == "restricted_join":
        if not _version_at_least(version, 8):
            kind = "join"
        arg = rng.choice(USERS[:5])
    elif kind == "knock" and not _version_at_least(version, 7):
        kind = "join"
    elif kind == "merge":
        arg = rng.randrange(n_forks)
    elif kind == "custom":
        arg = rng.choice(["a", "b"])
    return Op(fork, kind, sender, target, arg)


# -- building a program into events ----------------------------------------------------------------


def _setup(dag: Dag, prog: RoomProgram) -> None:
    content: dict[str, Any] = {}
    if prog.additional_creators:
        content["additional_creators"] = [user(u) for u in prog.additional_creators]
    dag.create("CREATE", "alice", **content)
    dag.join("IMA", "alice")
    dag.power_levels("IPOWER", "alice", dict(prog.levels))
    dag.join_rules("IJR", "alice", "public")
    for m in prog.members:
        dag.join(f"IM{m[0].upper()}", m)
    if prog.join_rule != "public":
        dag.add("IJR2", "m.room.join_rules", "alice", _jr_content(prog.join_rule), state_key="")


def _jr_content(rule: str) -> dict[str, Any]:
    content: dict[str, Any] = {"join_rule": rule}
    if rule in ("restricted", "knock_restricted"):
        content["allow"] = [{"type": "m.room_membership", "room_id": "!other:example.org"}]
    return content


def _apply(dag: Dag, name: str, op: Op, prev: list[str]) -> None:
    s, t, ts = op.sender, op.target, op.ts
    if op.kind == "power_levels":
        dag.add(name, "m.room.power_levels", s, op.arg, state_key="", prev=prev, ts=ts)
    elif op.kind in ("topic", "merge"):
        dag.add(name, "m.room.topic", s, {"topic": name}, state_key="", prev=prev, ts=ts)
    elif op.kind == "name":
        dag.add(name, "m.room.name", s, {"name": name}, state_key="", prev=prev, ts=ts)
    elif op.kind == "custom":
        dag.add(name, "m.custom", s, {"v": name}, state_key=op.arg, prev=prev, ts=ts)
    elif op.kind == "join_rules":
        dag.add(name, "m.room.join_rules", s, _jr_content(op.arg), state_key="", prev=prev, ts=ts)
    elif op.kind == "restricted_join":
        content = {"membership": "join", "join_authorised_via_users_server": user(op.arg)}
        dag.add(name, "m.room.member", s, content, state_key=user(s), prev=prev, ts=ts)
    else:
        membership, target = {
            "join": ("join", s),
            "leave": ("leave", s),
            "kick": ("leave", t),
            "unban": ("leave", t),
            "ban": ("ban", t),
            "invite": ("invite", t),
            "knock": ("knock", s),
        }[op.kind]
        content = {"membership": membership}
        dag.add(name, "m.room.member", s, content, state_key=user(target), prev=prev, ts=ts)


@dataclass
class BuiltRoom:
    prog: RoomProgram
    dag: Dag
    state_sets: list[dict[StateKey, str]]
    # Other resolutions compared too: the state before each merge, and states after random events.
    merges: list[list[dict[StateKey, str]]] = field(default_factory=list)

    def cases(self) -> list[BuiltRoom]:
        """The final resolution, each merge's and the random extra ones, as rooms of their own (same
        events)."""
        return [self, *(BuiltRoom(self.prog, self.dag, sets) for sets in self.merges)]


def build(prog: RoomProgram) -> BuiltRoom:
    # Rooms v1 and v2 take event ids chosen by the sender (random in ``build_event``), and v1 orders by
    # their sha1: derive them from the seed, so that a room (and its shrinking) is reproducible.
    counter = itertools.count()
    with mock.patch.object(secrets, "token_urlsafe", lambda _n: f"s{prog.seed}e{next(counter)}"):
        return _build(prog)


def _build(prog: RoomProgram) -> BuiltRoom:
    dag = Dag(prog.version)
    _setup(dag, prog)
    before = list(dag.events)
    trunk_tip = before[-1]
    tips: dict[int, str] = {}
    fork_events: dict[int, list[str]] = {}
    merges = []
    for n, op in enumerate(prog.ops, start=1):
        name = f"E{n}"
        if op.fork < 0:
            prev = [trunk_tip]
        else:
            if op.fork not in tips:
                tips[op.fork] = before[min(prog.bases[op.fork], len(before) - 1)]
            prev = [tips[op.fork]]
            if op.kind == "merge" and op.arg != op.fork and op.arg in tips and tips[op.arg] != prev[0]:
                prev.append(tips[op.arg])
                merges.append([dict(dag.states[p]) for p in prev])
        _apply(dag, name, op, prev)
        if op.fork < 0:
            trunk_tip = name
            before.append(name)
        else:
            tips[op.fork] = name
            fork_events.setdefault(op.fork, []).append(name)
    state_sets = []
    for f in sorted(tips):
        state = dict(dag.states[tips[f]])
        if f == prog.accepted_elsewhere:
            for name in fork_events.get(f, []):
                event = dag.events[name]
                if dag.rejected(name) and event.state_key is not None and _passes_own_auth(dag, name):
                    state[(event.type, event.state_key)] = event.event_id
        state_sets.append(state)
    names = list(dag.events)
    if 0 <= prog.lagging < len(names):
        # A server that lags behind: its state is that after an older event (possibly one we rejected).
        state_sets.append(dict(dag.states[names[prog.lagging]]))
    # More resolutions from the same events: the states after random pairs (and a triple) of events, as
    # servers that saw different parts of the DAG would hold them. Deterministic in the seed.
    pick = random.Random(prog.seed * 7919 + len(names))
    later = names[3:]
    for size in (2, 2, 2, 3):
        chosen = [pick.choice(later) for _ in range(size)]
        sets = [dict(dag.states[n]) for n in chosen]
        if any(s != sets[0] for s in sets[1:]):
            merges.append(sets)
    if prog.dropped >= 0 and state_sets:
        # A server whose state lacks a member (partial state, or a bug): the member's events are still
        # in the auth chains of the other state events.
        members = sorted(k for k in state_sets[0] if k[0] == "m.room.member")
        if members:
            del state_sets[0][members[prog.dropped % len(members)]]
    return BuiltRoom(prog, dag, state_sets, merges)


def _passes_own_auth(dag: Dag, name: str) -> bool:
    event = dag.events[name]
    own = {}
    for auth_id in auth_event_ids(event):
        a = dag.source.get_event(auth_id)
        if a is not None and a.state_key is not None and not dag.source.is_rejected(auth_id):
            own[(a.type, a.state_key)] = a
    try:
        check_auth_rules(event, own)
    except ProtocolError:
        return False
    return True


def ranvier_resolve(room: BuiltRoom) -> dict[StateKey, str]:
    return resolve_state(room.dag.room_version, room.state_sets, room.dag.source, index=AuthChainIndex())


def request_for(room: BuiltRoom, request_id: int) -> dict[str, Any]:
    dag = room.dag
    assert dag.room_id is not None
    return {
        "id": request_id,
        "room_version": dag.room_version.identifier,
        "room_id": dag.room_id,
        "events": [[e.json, dag.source.is_rejected(e.event_id)] for e in dag.events.values()],
        "state_sets": [[[t, k, e] for (t, k), e in s.items()] for s in room.state_sets],
    }


# -- Synapse in its own venv ------------------------------------------------------------------------


class SynapseResolver:
    """Synapse's resolver in a subprocess of the Synapse venv's python; requests are pipelined.

    A writer thread feeds stdin and a reader thread collects answers, so neither pipe can fill up while
    the caller is busy building the next room.
    """

    def __init__(self, python: Path) -> None:
        self._proc = subprocess.Popen(
            [str(python), str(CHILD)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self._out: queue.Queue[str | None] = queue.Queue()
        self.answers: queue.Queue[dict[str, Any]] = queue.Queue()
        self._writer = threading.Thread(target=self._write, daemon=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._writer.start()
        self._reader.start()

    def _write(self) -> None:
        assert self._proc.stdin is not None
        try:
            while (line := self._out.get()) is not None:
                self._proc.stdin.write(line)
                self._proc.stdin.flush()
            self._proc.stdin.close()
        except BrokenPipeError:
            pass  # the child died; the reader reports it

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self.answers.put(json.loads(line))
        self.answers.put({"id": None, "error": f"Synapse child exited ({self._proc.wait()})"})

    def submit(self, request: Mapping[str, Any]) -> None:
        self._out.put(json.dumps(request) + "\n")

    def call(self, request: Mapping[str, Any], timeout: float = 600) -> dict[str, Any]:
        """One request and its answer (nothing else may be in flight)."""
        self.submit(request)
        answer = self.answers.get(timeout=timeout)
        if answer.get("id") != request["id"]:
            raise RuntimeError(f"unexpected answer from the Synapse child: {answer}")
        return answer

    def close(self) -> None:
        self._out.put(None)
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def synapse_state(answer: Mapping[str, Any]) -> dict[StateKey, str]:
    if "error" in answer:
        raise RuntimeError(f"Synapse failed: {answer['error']}\n{answer.get('tb', '')}")
    return {(t, k): e for t, k, e in answer["state"]}


# -- running and shrinking ----------------------------------------------------------------------------


@dataclass
class Divergence:
    prog: RoomProgram
    room: BuiltRoom
    ranvier: dict[StateKey, str]
    synapse: dict[StateKey, str]

    def differing_keys(self) -> list[StateKey]:
        keys = self.ranvier.keys() | self.synapse.keys()
        return sorted(k for k in keys if self.ranvier.get(k) != self.synapse.get(k))


@dataclass
class RunResult:
    rooms: dict[str, int] = field(default_factory=dict)  # by version
    resolutions: int = 0  # final and merge resolutions compared
    divergences: list[Divergence] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def run(
    resolver: SynapseResolver, seeds: Iterator[int] | range, versions: list[str] | None = None
) -> RunResult:
    """Resolve each seed's room on both sides; divergences are collected, not raised."""
    result = RunResult()
    pending: dict[int, tuple[BuiltRoom, dict[StateKey, str]]] = {}

    def drain(block: bool) -> None:
        while pending:
            try:
                answer = resolver.answers.get(block=block, timeout=600 if block else None)
            except queue.Empty:
                return
            request_id = answer.get("id")
            if request_id not in pending:
                raise RuntimeError(f"unexpected answer from the Synapse child: {answer}")
            room, ours = pending.pop(request_id)
            version = room.prog.version
            if request_id % 64 == 0:
                result.rooms[version] = result.rooms.get(version, 0) + 1
            result.resolutions += 1
            if "error" in answer:
                result.errors.append(f"seed {room.prog.seed} (v{version}): {answer['error']}")
                continue
            theirs = synapse_state(answer)
            if theirs != ours:
                result.divergences.append(Divergence(room.prog, room, ours, theirs))

    for seed in seeds:
        version = None if versions is None else versions[seed % len(versions)]
        built = build(generate(seed, version))
        for k, room in enumerate(built.cases()):
            if len(room.state_sets) < 2:
                continue
            request_id = seed * 64 + k
            pending[request_id] = (room, ranvier_resolve(room))
            resolver.submit(request_for(room, request_id))
        drain(block=len(pending) > 64)
    while pending:
        drain(block=True)
    return result


def diverges(resolver: SynapseResolver, prog: RoomProgram) -> Divergence | None:
    """The first of the room's resolutions (merges first, then the final one) on which the sides differ."""
    built = build(prog)
    for room in [*built.cases()[1:], built]:
        if len(room.state_sets) < 2:
            continue
        ours = ranvier_resolve(room)
        answer = resolver.call(request_for(room, prog.seed))
        if "error" in answer:
            continue
        theirs = synapse_state(answer)
        if theirs != ours:
            return Divergence(prog, room, ours, theirs)
    return None


def shrink(resolver: SynapseResolver, found: Divergence) -> Divergence:
    """Delete operations (then the accepted-elsewhere twist) while the divergence persists."""
    best = found
    changed = True
    while changed:
        changed = False
        for i in reversed(range(len(best.prog.ops))):
            candidate = replace(best.prog, ops=best.prog.ops[:i] + best.prog.ops[i + 1 :])
            got = diverges(resolver, candidate)
            if got is not None:
                best, changed = got, True
        if best.prog.accepted_elsewhere >= 0:
            got = diverges(resolver, replace(best.prog, accepted_elsewhere=-1))
            if got is not None:
                best, changed = got, True
        if best.prog.lagging >= 0:
            got = diverges(resolver, replace(best.prog, lagging=-1))
            if got is not None:
                best, changed = got, True
        if best.prog.dropped >= 0:
            got = diverges(resolver, replace(best.prog, dropped=-1))
            if got is not None:
                best, changed = got, True
    return best


# -- printing a reproduction ----------------------------------------------------------------------------


def _short(u: str) -> str:
    return u[1:].split(":", 1)[0] if u.startswith("@") else u


def describe(d: Divergence) -> str:
    """A readable reproduction: the events in order (name, sender, type, key, content, prev, verdict), the
    state sets by event names, and the keys each side resolves differently."""
    dag = d.room.dag
    lines = [f"seed {d.prog.seed}, room v{d.prog.version}"]
    for name, e in dag.events.items():
        prev = ",".join(dag.names[p] for p in e.prev_event_ids)
        flag = "  REJECTED" if dag.rejected(name) else ""
        key = _short(e.state_key or "")
        content = json.dumps(
            {k: v for k, v in e.content.items() if k not in ("room_version",)}, separators=(",", ":")
        )
        lines.append(
            f"  {name:<7} {_short(e.sender):<8} {e.type:<20} {key:<8} {content}  prev=[{prev}] "
            f"ts={e.origin_server_ts}{flag}"
        )
    for i, s in enumerate(d.room.state_sets):
        lines.append(f"  state set {i}: " + " ".join(sorted(dag.names[v] for v in s.values())))
    for k in d.differing_keys():
        ours = dag.names.get(d.ranvier.get(k, ""), "-")
        theirs = dag.names.get(d.synapse.get(k, ""), "-")
        lines.append(f"  {k[0]} {_short(k[1])!r}: ranvier {ours}, synapse {theirs}")
    return "\n".join(lines)


__all__ = [
    "VERSIONS",
    "BuiltRoom",
    "Divergence",
    "RoomProgram",
    "RunResult",
    "SynapseResolver",
    "build",
    "describe",
    "diverges",
    "generate",
    "ranvier_resolve",
    "request_for",
    "run",
    "shrink",
]
