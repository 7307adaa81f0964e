"""memory_release.settle_after_start (called by run_homeserver once the server has started): start-up's
garbage is collected, not frozen, and what is left is frozen out of the collector's full collections."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from ranvier.memory_release import settle_after_start


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()  # the test process goes on collecting as before


def test_start_up_objects_are_frozen_and_its_garbage_collected(unfrozen: None) -> None:
    kept = [_Node() for _ in range(100)]
    garbage = _Node()
    dead = weakref.ref(garbage)
    del garbage
    before = gc.get_freeze_count()
    settle_after_start()
    assert dead() is None, "a cycle left by start-up was frozen instead of collected"
    assert gc.get_freeze_count() >= before + len(kept)
    # Frozen objects are no longer in the collector's generations.
    tracked = {id(o) for o in gc.get_objects()}
    assert not any(id(node) in tracked for node in kept)
