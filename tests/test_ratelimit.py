"""The token buckets themselves: refill, waits, and bounded memory."""

from __future__ import annotations

import pytest

from ranvier.ratelimit import RateLimiter, RateSpec


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refill_at_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(RateSpec(per_second=2, burst=3), clock=clock)
    assert [limiter.try_acquire("a") for _ in range(3)] == [None, None, None]
    wait = limiter.try_acquire("a")
    assert wait == pytest.approx(0.5)
    assert limiter.try_acquire("b") is None  # keys are independent
    clock.now += 0.5
    assert limiter.try_acquire("a") is None
    assert limiter.try_acquire("a") is not None


def test_memory_stays_bounded() -> None:
    clock = Clock()
    limiter = RateLimiter(RateSpec(per_second=1, burst=2), max_keys=100, clock=clock)
    for i in range(1000):
        limiter.try_acquire(f"k{i}")
    assert len(limiter) <= 101


def test_pruning_drops_refilled_buckets_before_throttled_ones() -> None:
    clock = Clock()
    limiter = RateLimiter(RateSpec(per_second=1, burst=2), max_keys=3, clock=clock)
    limiter.try_acquire("busy")  # the oldest key ...
    limiter.try_acquire("quiet")
    clock.now += 10  # ... but "quiet" refills completely: forgetting it loses nothing
    for _ in range(2):
        limiter.try_acquire("busy")
    limiter.try_acquire("x")
    limiter.try_acquire("y")  # a fourth key: pruning happens
    assert limiter.try_acquire("busy") is not None  # still throttled: its bucket was kept


def test_a_bad_spec_is_refused() -> None:
    with pytest.raises(ValueError):
        RateLimiter(RateSpec(per_second=0, burst=1))
