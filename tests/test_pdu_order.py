"""rooms.pdu_checks orders: parents first, else by depth then arrival; long chains; cycles cut."""

from types import SimpleNamespace
from typing import Any

from ranvier.rooms.pdu_checks import auth_order, dag_order


def ev(event_id: str, depth: int, prevs: list[str] = [], auths: list[str] = []) -> Any:  # noqa: B006
    return SimpleNamespace(event_id=event_id, depth=depth, prev_event_ids=prevs, auth_event_ids=auths)


def ids(pdus: list[Any]) -> list[str]:
    return [p.event_id for p in pdus]


def test_parents_first_then_depth_then_arrival() -> None:
    a, b, c = ev("$a", 1), ev("$b", 2, ["$a"]), ev("$c", 2, ["$a"])
    d = ev("$d", 1, ["$c", "$b"])  # a wrong depth: its prev events still come first, in the order named
    assert ids(dag_order([d, c, b, a])) == ["$a", "$c", "$b", "$d"]
    assert ids(dag_order([c, b, a])) == ["$a", "$c", "$b"]


def test_a_chain_longer_than_the_recursion_limit() -> None:
    chain = [ev("$0", 0)] + [ev(f"${i}", i, auths=[f"${i - 1}"]) for i in range(1, 5000)]
    assert ids(auth_order(reversed(chain))) == ids(chain)


def test_a_cycle_is_cut() -> None:
    a, b = ev("$a", 1, ["$b"]), ev("$b", 1, ["$a"])
    assert sorted(ids(dag_order([a, b]))) == ["$a", "$b"]
