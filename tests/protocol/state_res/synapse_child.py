"""Resolve state with Synapse's own resolver: run by the Synapse venv's python, never imported by Ranvier.

    .venvs/synapse-<version>/bin/python tests/protocol/state_res/synapse_child.py

Reads one JSON request per line on stdin and answers one JSON line per request on stdout:

    {"id": 7, "room_version": "11", "room_id": "!r:x", "events": [[pdu, rejected], ...],
     "state_sets": [[[type, state_key, event_id], ...], ...]}
    -> {"id": 7, "state": [[type, state_key, event_id], ...]}   or   {"id": 7, "error": "..."}

    {"id": 8, "bench": true, "runs": 5, ...same fields...}
    -> {"id": 8, "state": [...], "times_ms": [...], "cpu_ms": [...]}  (a warm-up, then ``runs`` timed)

Synapse's resolver (``synapse.state.v1`` / ``synapse.state.v2``) runs unchanged. It needs a store for two
things: events by id (rejected ones only when asked for, as Synapse's event store does) and the auth chain
difference (with the conflicted subgraph since v2.1). Synapse computes the latter in SQL from its chain cover
index; here it is computed in memory with the same meaning, as Synapse documents it: "fetching the full auth
chain for each set of state and returning the events that don't appear in each and every auth chain", where
a state set's events count as part of its own chain (the initial events of the search), and the conflicted
subgraph is every event both backwards reachable from a conflicted event and forwards reachable from one,
conflicted events included. That store is ours; everything else is Synapse's code.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import traceback
from typing import Any

import synapse.event_auth  # noqa: F401  (first: synapse.state and event_auth import each other)
from synapse.api.room_versions import KNOWN_ROOM_VERSIONS, StateResolutionVersions
from synapse.events import make_event_from_dict
from synapse.state import v1, v2
from synapse.storage.databases.main.event_federation import StateDifference

_LOOP = asyncio.new_event_loop()


class _Clock:
    async def sleep(self, duration: Any) -> None:
        return None


class _Store:
    def __init__(self, events: dict[str, Any]) -> None:
        self.events = events
        self._chains: dict[str, frozenset[str]] = {}
        # Benchmarks: after the warm-up the difference is answered from memory, as Synapse answers it from
        # its precomputed chain cover index, so that the timed runs measure Synapse's resolver alone.
        self.fixed: StateDifference | None = None
        self.last: StateDifference | None = None

    async def get_events(self, event_ids: Any, allow_rejected: bool = False) -> dict[str, Any]:
        out = {}
        for event_id in event_ids:
            event = self.events.get(event_id)
            if event is not None and (allow_rejected or event.rejected_reason is None):
                out[event_id] = event
        return out

    def chain(self, event_id: str) -> frozenset[str]:
        """The auth chain of an event (itself excluded), iteratively."""
        got = self._chains.get(event_id)
        if got is not None:
            return got
        stack = [event_id]
        while stack:
            x = stack[-1]
            if x in self._chains:
                stack.pop()
                continue
            event = self.events.get(x)
            auth = list(event.auth_event_ids()) if event is not None else []
            pending = [a for a in auth if a not in self._chains and a in self.events]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            acc = set(auth)
            for a in auth:
                acc |= self._chains.get(a, frozenset())
            self._chains[x] = frozenset(acc)
        return self._chains[event_id]

    async def get_auth_chain_difference(
        self,
        room_id: str,
        state_sets: list[set[str]],
        conflicted_state: set[str] | None,
        additional_backwards_reachable_conflicted_events: set[str] | None,
    ) -> StateDifference:
        if self.fixed is not None:
            return StateDifference(
                auth_difference=set(self.fixed.auth_difference),
                conflicted_subgraph=None
                if self.fixed.conflicted_subgraph is None
                else set(self.fixed.conflicted_subgraph),
            )
        fulls = []
        for state_set in state_sets:
            full = set(state_set)
            for event_id in state_set:
                full |= self.chain(event_id)
            fulls.append(full)
        union = set().union(*fulls)
        difference = union - fulls[0].intersection(*fulls[1:])
        subgraph = None
        if conflicted_state is not None:
            conflicted = set(conflicted_state) | set(additional_backwards_reachable_conflicted_events or ())
            backwards = set(conflicted)
            for c in conflicted:
                backwards |= self.chain(c)
            subgraph = {x for x in backwards if x in conflicted or not self.chain(x).isdisjoint(conflicted)}
        self.last = StateDifference(auth_difference=difference, conflicted_subgraph=subgraph)
        return self.last


def _state_map(rows: list[list[str]]) -> dict[tuple[str, str], str]:
    return {(t, k): e for t, k, e in rows}


async def _resolve(request: dict[str, Any], store: _Store) -> dict[tuple[str, str], str]:
    rv = KNOWN_ROOM_VERSIONS[request["room_version"]]
    state_sets = [_state_map(s) for s in request["state_sets"]]
    if rv.state_res == StateResolutionVersions.V1:
        resolved = await v1.resolve_events_with_store(
            request["room_id"], rv, state_sets, None, store.get_events
        )
    else:
        resolved = await v2.resolve_events_with_store(
            _Clock(),
            request["room_id"],
            rv,
            state_sets,
            None,
            store,  # type: ignore[arg-type]
        )
    return dict(resolved)


def _handle(request: dict[str, Any]) -> dict[str, Any]:
    rv = KNOWN_ROOM_VERSIONS[request["room_version"]]
    events = {}
    for pdu, rejected in request["events"]:
        event = make_event_from_dict(pdu, rv, rejected_reason="auth_error" if rejected else None)
        events[event.event_id] = event
    answer: dict[str, Any] = {"id": request["id"]}
    store = _Store(events)
    if request.get("bench"):
        _LOOP.run_until_complete(_resolve(request, store))
        store.fixed = store.last
        times, cpu = [], []
        for _ in range(request.get("runs", 5)):
            start, start_cpu = time.perf_counter(), time.process_time()
            resolved = _LOOP.run_until_complete(_resolve(request, store))
            cpu.append((time.process_time() - start_cpu) * 1000)
            times.append((time.perf_counter() - start) * 1000)
        answer["times_ms"] = times
        answer["cpu_ms"] = cpu
    else:
        resolved = _LOOP.run_until_complete(_resolve(request, store))
    answer["state"] = sorted([t, k, e] for (t, k), e in resolved.items())
    return answer


def main() -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        try:
            answer = _handle(request)
        except Exception as e:  # report, keep serving: one odd room must not end the run
            error = f"{type(e).__name__}: {e}"
            answer = {"id": request.get("id"), "error": error, "tb": traceback.format_exc()}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
