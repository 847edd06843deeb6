"""Request pacing: a token bucket whose rate halves while the apiserver says it is overloaded.

The bucket is shared by every worker of a migration, so ``qps`` bounds the whole migration.
A 429 or 5xx answer slows everyone down (the apiserver is one shared resource), once per
SLOWDOWN_COOLDOWN however many workers saw it; each RECOVERY_INTERVAL with successes wins
back RECOVERY_FACTOR, up to the configured ``qps``. Recovery is paced by time, not by a count
of successes: counted at the floor rate, the climb back took 90-150 s after every outage.
An unreachable apiserver (connection refused) is not overload, and does not slow the rate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

MIN_QPS = 1.0
SLOWDOWN_FACTOR = 0.5
# Overload answers within this many seconds of a slow-down are the same signal, not another one.
SLOWDOWN_COOLDOWN = 1.0
# After a slow-down, each interval that saw successes and no overload multiplies the rate back up.
RECOVERY_INTERVAL = 1.0
RECOVERY_FACTOR = 1.5
RETRY_BACKOFF_MULTIPLIER = 0.5
RETRY_BACKOFF_MAX = 30.0


class TokenBucket:
    """Classic token bucket; pure arithmetic over an injected clock so it is testable."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def take(self) -> float:
        """Take one token; return how long the caller must wait before using it (0 if none)."""
        self._refill()
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def set_rate(self, rate: float) -> None:
        self._refill()
        self.rate = rate


class AdaptiveRateLimiter:
    """The migration's pacing: a token bucket plus the global slow-down on overload signals."""

    def __init__(
        self,
        qps: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.max_qps = qps
        # Burst of one second's worth keeps bursts short enough for a shared apiserver.
        self._bucket = TokenBucket(qps, max(1.0, qps), clock)
        self._clock = clock
        self._sleep = sleep
        self._slowed_at = float("-inf")  # the last slow-down
        self._changed_at = float("-inf")  # the last slow-down or step back up

    @property
    def current_qps(self) -> float:
        return self._bucket.rate

    async def acquire(self) -> None:
        delay = self._bucket.take()
        if delay > 0:
            await self._sleep(delay)

    def overloaded(self) -> None:
        """The apiserver answered 429 or 5xx: halve the rate for everyone, once per cooldown."""
        now = self._clock()
        if now - self._slowed_at < SLOWDOWN_COOLDOWN:
            return  # the workers in flight during the last slow-down report the same overload
        self._slowed_at = self._changed_at = now
        self._bucket.set_rate(max(MIN_QPS, self._bucket.rate * SLOWDOWN_FACTOR))

    def succeeded(self) -> None:
        if self._bucket.rate >= self.max_qps:
            return
        now = self._clock()
        if now - self._changed_at >= RECOVERY_INTERVAL:
            self._changed_at = now
            self._bucket.set_rate(min(self.max_qps, self._bucket.rate * RECOVERY_FACTOR))


class RetryableFailure(Exception):
    """A transient answer (429, 5xx, timeout, connection error): try again after a backoff."""

    def __init__(self, reason: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.retry_after = retry_after


def is_retryable_status(status: int) -> bool:
    # 401: KubeApi re-reads a rotated token file before the next attempt; 408: the apiserver timed out.
    return status in (401, 408, 429) or status >= 500


class _WaitHonouringRetryAfter:
    """Full-jitter exponential backoff, but never sooner than the server's Retry-After."""

    def __init__(self) -> None:
        self._backoff = wait_random_exponential(multiplier=RETRY_BACKOFF_MULTIPLIER, max=RETRY_BACKOFF_MAX)

    def __call__(self, state: RetryCallState) -> float:
        backoff = float(self._backoff(state))
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, RetryableFailure) and error.retry_after:
            return max(backoff, error.retry_after)
        return backoff


def transient_retrying(
    max_attempts: int, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
) -> AsyncRetrying:
    """The one retry policy: transient failures only, full-jitter backoff, Retry-After as a floor."""
    return AsyncRetrying(
        stop=stop_after_attempt(max_attempts),
        wait=_WaitHonouringRetryAfter(),
        retry=retry_if_exception_type(RetryableFailure),
        reraise=True,
        sleep=sleep,
    )
