"""Rate over the last minute and the ETA string (pure)."""

from __future__ import annotations

import pytest

from kms_storage_migrator.migration.rate import RateWindow, eta_seconds, format_eta, rounded_rate


def test_the_rate_is_the_slope_over_the_last_minute_not_the_whole_run() -> None:
    window = RateWindow()
    window.record(0.0, 0)
    window.record(100.0, 10_000)  # a fast start, long ago
    for second in range(103, 200, 3):
        window.record(float(second), 10_000 + (second - 100) * 2)  # now 2 objects/s
    rate = window.rate(199.0)
    assert rate == pytest.approx(2.0, rel=0.06)


def test_too_little_history_is_unknown() -> None:
    window = RateWindow()
    assert window.rate(0.0) is None
    window.record(0.0, 0)
    window.record(1.0, 50)
    assert window.rate(1.0) is None


def test_a_stall_brings_the_rate_down_to_zero_within_the_window() -> None:
    window = RateWindow()
    window.record(0.0, 0)
    window.record(30.0, 300)
    for second in range(33, 130, 3):
        window.record(float(second), 300)
    assert window.rate(130.0) == 0.0


def test_counts_that_go_back_restart_the_history() -> None:
    window = RateWindow()
    window.record(0.0, 100)
    window.record(10.0, 200)
    window.record(11.0, 150)  # a page rewound to its checkpoint
    assert window.rate(11.0) is None


@pytest.mark.parametrize(
    ("remaining", "rate", "expected"),
    [(100, 10.0, 10.0), (0, 10.0, None), (100, 0.0, None), (100, None, None)],
)
def test_eta_seconds(remaining: int, rate: float | None, expected: float | None) -> None:
    assert eta_seconds(remaining, rate) == expected


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, None),
        (0.2, "5s"),
        (41.0, "45s"),
        (60.0, "1m"),
        (190.0, "3m10s"),
        (191.0, "3m20s"),
        (3599.0, "1h00m"),
        (3600.0, "1h00m"),
        (7530.0, "2h06m"),
        (float("inf"), None),
    ],
)
def test_eta_is_rounded_so_it_changes_only_visibly(seconds: float | None, text: str | None) -> None:
    assert format_eta(seconds) == text


def test_rate_precision() -> None:
    assert rounded_rate(None) is None
    assert rounded_rate(48.66) == 48.7
    assert rounded_rate(194.4) == 194.0
