"""Token bucket pacing and the global slow-down on overload."""

from __future__ import annotations

import pytest

from kms_storage_migrator.migration.ratelimit import (
    MIN_QPS,
    RECOVERY_FACTOR,
    RECOVERY_INTERVAL,
    SLOWDOWN_COOLDOWN,
    AdaptiveRateLimiter,
    TokenBucket,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_burst_is_free_then_each_token_costs_one_over_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=2, clock=clock)
    assert bucket.take() == 0
    assert bucket.take() == 0
    assert bucket.take() == pytest.approx(0.1)
    assert bucket.take() == pytest.approx(0.2)


def test_tokens_refill_with_time_up_to_the_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=2, clock=clock)
    bucket.take()
    bucket.take()
    clock.now = 100.0
    assert bucket.take() == 0
    assert bucket.take() == 0
    assert bucket.take() > 0


def test_sustained_rate_matches_qps() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=50, burst=50, clock=clock)
    for _ in range(550):
        delay = bucket.take()
        clock.now += delay  # the caller sleeps exactly as told
    assert clock.now == pytest.approx(10.0, rel=0.01)  # 500 beyond the burst at 50/s


def test_invalid_rates_are_rejected() -> None:
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(rate=0, burst=1)


async def test_acquire_sleeps_only_when_the_bucket_is_empty() -> None:
    clock = FakeClock()
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)

    limiter = AdaptiveRateLimiter(2, clock=clock, sleep=sleep)
    for _ in range(4):
        await limiter.acquire()
    assert slept == [pytest.approx(0.5), pytest.approx(1.0)]


def test_overload_halves_the_rate_down_to_a_floor_once_per_cooldown() -> None:
    clock = FakeClock()
    limiter = AdaptiveRateLimiter(8, clock=clock)
    limiter.overloaded()
    assert limiter.current_qps == 4
    for _ in range(31):  # the other workers in flight answer 429 too: the same signal
        limiter.overloaded()
    assert limiter.current_qps == 4
    for _ in range(10):
        clock.now += SLOWDOWN_COOLDOWN
        limiter.overloaded()
    assert limiter.current_qps == MIN_QPS


def test_successes_win_the_rate_back_step_by_step_in_time_but_not_beyond_qps() -> None:
    clock = FakeClock()
    limiter = AdaptiveRateLimiter(8, clock=clock)
    limiter.overloaded()
    for _ in range(100):  # many successes at once are one interval's worth
        limiter.succeeded()
    assert limiter.current_qps == 4
    clock.now += RECOVERY_INTERVAL
    limiter.succeeded()
    assert limiter.current_qps == 4 * RECOVERY_FACTOR
    for _ in range(10):
        clock.now += RECOVERY_INTERVAL
        limiter.succeeded()
    assert limiter.current_qps == 8


def test_after_an_outage_at_the_floor_the_rate_is_back_within_seconds() -> None:
    # Measured before: recovery counted 20 successes per step, so from the floor at 1 qps the
    # climb back to 60 qps took 90-150 s after every apiserver restart or etcd outage.
    clock = FakeClock()
    limiter = AdaptiveRateLimiter(60, clock=clock)
    for _ in range(60):  # a minute of 503s
        clock.now += 1.0
        limiter.overloaded()
    assert limiter.current_qps == MIN_QPS
    back = clock.now
    while limiter.current_qps < 60:
        clock.now += 1.0 / limiter.current_qps  # one success per token
        limiter.succeeded()
    assert clock.now - back < 15


def test_an_overload_after_a_step_up_slows_down_at_once() -> None:
    clock = FakeClock()
    limiter = AdaptiveRateLimiter(8, clock=clock)
    limiter.overloaded()
    clock.now += RECOVERY_INTERVAL
    limiter.succeeded()
    assert limiter.current_qps == 6
    clock.now += SLOWDOWN_COOLDOWN / 2  # soon after the step up, but past the last slow-down's cooldown
    limiter.overloaded()
    assert limiter.current_qps == 3
