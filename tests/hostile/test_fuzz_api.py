"""The spec-driven fuzzer at CI size: every client-server and server-server operation of the spec's
OpenAPI, a few seeded examples each, against a real Ranvier on loopback (see tests/fuzz/).

No request may get a server error (5xx) or no answer, and every 4xx must be a Matrix error. The longer run
for the benchmark machine is ``python3 -m bench fuzz --examples N``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fuzz.harness import FuzzHarness
from tests.fuzz.runner import failure_kind, fuzz_operations, select

EXAMPLES = 8  # per operation: about 1,600 requests in all
SEED = 12

# What longer fuzz runs found answered 5xx, replayed on every run (``{room}``/``{user}``: the fuzz user's).
FOUND = [
    # int({}) of a timeout that only matters when typing starts
    ("PUT", "/_matrix/client/v3/rooms/{room}/typing/{user}", {"typing": False, "timeout": {}}),
]


@pytest.fixture(scope="module")
def harness() -> Iterator[FuzzHarness]:
    h = FuzzHarness()
    h.start()
    try:
        yield h
    finally:
        h.stop()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("api", ["cs", "ss"])
def test_no_server_errors(harness: FuzzHarness, api: str) -> None:
    ops = select([api])
    assert len(ops) > (150 if api == "cs" else 30), "the spec's operations did not load"
    report = fuzz_operations(harness, ops, EXAMPLES, base_seed=SEED)
    print(report.summary())
    assert report.examples >= len(ops) * EXAMPLES // 2
    assert report.failure_total == 0, "\n" + report.failure_report()
    assert harness.room_still_works()


@pytest.mark.parametrize(("method", "path", "body"), FOUND)
def test_what_the_fuzzer_found_stays_fixed(
    harness: FuzzHarness, method: str, path: str, body: object
) -> None:
    answer = harness.client_request(method, path, body)
    assert failure_kind(answer) is None, (answer.status, answer.body)
