"""How fast a migration goes and when it ends: objects/s over the last minute, and an ETA. Pure.

The rate is measured over a sliding window of (time, objects done) samples, taken whenever the
status is published, so a burst or a stall shows within a minute and old history does not mask
it. The ETA is rounded (5 s, then 10 s, then whole minutes) so that it does not change on
every publish for no visible reason.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

WINDOW_SECONDS = 60.0
# Under this much history the rate is noise (a page's burst): say "unknown" instead.
MIN_SPAN_SECONDS = 5.0


@dataclass
class RateWindow:
    """Objects done as sampled over time; the rate is the slope over the last minute."""

    window: float = WINDOW_SECONDS
    samples: deque[tuple[float, int]] = field(default_factory=deque)

    def record(self, now: float, done: int) -> None:
        if self.samples and done < self.samples[-1][1]:
            # Counts went back (a page rewound to its checkpoint): the old history no longer adds up.
            self.samples.clear()
        self.samples.append((now, done))
        # Keep one sample older than the window, so the slope spans the whole minute.
        while len(self.samples) > 2 and self.samples[1][0] <= now - self.window:
            self.samples.popleft()

    def rate(self, now: float) -> float | None:
        """Objects per second over the last minute, or None with too little history."""
        if len(self.samples) < 2:
            return None
        start_time, start_done = self.samples[0]
        end_time, end_done = self.samples[-1]
        span = max(end_time, now) - start_time
        if span < MIN_SPAN_SECONDS:
            return None
        return (end_done - start_done) / span


def eta_seconds(remaining: int, rate: float | None) -> float | None:
    """Seconds to do what remains at that rate; None when it cannot be told (no progress)."""
    if rate is None or rate <= 0 or remaining <= 0:
        return None
    return remaining / rate


def format_eta(seconds: float | None) -> str | None:
    """'45s', '3m10s', '2h05m'; None when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return None
    whole = math.ceil(seconds)
    if whole < 60:
        return f"{_round_up(max(whole, 1), 5)}s"
    if _round_up(whole, 10) < 3600:
        minutes, rest = divmod(_round_up(whole, 10), 60)
        return f"{minutes}m" if rest == 0 else f"{minutes}m{rest:02d}s"
    minutes = _round_up(whole, 60) // 60
    hours, rest = divmod(minutes, 60)
    return f"{hours}h{rest:02d}m"


def rounded_rate(rate: float | None) -> float | None:
    """One decimal under 100 objects/s, whole numbers above: precision a person reads."""
    if rate is None:
        return None
    return round(rate, 1) if rate < 100 else float(round(rate))


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step
