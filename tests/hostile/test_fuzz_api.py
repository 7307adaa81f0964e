"""The spec-driven fuzzer at CI size: every client-server and server-server operation of the spec's
OpenAPI, a few seeded examples each, against a real Ranvier on loopback (see tests/fuzz/), on SQLite and
on PostgreSQL (skipped with the reason printed when PostgreSQL is unreachable, a failure under CI=true).

No request may get a server error (5xx) or no answer, every 4xx must be a Matrix error, and the server must
log no error. The longer run for the benchmark machine is ``python3 -m bench fuzz --examples N``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import asyncpg
import pytest

from tests.fuzz.harness import PG_ADMIN_DSN, FuzzHarness, create_database, drop_database
from tests.fuzz.requests import FuzzRequest, PduSpec
from tests.fuzz.runner import failure_kind, fuzz_operations, select
from tests.fuzz.spec import load_operations

EXAMPLES = {"sqlite": 8, "postgres": 4}  # per operation: about 1,600 and 800 requests
SEED = 12

# What longer fuzz runs found answered 5xx, replayed on both databases (``{room}``/``{user}``: the fuzz
# user's room and id).
FOUND = [
    # int({}) of a timeout that only matters when typing starts
    ("PUT", "/_matrix/client/v3/rooms/{room}/typing/{user}", {"typing": False, "timeout": {}}),
    # PostgreSQL: the outbound EDU's coalesce key held NUL characters (any typing or receipt in a room with
    # a remote server)
    ("PUT", "/_matrix/client/v3/rooms/{room}/typing/{user}", {"typing": True}),
    ("POST", "/_matrix/client/v3/rooms/{room}/receipt/m.read/{event}", {"thread_id": ":"}),
    # PostgreSQL: text holding U+0000 (an event type, a display name, an event id to look up) reached asyncpg
    ("PUT", "/_matrix/client/v3/rooms/{room}/send/m.n%00ul/nul1", {"body": "x"}),
    ("PUT", "/_matrix/client/v3/profile/{user}/displayname", {"displayname": "a\u0000b"}),
    ("GET", "/_matrix/client/v3/rooms/{room}/event/%24a%00", None),
]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def harness(request: pytest.FixtureRequest) -> Iterator[FuzzHarness]:
    database = None
    if request.param == "postgres":
        try:
            database = asyncio.run(create_database(PG_ADMIN_DSN))
        except (OSError, asyncpg.PostgresError) as e:
            message = f"PostgreSQL at {PG_ADMIN_DSN} unreachable: {e}"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
    h = FuzzHarness(database_url=database)
    try:
        h.start()
        yield h
    finally:
        h.stop()
        if database is not None:
            asyncio.run(drop_database(PG_ADMIN_DSN, database))


@pytest.mark.timeout(600)
@pytest.mark.parametrize("api", ["cs", "ss"])
def test_no_server_errors(harness: FuzzHarness, api: str) -> None:
    ops = select([api])
    assert len(ops) > (150 if api == "cs" else 30), "the spec's operations did not load"
    examples = EXAMPLES["postgres" if harness.database_url else "sqlite"]
    report = fuzz_operations(harness, ops, examples, base_seed=SEED)
    print(report.summary())
    assert report.examples >= len(ops) * examples // 2
    assert report.failure_total == 0, "\n" + report.failure_report()
    assert harness.room_still_works()


@pytest.mark.parametrize(("method", "path", "body"), FOUND)
def test_what_the_fuzzer_found_stays_fixed(
    harness: FuzzHarness, method: str, path: str, body: object
) -> None:
    answer = harness.client_request(method, path, body)
    assert failure_kind(answer) is None, (answer.status, answer.body)


def test_a_low_depth_pdu_does_not_bury_later_messages(harness: FuzzHarness) -> None:
    # Found by `python3 -m bench fuzz --examples 200 --seed 2` (the room check after the run failed).
    send = next(op for op in load_operations("ss") if op.path.endswith("/send/{txnId}"))
    pdu = PduSpec("m.room.message", None, {"msgtype": "m.text", "body": "depth 1"}, 1, "none")
    answer, _ = harness.send(FuzzRequest(send, send.path, (), b"{}", "application/json", "signed", (pdu,)))
    assert answer.status == 200
    assert harness.room_still_works()
