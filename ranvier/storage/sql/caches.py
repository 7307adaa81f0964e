"""In-memory caches of the room storage.

They are safe because one process owns the database and every write goes through this package, which
updates or invalidates the caches after its transaction commits (never before: a rolled-back write must not
leave traces). Running two Ranvier processes against one database is not supported.

A reader that fills a cache from what it read races with a writer that commits meanwhile; so readers note
``generation`` before reading and fill with ``put_if_unchanged``, and writers change entries with
``invalidate``/``replace``, which move the generation on.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LruCache(Generic[K, V]):
    """Least-recently-used eviction bounded by a total weight (entries of state maps, or item count)."""

    def __init__(self, max_weight: int, weigh: Callable[[V], int] = lambda _v: 1) -> None:
        self.generation = 0
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._weight = 0
        self._max = max_weight
        self._weigh = weigh

    def get(self, key: K) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def __contains__(self, key: K) -> bool:
        return key in self._items

    def put(self, key: K, value: V) -> None:
        self.pop(key)
        weight = self._weigh(value)
        if weight > self._max:
            return
        self._items[key] = (value, weight)
        self._weight += weight
        while self._weight > self._max:
            _, (_, w) = self._items.popitem(last=False)
            self._weight -= w

    def put_if_unchanged(self, key: K, value: V, generation: int) -> None:
        """Fill from a read that started at ``generation``, unless a writer changed something since."""
        if generation == self.generation:
            self.put(key, value)

    def invalidate(self, key: K) -> None:
        self.generation += 1
        self.pop(key)

    def replace(self, key: K, value: V) -> None:
        self.generation += 1
        self.put(key, value)

    def pop(self, key: K) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self._weight -= item[1]

    def clear(self) -> None:
        self._items.clear()
        self._weight = 0
