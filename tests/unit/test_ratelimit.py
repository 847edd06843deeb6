"""Token bucket pacing and the global slow-down on overload."""

from __future__ import annotations

import pytest

from kms_storage_migrator.migration.ratelimit import (
    MIN_QPS,
    RECOVERY_STREAK,
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


def test_overload_halves_the_rate_down_to_a_floor() -> None:
    limiter = AdaptiveRateLimiter(8, clock=FakeClock())
    limiter.overloaded()
    assert limiter.current_qps == 4
    for _ in range(10):
        limiter.overloaded()
    assert limiter.current_qps == MIN_QPS


def test_successes_win_the_rate_back_gradually_but_not_beyond_qps() -> None:
    limiter = AdaptiveRateLimiter(8, clock=FakeClock())
    limiter.overloaded()
    for _ in range(RECOVERY_STREAK - 1):
        limiter.succeeded()
    assert limiter.current_qps == 4
    limiter.succeeded()
    assert limiter.current_qps == 5
    for _ in range(RECOVERY_STREAK * 10):
        limiter.succeeded()
    assert limiter.current_qps == 8


def test_an_overload_resets_the_recovery_streak() -> None:
    limiter = AdaptiveRateLimiter(8, clock=FakeClock())
    limiter.overloaded()
    for _ in range(RECOVERY_STREAK - 1):
        limiter.succeeded()
    limiter.overloaded()
    limiter.succeeded()
    assert limiter.current_qps == 2
