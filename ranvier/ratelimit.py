"""Token-bucket rate limiting, in memory and bounded: the client API limits logins, registrations and
sending per client or user; the federation API limits transactions per origin server.

A limited request is answered ``429 M_LIMIT_EXCEEDED`` with ``retry_after_ms`` (CS "Rate limiting").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class RateSpec:
    per_second: float
    burst: int


class RateLimiter:
    """Buckets of ``burst`` tokens refilled at ``per_second``, one per key (an IP, a user, a server).

    Memory is bounded: past ``max_keys`` buckets, the full ones (keys that have been quiet long enough to
    refill, which a fresh bucket would equal) are dropped first, then the oldest.
    """

    def __init__(
        self, spec: RateSpec, *, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if spec.per_second <= 0 or spec.burst < 1:
            raise ValueError("a rate limit needs per_second > 0 and burst >= 1")
        self.spec = spec
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def try_acquire(self, key: str, cost: float = 1.0) -> float | None:
        """Take ``cost`` tokens for ``key``: None if allowed, else the seconds until it would be."""
        now = self._clock()
        tokens, at = self._buckets.get(key, (float(self.spec.burst), now))
        tokens = min(float(self.spec.burst), tokens + (now - at) * self.spec.per_second)
        if tokens >= cost:
            self._buckets[key] = (tokens - cost, now)
            if len(self._buckets) > self._max_keys:
                self._prune(now)
            return None
        self._buckets[key] = (tokens, now)
        return (cost - tokens) / self.spec.per_second

    def _prune(self, now: float) -> None:
        burst, rate = float(self.spec.burst), self.spec.per_second
        full = [k for k, (t, at) in self._buckets.items() if t + (now - at) * rate >= burst]
        for key in full:
            del self._buckets[key]
        overflow = len(self._buckets) - self._max_keys
        if overflow > 0:
            for key in list(self._buckets)[:overflow]:  # dicts keep insertion order: the oldest first
                del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)


def limit_exceeded_body(retry_after: float) -> dict[str, object]:
    return {
        "errcode": "M_LIMIT_EXCEEDED",
        "error": "Too many requests",
        "retry_after_ms": max(1, int(retry_after * 1000)),
    }
