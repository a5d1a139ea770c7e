"""Metric timing: windows of whole grains that start after a change, and data only once complete."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from switchyard.core.timing import MetricTiming

AZURE = MetricTiming.for_grain(60)
FAST = MetricTiming.for_grain(1)


def at(seconds: float) -> datetime:
    return datetime(2026, 12, 1, 10, 0, tzinfo=UTC) + timedelta(seconds=seconds)


def test_a_window_starts_at_the_first_grain_after_the_change_so_no_grain_mixes_traffic_from_before() -> None:
    # The split was in place at 10:00:20: the grain 10:00-10:01 holds 20 s of the old split.
    assert AZURE.window_after(at(20), 90) == (at(60), at(60 + 120))
    # A change on a boundary starts the window there.
    assert AZURE.window_after(at(60), 60) == (at(60), at(120))
    assert FAST.window_after(at(20.3), 4) == (at(21), at(25))


def test_data_counts_only_once_its_grain_is_complete() -> None:
    """On Azure a minute's datapoint arrives a minute or two after the minute: with two grains of
    delay, at 10:03:30 the data up to 10:01 is complete; the fast profile's seconds are at once."""
    assert AZURE.delay_s == 120 and FAST.delay_s == 0
    assert AZURE.complete_until(at(210)) == at(60)
    assert FAST.complete_until(at(12.7)) == at(12)


def test_minute_grains_are_azures_timing() -> None:
    assert AZURE.in_minutes and not FAST.in_minutes
    assert AZURE.whole_grains(61) == 120 and AZURE.whole_grains(60) == 60 and FAST.whole_grains(0.5) == 1
