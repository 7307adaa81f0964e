"""The chaos harness's invariant checks on hand-made timelines (the CI run relies on them failing when they
should)."""

from __future__ import annotations

import itertools
import random

from bench.chaos.check import Row, duplicates, missing, missing_by_server, order_inversions


def row(event_id: str, depth: int, position: int, *, live: bool = True, txn: str | None = None) -> Row:
    return Row(event_id, "m.room.message", depth, (position, 0), live, txn)


def brute_inversions(acked: list[str], ref: dict[str, Row], other: dict[str, Row]) -> int:
    common = [e for e in acked if e in ref and e in other and ref[e].live and other[e].live]
    count = 0
    for a, b in itertools.combinations(common, 2):
        if ref[a].depth == ref[b].depth:
            continue
        if (ref[a].position < ref[b].position) != (other[a].position < other[b].position):
            count += 1
    return count


def test_missing_counts_absent_and_non_timeline_events() -> None:
    full = {e: row(e, i, i) for i, e in enumerate("abc")}
    holed = {"a": full["a"], "b": row("b", 1, 1, live=False)}  # b an outlier, c absent
    assert missing(["a", "b", "c"], [full, holed]) == 2
    assert missing_by_server(["a", "b", "c"], [full, holed]) == {1: 2}
    assert missing(["a", "b", "c"], [full, full]) == 0


def test_duplicates_count_extra_events_per_txn() -> None:
    one = {"a": row("a", 1, 1, txn="t1"), "b": row("b", 2, 2, txn="t2")}
    two = {**one, "c": row("c", 3, 3, txn="t1"), "d": row("d", 4, 4, txn="t1")}
    assert duplicates([one, one]) == (0, [])
    assert duplicates([one, two]) == (2, ["t1"])


def test_order_inversions_ignore_equal_depths() -> None:
    ref = {"a": row("a", 1, 1), "b": row("b", 2, 2), "c": row("c", 2, 3), "d": row("d", 3, 4)}
    # b and c (same depth) swapped: allowed. d placed first: inverted against a, b and c.
    other = {"a": row("a", 1, 2), "b": row("b", 2, 4), "c": row("c", 2, 3), "d": row("d", 3, 1)}
    assert order_inversions(list(ref), [ref, ref]) == {}
    assert order_inversions(list(ref), [ref, other]) == {1: 3}


def test_order_inversions_match_brute_force() -> None:
    rng = random.Random(7)
    for _ in range(50):
        n = rng.randrange(2, 40)
        ids = [f"e{i}" for i in range(n)]
        depths = {e: rng.randrange(1, 8) for e in ids}
        ref = {e: row(e, depths[e], p) for p, e in enumerate(rng.sample(ids, n))}
        other = {e: row(e, depths[e], p, live=rng.random() > 0.1) for p, e in enumerate(rng.sample(ids, n))}
        expected = brute_inversions(ids, ref, other)
        assert order_inversions(ids, [ref, other]).get(1, 0) == expected
