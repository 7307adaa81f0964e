"""StateService keeps an AuthChainIndex for the most recently resolved rooms only (it used to keep one per
room ever resolved, each holding the auth chains its resolutions touched)."""

from __future__ import annotations

from ranvier.rooms.state import StateService


def test_room_indexes_are_bounded_least_recently_used_first() -> None:
    service = StateService(storage=None, max_room_indexes=2)
    a = service._index_for("!a:x")
    b = service._index_for("!b:x")
    assert service._index_for("!a:x") is a  # the same index and lock while kept; a is now the newest
    service._index_for("!c:x")  # evicts b, the least recently used
    assert service._index_for("!a:x") is a
    assert service._index_for("!b:x") is not b  # a fresh pair
    assert len(service._indexes) == 2
